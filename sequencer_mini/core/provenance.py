"""Where a result came from: command, commit, device, versions and date.

Every results file under ``book/results/`` is written with :func:`write_results`, which adds a
``provenance`` entry, so a page can say exactly which run produced the numbers it shows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from sequencer_mini.core.budget import budget, dry_run
from sequencer_mini.core.fsutil import fault_point, write_error
from sequencer_mini.core.paths import REPO_ROOT, install_source

__all__ = ["DryRunResultsError", "device_name", "git_commit", "is_dry_run", "provenance", "read_results",
           "write_results", "read_json_object", "nonfinite_numbers"]

def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """Return the current git commit hash, or ``"unknown"`` outside a git checkout.

    A copy of the tree without ``.git`` (a GPU machine, say) can pass the hash in ``$SEQUENCER_GIT_COMMIT``.
    When the library was installed (not editable) from a local clone, as the Colab setup cell does, the
    clone's commit is used.
    """
    if os.environ.get("SEQUENCER_GIT_COMMIT"):
        return os.environ["SEQUENCER_GIT_COMMIT"]
    if cwd is None:
        sha = _rev_parse(REPO_ROOT)
        source = install_source() if sha == "unknown" else None
        return _rev_parse(source) if source is not None and source.is_dir() else sha
    return _rev_parse(cwd)


def _rev_parse(where: str | os.PathLike[str]) -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=str(where), capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha or "unknown"


#: Folders of *outputs*: a run that rewrites a committed results file there has not changed the code.
RESULT_DIRS = ("book/results", "bench/results")


def _git_dirty(cwd: str | os.PathLike[str] | None = None) -> bool | None:
    """Uncommitted changes to tracked files, results folders (:data:`RESULT_DIRS`) excepted; None without git."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
             *(f":(top,exclude){d}" for d in RESULT_DIRS)], cwd=str(cwd or REPO_ROOT),
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.strip())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name() -> str:
    """Return the CUDA device name, or the CPU model and core count (e.g. ``"Intel Xeon (2 cores)"``)."""
    try:

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:  # pragma: no cover
        pass
    return f"{_cpu_model()} ({os.cpu_count() or '?'} cores)"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Describe the current run.

    Returns:
        A JSON-serialisable dict with keys ``command`` (the command line), ``git_commit``
        (hash or ``"unknown"``), ``git_dirty`` (uncommitted changes to tracked files, or
        ``None``), ``device``, ``python``, ``torch``, ``torchvision``, ``timm``,
        ``sequencer_mini`` (versions, ``None`` if not installed), ``budget`` and ``date``
        (ISO 8601, UTC); in a dry run (``SEQUENCER_DRY_RUN``) also ``dry_run: True``, which makes
        :func:`read_results` refuse the file.
    """
    try:
        current_budget: str | None = budget()
    except ValueError:
        current_budget = None
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if sys.argv else "",
        "git_commit": git_commit(),
        "git_dirty": _git_dirty(),
        "device": device_name(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "sequencer_mini": _version("sequencer_mini"),
        "budget": current_budget,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **({"dry_run": True} if dry_run() else {}),
    }


def write_results(
    path: str | os.PathLike[str], payload: dict[str, Any], overrides: dict[str, Any] | None = None
) -> Path:
    """Write ``payload`` plus a ``provenance`` entry as JSON, atomically.

    The file is written to a temporary file in the same directory and moved into place with
    ``os.replace``, so a reader never sees a half-written file.

    Args:
        path: destination ``.json`` file (parent directories are created).
        payload: JSON-serialisable dict; must not already hold a ``provenance`` key.
        overrides: provenance entries the caller knows better, e.g. the CLI command and budget of a
            run started in-process from a notebook (``sys.argv`` is then the kernel's).

    Returns:
        The destination path.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    if "provenance" in payload:
        raise ValueError("payload already has a 'provenance' key; write_results adds it")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = {**payload, "provenance": {**provenance(), **(overrides or {})}}
    bad = nonfinite_numbers(data)
    if bad:  # JSON has no NaN or infinity: json.dumps would write a bare NaN that strict readers refuse
        raise ValueError(f"results for {dest} hold non-finite numbers at {', '.join(bad[:5])}: JSON has no NaN or "
                         f"infinity, so the file is not written (a diverged run is an error, not a result)")
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a results file is as readable as any other
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"before replace {dest.name}")
        os.replace(tmp, dest)
        fault_point(f"after replace {dest.name}")
    except BaseException as err:
        if tmp is not None:
            # gone already, or a read-only mount: report the write, not the cleanup
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        explained = write_error(err, dest, len(text.encode())) if isinstance(err, Exception) else None
        if explained is not None:
            raise explained from err
        raise
    return dest


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class DryRunResultsError(ValueError):
    """A results file written by a dry run (``SEQUENCER_DRY_RUN``) was about to be read as a real result."""


def is_dry_run(results: dict[str, Any]) -> bool:
    """True if ``results`` (a payload read from a results file) was written by a dry run."""
    return bool((results.get("provenance") or {}).get("dry_run"))


def read_results(path: str | os.PathLike[str], command: str | None = None, *,
                 allow_dry_run: bool | None = None) -> dict[str, Any]:
    """Read a results file written by :func:`write_results`.

    Args:
        path: the ``.json`` file.
        command: the command that regenerates the file, named in the error if the file is
            missing (e.g. ``"python bench/findings.py"``).
        allow_dry_run: accept a file written by a dry run. Default: only during a dry run itself,
            which reads back what it just wrote; a real run never takes a dry run's numbers.

    Raises:
        FileNotFoundError: if the file does not exist; the message names the command to run.
        DryRunResultsError: if the file comes from a dry run and ``allow_dry_run`` is false.
        ValueError: naming the file if it is not valid JSON (truncated, empty, a bare NaN) or not an object.
    """
    src = Path(path)
    hint = command or "the script that writes it (see the chapter's 'Reproduce' note)"
    if not src.is_file():
        raise FileNotFoundError(
            f"results file {str(src)!r} is missing; regenerate it with: {hint}"
        )
    data = read_json_object(src, "results file", f"regenerate it with: {hint}")
    if allow_dry_run is None:
        allow_dry_run = dry_run()
    if not allow_dry_run and is_dry_run(data):
        hint = command or "the command in its provenance, without SEQUENCER_DRY_RUN"
        raise DryRunResultsError(
            f"results file {str(src)!r} was written by a dry run (provenance.dry_run is true): its numbers "
            f"are not results; delete it and regenerate it with: {hint}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"a bare {name}, which is not JSON")


def read_json_object(path: str | os.PathLike[str], what: str = "results file", fix: str = "regenerate it"
                     ) -> dict[str, Any]:
    """A JSON object read strictly from ``path`` (no bare NaN/Infinity); any problem is a ``ValueError`` naming
    ``what``, the file, what is wrong and ``fix`` (missing file: ``FileNotFoundError``)."""
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(src)!r} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {str(src)!r} cannot be read as text ({e}); {fix}") from e
    if not text.strip():
        raise ValueError(f"{what} {str(src)!r} is empty (0 bytes of JSON: a write that never finished); {fix}")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(src)!r} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}: "
                         f"truncated or damaged); {fix}") from e
    except ValueError as e:
        raise ValueError(f"{what} {str(src)!r} is not valid JSON: it holds {e}; {fix}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(src)!r} holds a JSON {type(data).__name__}, expected an object "
                         f"({{...}}); {fix}")
    return data


def nonfinite_numbers(value: Any, where: str = "") -> list[str]:
    """The places (``history.train_loss[3]``) of NaN or infinite floats in a JSON-like value."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where or 'value'} ({value})"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_numbers(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nonfinite_numbers(v, f"{where}[{i}]")]
    return []
