"""Writing files that users can act on: a probe for an output folder, and errors that say what went wrong.

A full disk surfaces from ``torch.save`` as ``RuntimeError: [enforce fail at inline_container.cc:672] .
unexpected pos ...``, with the real cause, ``OSError: [Errno 28] No space left on device``, only in the chained
traceback. :func:`write_error` finds that cause and turns it into one ``OSError`` that names the file, the
space the write needed and the space that is free.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

__all__ = ["DISK_FULL", "NOT_WRITABLE", "root_cause", "write_error", "reason", "check_writable_dir", "tensor_bytes",
           "created_dirs", "remove_created"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def root_cause(err: BaseException) -> OSError | None:
    """The first ``OSError`` with an errno along ``err``'s chain (``__cause__``, ``__context__``), or None."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors in a nested dict/list/tuple: roughly what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def write_error(err: BaseException, path: Path, needed_bytes: int | None = None) -> OSError | None:
    """An ``OSError`` explaining a failed write of ``path`` when the cause is a full disk or a permission
    problem (same errno as the cause, so callers can still test it); None for any other failure."""
    cause = root_cause(err)
    if cause is None:
        return None
    folder = Path(path).parent
    if cause.errno in DISK_FULL:
        try:
            free = _mb(shutil.disk_usage(folder).free)
        except OSError:
            free = "unknown"
        need = f"about {_mb(needed_bytes)}" if needed_bytes else "more than is free"
        return OSError(cause.errno, f"no space left on the device while writing {path}: it needs {need}, "
                                    f"{free} free in {folder}. Free some space or choose another output folder "
                                    f"(the previous complete file, if any, is unchanged)")
    if cause.errno in NOT_WRITABLE:
        return OSError(cause.errno, f"cannot write {path}: {reason(cause)}. Choose a writable output folder")
    return None


def reason(err: OSError) -> str:
    """A short cause in words: 'permission denied', 'read-only file system', 'no space left', or strerror."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({err.strerror})"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno in DISK_FULL:
        return "no space left on the device"
    return str(err.strerror or err)


def created_dirs(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would create, deepest first."""
    missing, p = [], Path(folder).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing


def remove_created(dirs: list[Path]) -> None:
    """Undo ``mkdir(parents=True)`` for folders that are still empty (deepest first)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def check_writable_dir(folder: str | os.PathLike[str], what: str = "output folder") -> list[Path]:
    """Create ``folder`` if needed and prove it writable by writing and removing a probe file.

    Returns the folders that were created (so a refused run can remove them again). Raises ``NotADirectoryError``
    when ``folder`` (or a parent) is a file, and ``PermissionError``/``OSError`` naming the folder when it cannot
    be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} {folder} is an existing file, not a folder")
    created = created_dirs(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_created(created)
        if e.errno == errno.ENOTDIR or isinstance(e, FileExistsError):
            raise NotADirectoryError(errno.ENOTDIR, f"{what} {folder} cannot be created: a part of that path "
                                                    f"is a file, not a folder") from e
        raise type(e)(e.errno, f"{what} {folder} cannot be created: {reason(e)}") from e
    probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        remove_created(created)
        raise type(e)(e.errno, f"{what} {folder} is not writable: {reason(e)}") from e
    probe.unlink()
    return created

