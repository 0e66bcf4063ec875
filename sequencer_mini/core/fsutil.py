"""Writing files that users can act on: a probe for an output folder, errors that say what went wrong, the lock of
a run folder, the check that weights read are finite, and the test-only fault points of every atomic write.

A full disk surfaces from ``torch.save`` as ``RuntimeError: [enforce fail at inline_container.cc:672] .
unexpected pos ...``, with the real cause, ``OSError: [Errno 28] No space left on device``, only in the chained
traceback. :func:`write_error` finds that cause and turns it into one ``OSError`` that names the file, the
space the write needed and the space that is free.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from sequencer_mini.core.env import test_fault

__all__ = ["live_owner", "DISK_FULL", "NOT_WRITABLE", "root_cause", "write_error", "reason", "check_writable_dir",
           "tensor_bytes",
           "created_dirs", "remove_created", "fault_point", "fault_points", "LOCK_NAME", "RunLock", "RunLockedError",
           "nonfinite_tensors", "check_finite_weights", "HEARTBEAT_S", "STALE_AFTER_S", "atomic_copy"]

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



def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` is always either its old complete self or the whole new copy: the
    bytes go to ``dst.tmp`` beside it first (same file system), then one ``os.replace``. Metadata (mtime) comes
    along (``shutil.copy2``), so a caller can compare the two files' ages afterwards. A failed copy leaves no
    ``.tmp`` behind and raises the ``OSError`` of :func:`write_error` when the disk is full or not writable."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        shutil.copy2(src, tmp)
        fault_point(f"before replace {dst.name}")
        os.replace(tmp, dst)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        explained = write_error(e, dst, src.stat().st_size if src.is_file() else None)
        if explained is not None:
            raise explained from e
        raise
    fault_point(f"after replace {dst.name}")


# ----------------------------------------------------------------------------- test-only fault points

_points: list[str] = []  # every write point this process passed, in order (read by the tests)


def fault_point(label: str) -> None:
    """A place where a write can be interrupted: each atomic write calls it just before and just after its
    ``os.replace``. With ``SEQUENCER_TEST_FAULT=kill@K`` the process kills itself (SIGKILL, as ``kill -9``) at
    the K-th point; with ``pause@K`` it prints ``SEQUENCER_TEST_FAULT: paused at write point K (<label>)`` to
    stderr and waits for a signal. A test-only switch: it makes crash and interruption tests deterministic
    instead of racing the clock. Unset (always, outside the tests): nothing happens."""
    _points.append(label)
    fault = test_fault()
    if fault is None or fault[1] != len(_points):
        return
    mode, k = fault
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stderr.write(f"SEQUENCER_TEST_FAULT: paused at write point {k} ({label})\n")
    sys.stderr.flush()
    while True:  # until a signal ends the process or raises (SIGINT: KeyboardInterrupt)
        time.sleep(0.05)


def fault_points() -> list[str]:
    """The labels of the write points this process has passed (see :func:`fault_point`)."""
    return list(_points)


# ----------------------------------------------------------------------------- who owns a run folder

LOCK_NAME = ".run.lock"  #: in a run folder while a run writes it: {"pid", "host", "started", "start_ticks"}


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks


class RunLockedError(RuntimeError):
    """Another live run writes into the same folder."""


HEARTBEAT_S = 30.0  #: how often a live run touches its lock file
STALE_AFTER_S = 300.0  #: a lock from another host untouched this long is stale (its run is gone)


class RunLock:
    """``folder/.run.lock`` for as long as a run writes ``folder``: a second run into the same folder is refused
    while the owner lives. A lock whose owner is gone is removed with a message: on this host, when that pid no
    longer runs (or is another process now); from another host (a Colab VM after a disconnect, a new container),
    when its heartbeat (the owner touches the file every :data:`HEARTBEAT_S` s) is older than
    :data:`STALE_AFTER_S` s. A fresh lock from another host is refused with what to do."""

    def __init__(self, folder: str | os.PathLike[str], log: Any = None):
        self.path = Path(folder) / LOCK_NAME
        self.log = log if log is not None else (lambda line: print(line, file=sys.stderr))
        self.held = False
        self._stop = threading.Event()

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _start_ticks(os.getpid()),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._stale_or_refuse()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            self._stop.clear()
            threading.Thread(target=self._heartbeat, name="sequencer_mini-lock", daemon=True).start()
            return self
        raise RunLockedError(f"could not take the lock {self.path}: another run keeps taking it")

    def _stale_or_refuse(self) -> None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            self.log(f"removed the unreadable lock file {self.path} (no run can be identified as its owner)")
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        since = owner.get("started", "an unknown time")
        if host != socket.gethostname():
            try:
                quiet_s = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if quiet_s <= STALE_AFTER_S:
                raise RunLockedError(f"{self.path.parent} is being written by process {pid} on host {host!r} (since "
                                     f"{since}; its lock was touched {quiet_s:.0f} s ago), per {self.path}. Two runs "
                                     f"into one folder would overwrite each other's files. If that run is no longer "
                                     f"running, wait {STALE_AFTER_S:.0f} s after its last touch, or delete "
                                     f"{self.path}, and try again")
            self.log(f"removed a stale lock: {self.path} named process {pid} on host {host!r} (started {since}), "
                     f"untouched for {quiet_s:.0f} s, so that run is gone (a disconnected or killed session)")
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        if _alive(pid, owner.get("start_ticks")):
            raise RunLockedError(f"{self.path.parent} is being written by another run (process {pid} on this "
                                 f"machine, since {since}): two runs into one folder would overwrite each other's "
                                 f"files. Wait for it to finish, stop it, or choose another --out")
        self.log(f"removed a stale lock: {self.path} named process {pid} (started {since}), which is no longer "
                 f"running (a killed or crashed run)")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self.held:
            self.held = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def live_owner(folder: str | os.PathLike[str]) -> dict | None:
    """The owner recorded in ``folder/.run.lock`` (``{"pid", "host", "started", ...}``) while that run still
    writes the folder: a live process on this host, or a lock from another host touched within
    :data:`STALE_AFTER_S` s. None when there is no lock, or its run is gone (the next :class:`RunLock` removes it).
    A scheduler restarted while its runs train uses it to leave them alone."""
    path = Path(folder) / LOCK_NAME
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
        quiet_s = time.time() - path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return owner if quiet_s <= STALE_AFTER_S else None
    return owner if _alive(pid, owner.get("start_ticks")) else None


# ----------------------------------------------------------------------------- what was read

def nonfinite_tensors(state: Any, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors in a nested dict/list holding NaN or infinity."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() or state.is_complex()
        return [prefix or "tensor"] if bad and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, dict):
        return [n for k, v in state.items() for n in nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(state, (list, tuple)):
        return [n for i, v in enumerate(state) for n in nonfinite_tensors(v, f"{prefix}[{i}]")]
    return []


def check_finite_weights(state: Any, path: str | os.PathLike[str]) -> None:
    """``ValueError`` naming ``path`` and the tensors when ``state`` holds NaN or infinite weights (a run that
    diverged): such weights are never loaded."""
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{path} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), e.g. "
                         f"{', '.join(bad[:3])}: it comes from a run that diverged; it is not loaded. Retrain "
                         f"(with a lower learning rate) or restore a good copy")
