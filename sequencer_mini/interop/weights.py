"""Chapter 5: loading weights from timm and from the official Sequencer release.

* timm's ``sequencer2d_{s,m,l}`` state dicts already use our names: load them with ``strict=True``.
* The official release (``github.com/okojoalg/sequencer/releases``) names blocks ``blocks.{stage}.{block}``,
  keeps each stage's downsampling as the extra last entry ``blocks.{stage}.{layers[stage]}.down``, and calls
  the classifier ``head``. :func:`convert_official_state_dict` renames them as timm's ``checkpoint_filter_fn``
  does.
* :func:`pretrained` fetches the official ImageNet-1k weights through timm (Hugging Face Hub, ``timm/…in1k``),
  which needs internet, and otherwise fails with a message saying what it tried. It keeps one overall deadline
  across its sources (``timeout``, default ``$SEQUENCER_DOWNLOAD_TIMEOUT`` or 300 s): a connection that opens
  and then never answers (a stalled proxy or TLS handshake) costs that long at most, not the Hub's retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sequencer_mini.core.env import NUMBERS, TIMEOUT_ENV, download_allowed, number
from sequencer_mini.core.fsutil import check_finite_weights
from sequencer_mini.models.sequencer2d import MODELS, Sequencer2D

__all__ = ["convert_official_state_dict", "load_weights", "pretrained", "OFFICIAL_URLS", "download_verified",
           "WEIGHT_FILES"]

#: The official release checkpoints (ImageNet-1k, 224×224), as listed in the official README.
OFFICIAL_URLS = {
    name: f"https://github.com/okojoalg/sequencer/releases/download/weights/{name}.pth"
    for name in ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l")
}

_DOWN = re.compile(r"^blocks\.(\d+)\.(\d+)\.down\.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict", "model_ema"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            return state_dict[key]
    return state_dict


def convert_official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """Rename official-release keys to ours/timm's; a state dict already in that form passes through.

    ``blocks.i.j.down.*`` → ``stages.{i+1}.downsample.down.*``; ``blocks.i.j.*`` → ``stages.i.blocks.j.*``;
    ``head.*`` → ``head.fc.*``. A ``'model'`` or ``'state_dict'`` wrapper is removed.
    """
    state_dict = _unwrap(state_dict)
    if "stem.proj.weight" in state_dict and any(k.startswith("stages.") for k in state_dict):
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = _DOWN.sub(lambda m: f"stages.{int(m.group(1)) + 1}.downsample.down.", key)
        key = _BLOCK.sub(r"stages.\1.blocks.\2.", key)
        if key.startswith("head."):
            key = "head.fc." + key[len("head.") :]
        out[key] = value
    return out


def load_weights(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Load a timm or official state dict strictly; mismatches raise a RuntimeError that lists them.

    Missing keys, unexpected keys and shape mismatches are all reported at once with the model's and the
    checkpoint's shapes, so that a wrong preset (S vs M) or a wrong ``num_classes`` is obvious.
    """
    sd = convert_official_state_dict(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [
        f"{k}: model {tuple(own[k].shape)} vs checkpoint {tuple(sd[k].shape)}"
        for k in own
        if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[:3]}")
        raise RuntimeError(
            f"state dict does not fit {type(model).__name__} ({len(own)} tensors expected, {len(sd)} given): "
            + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=True)
    return model


DEFAULT_TIMEOUT = 300.0  #: seconds, when neither ``timeout`` nor ``$SEQUENCER_DOWNLOAD_TIMEOUT`` is given
MAX_TIMEOUT = NUMBERS[TIMEOUT_ENV][2]


def _deadline_seconds(timeout: float | None) -> float:
    """The overall deadline in seconds: ``timeout``, else ``$SEQUENCER_DOWNLOAD_TIMEOUT`` (checked by
    :func:`sequencer_mini.core.env.number`), else 300; refused before any connection is opened."""
    if timeout is None:
        return number(TIMEOUT_ENV)
    ok = isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isfinite(timeout)
    if not (ok and 0 < timeout <= MAX_TIMEOUT):
        raise ValueError(f"timeout must be a number of seconds > 0 and <= {MAX_TIMEOUT:g}, got {timeout!r}")
    return float(timeout)


#: What each known weights file must be: ``file name: (size in bytes, SHA-256)``. None where not recorded yet:
#: the machine that wrote this could not reach the release, so no size or checksum was knowable offline (timm's
#: pretrained configs record none either). For such a file the first download that loads as this model's weights
#: has its SHA-256 written beside it (``<file>.sha256``, with a message) and every later use is checked against
#: it; put the printed values here to check every machine's copy.
WEIGHT_FILES: dict[str, tuple[int | None, str | None]] = {
    f"{name}.pth": (None, None) for name in ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l")
}


def _read_checkpoint(path: Path) -> Mapping[str, Any]:
    """A local weights file as a dict of tensors; anything else -> RuntimeError naming the file."""
    if not path.is_file():
        raise RuntimeError(f"checkpoint file {str(path)!r} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        unsafe = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", str(err), re.IGNORECASE)
        detail = (f"it holds the Python object {unsafe.group(1)}, which weights-only loading refuses (a pickle "
                  f"that could run code)" if unsafe else _short(err))
        raise RuntimeError(f"checkpoint file {str(path)!r} is not a PyTorch weights file (expected a state dict "
                           f"saved with torch.save, official or timm format): {detail}") from err
    if not isinstance(sd, Mapping):
        raise RuntimeError(f"checkpoint file {str(path)!r} holds a {type(sd).__name__}, expected a state dict "
                           f"(a dict of tensors)")
    try:
        check_finite_weights(_unwrap(sd), repr(str(path)))
    except ValueError as e:
        raise RuntimeError(f"checkpoint file {e}") from None
    return sd


def pretrained(name: str = "sequencer2d_s", checkpoint: str | Path | None = None, timeout: float | None = None,
               **kwargs: Any) -> Sequencer2D:
    """The official ImageNet-1k Sequencer2D weights in our model.

    Tries, in order: a local ``checkpoint`` file if given (official or timm format); timm's
    ``create_model(name, pretrained=True)`` (downloads ``timm/{name}.in1k`` from the Hugging Face Hub, or
    ``$HF_ENDPOINT``); the official GitHub release file. Needs internet unless ``checkpoint`` is given (e.g. on
    Colab). ``timeout``: seconds for all downloads together (default ``$SEQUENCER_DOWNLOAD_TIMEOUT`` or 300);
    a source still busy at the deadline is abandoned. Raises a RuntimeError naming everything it tried when
    none works. The release file is verified (:func:`download_verified`): written under a temporary name, kept
    only when its size and SHA-256 match, and a cached copy that fails the check is moved aside.
    """
    if name not in OFFICIAL_URLS:
        raise ValueError(f"pretrained weights exist for {sorted(OFFICIAL_URLS)}, not {name!r}")
    seconds = _deadline_seconds(timeout)
    model = MODELS[name](**kwargs)
    if checkpoint is not None:
        return load_weights(model, _read_checkpoint(Path(checkpoint)))  # type: ignore[return-value]
    deadline = time.monotonic() + seconds
    tried: list[str] = []

    def from_hub() -> Mapping[str, Any]:
        # optional dependency: timm is needed only for its weights and registry
        import timm
        return timm.create_model(name, pretrained=True).state_dict()

    def from_github() -> Mapping[str, Any]:
        return _read_checkpoint(download_verified(OFFICIAL_URLS[name], deadline))

    sources = ((f"timm.create_model({name!r}, pretrained=True) [Hugging Face Hub 'timm/{name}.in1k']",
                _hub_endpoint(), from_hub),
               (f"the official release {OFFICIAL_URLS[name]!r}", OFFICIAL_URLS[name], from_github))
    for label, url, fetch in sources:
        try:
            # fail in a second offline instead of after minutes of retries
            _check_reachable(url, timeout=min(3.0, max(0.1, deadline - time.monotonic())))
            sd = _before(deadline, fetch, seconds)
        except Exception as err:  # no internet, no timm, a stall: say so and try the next source
            tried.append(f"{label}: {_short(err)}")
            continue
        return load_weights(model, sd)  # type: ignore[return-value]
    raise RuntimeError(
        f"could not load the official {name} weights; this needs internet (e.g. Colab) or a local file via "
        f"pretrained({name!r}, checkpoint='path/to/{name}.pth'). Tried:\n  - " + "\n  - ".join(tried)
    )


def _hub_endpoint() -> str:
    """The Hugging Face Hub address timm downloads from (``$HF_ENDPOINT`` if set)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _before(deadline: float, fetch: Callable[[], Any], seconds: float) -> Any:
    """``fetch()`` in a daemon thread; TimeoutError if it has not returned by ``deadline`` (``time.monotonic``).

    Why a thread: the Hub client retries a stalled connection with its own per-try timeouts, so no socket
    timeout bounds the total; an abandoned daemon thread ends with its own timeouts and never blocks exit."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"not tried: the {seconds:g} s deadline had passed")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fetch()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, name="sequencer_mini-download", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within the {seconds:g} s deadline (pretrained(timeout=...) or "
                           f"${TIMEOUT_ENV}); abandoned")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _check_reachable(url_or_host: str, timeout: float = 3.0) -> None:
    """Raise ConnectionError unless the host of ``url_or_host`` (a URL, or a host name meaning port 443)
    accepts a TCP connection within ``timeout`` seconds. With ``SEQUENCER_OFFLINE`` set (the tests) it raises at
    once for every host but this machine's loopback (a test's local server), without touching the network."""
    parts = urllib.parse.urlsplit(url_or_host if "://" in url_or_host else f"https://{url_or_host}")
    host, port = parts.hostname or url_or_host, parts.port or (80 if parts.scheme == "http" else 443)
    if not download_allowed(None) and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConnectionError(f"downloads are disabled (SEQUENCER_OFFLINE is set), so {url_or_host} is not tried")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"no network connection to {host}:{port} ({err})") from err


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text[:300]


# ----------------------------------------------------------------------------- verified downloads

def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expected(path: Path) -> tuple[int | None, str | None, str]:
    """Size and SHA-256 a file must have: the library's record, else the one written beside it on its first
    download (``<file>.sha256``); with where the checksum came from."""
    size, sha = WEIGHT_FILES.get(path.name, (None, None))
    if sha is not None:
        return size, sha, "recorded in the library (WEIGHT_FILES)"
    side = path.with_name(path.name + ".sha256")
    with contextlib.suppress(OSError, ValueError):
        recorded_sha, recorded_size = side.read_text(encoding="ascii").split()[:2]
        recorded = size if size is not None else int(recorded_size)
        return recorded, recorded_sha, f"recorded at its first download in {side}"
    return size, None, "none recorded"


def _file_problem(path: Path, size: int | None, sha: str | None) -> str | None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"its size is {actual:,} bytes, expected {size:,}"
    if sha is not None and _sha256(path) != sha:
        return f"its SHA-256 is {_sha256(path)}, expected {sha}"
    return None


def _not_weights(head: bytes, content_type: str, size: int) -> str | None:
    """What a download is when it cannot be a torch weights file (a zip archive, or an old-style pickle)."""
    text = head.lstrip()[:15].lower()
    if "html" in content_type.lower() or text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return f"an HTML page ({size:,} bytes, {content_type or 'no content type'})"
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        return f"{size:,} bytes starting with {head[:16]!r} ({content_type or 'no content type'})"
    return None


def download_verified(url: str, deadline: float, folder: str | os.PathLike[str] | None = None) -> Path:
    """The file at ``url`` in ``folder`` (default: torch's hub cache, ``<TORCH_HOME>/hub/checkpoints``), verified.

    A cached copy is used when it passes the check (size and SHA-256 from :data:`WEIGHT_FILES`, else from its
    first download); one that fails is moved aside to ``<name>.bad-<time>`` with a message naming both, and the
    file is downloaded again. A download goes to ``<name>.part-<pid>`` and is renamed only when it is complete
    (the size the server announced), is a weights file (not an HTML page or other bytes a server sends with
    status 200: "the server sent X, not a weights file"), and matches the recorded size and checksum; otherwise
    it is deleted and nothing is cached. ``deadline``: ``time.monotonic()`` by which it must be done.
    """
    dest = Path(folder) if folder is not None else _hub_checkpoints()
    dest = dest / Path(urllib.parse.urlsplit(url).path).name
    size, sha, origin = _expected(dest)
    if dest.is_file():
        problem = _file_problem(dest, size, sha)
        if problem is None and sha is None:  # nothing to compare with: it must at least be whole weights
            try:
                _read_checkpoint(dest)
            except RuntimeError as e:
                problem = f"it is not a readable weights file: {str(e).split(': ', 1)[-1][:200]}"
        if problem is None:
            if sha is None:
                _record(dest)
            return dest
        aside = dest.with_name(f"{dest.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(dest, aside)
        print(f"the cached weights file {dest} failed its check ({problem}; checksum {origin}): moved aside to "
              f"{aside}; downloading it again", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    try:
        _fetch(url, part, deadline)
        problem = _file_problem(part, size, sha)
        if problem is not None:
            raise RuntimeError(f"the download of {url} does not match its record: {problem} (checksum {origin}); "
                               f"nothing was cached")
        _read_checkpoint(part)  # a weights file torch reads, finite
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    if sha is None:
        _record(dest)
    return dest


def _record(dest: Path) -> None:
    """Write ``<file>.sha256`` (checksum and size) for a weights file the library holds no checksum of."""
    digest = _sha256(dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{digest} {dest.stat().st_size}\n", encoding="ascii")
    print(f"weights file {dest} ({dest.stat().st_size:,} bytes, SHA-256 {digest}): the library records no checksum "
          f"for {dest.name}, so this one is recorded beside it and every later use is checked against it",
          file=sys.stderr)


def _fetch(url: str, part: Path, deadline: float) -> None:
    """Stream ``url`` into ``part``; RuntimeError when the server sends no weights file or stops early."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the deadline had passed")
    with urllib.request.urlopen(url, timeout=max(0.1, min(60.0, remaining))) as response:  # noqa: S310
        announced = response.headers.get("Content-Length")
        content_type = response.headers.get("Content-Type", "")
        got = 0
        with open(part, "wb") as f:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the download of {url} did not finish before the deadline")
                try:
                    block = response.read(1 << 20)
                except http.client.IncompleteRead as e:  # the connection closed before Content-Length bytes
                    f.write(e.partial)
                    got += len(e.partial)
                    break
                if not block:
                    break
                f.write(block)
                got += len(block)
            f.flush()
            os.fsync(f.fileno())
    with open(part, "rb") as f:
        head = f.read(64)
    sent = _not_weights(head, content_type, got)
    if sent is not None:
        raise RuntimeError(f"the server sent {sent}, not a weights file ({url}); nothing was cached")
    if announced is not None and announced.isdigit() and got != int(announced):
        raise RuntimeError(f"the download of {url} was cut short: {got:,} of {int(announced):,} bytes; nothing was "
                           f"cached")
