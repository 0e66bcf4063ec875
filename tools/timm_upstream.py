"""Vendor timm's own test file and training scripts, pinned by hash, for the tests that run them on our presets.

``tests/test_timm_upstream.py`` runs timm's ``tests/test_models.py`` on every preset we register in timm, and
``tests/test_timm_scripts.py`` runs timm's ``train.py`` and ``validate.py``. Neither file ships in timm's wheel, and
CI cannot reach GitHub, so the repository keeps a copy, unchanged, with timm's LICENSE beside it, in
``tests/_vendor/timm-<version>/`` (pytest does not collect ``_vendor`` folders). The tests check every file against
the SHA-256 pinned below (a missing or changed copy fails under ``CI``, with this command in the message). This tool
writes that folder, for a new timm version once its pins are added::

    python tools/timm_upstream.py                      # pip download of timm's sdist + GitHub, for the installed timm
    python tools/timm_upstream.py --sdist timm-1.0.31.tar.gz --git path/to/pytorch-image-models  # offline

* ``tests/test_models.py`` and ``LICENSE`` come from timm's source distribution on PyPI for the installed version
  (``pip download timm==<version> --no-binary :all: --no-deps``), whose SHA-256 is pinned.
* ``train.py`` and ``validate.py`` are not in the source distribution; they come from the GitHub repository at a
  pinned commit (raw.githubusercontent.com, or ``git show`` in a local clone given with ``--git``), each file
  pinned by SHA-256. The commit is the newest one available when the pin was made; its scripts run on the pinned
  timm (``tests/test_timm_scripts.py`` proves it).

timm is Apache-2.0 (Ross Wightman and contributors); its LICENSE is kept beside the files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/huggingface/pytorch-image-models"

#: Per timm version: the sdist's SHA-256, the files taken from it, and the commit and SHA-256 of each script.
PINS: dict[str, dict] = {
    "1.0.31": {
        "sdist_sha256": "baa0b333339c46d3d6d4965d99b69f5053afed71210e8f433d7ea5ee6a18f0ec",
        "from_sdist": {
            "tests/test_models.py": "ffb62c6df02601a96c2fda403723a7f96a806897ee061d1009c1f3135fb64eb7",
            "LICENSE": "71b111620fa32c17a80ccd6db2da759d31a591e497d8b5f382174f59d1b59d49",
        },
        "scripts_commit": "aa4b5850c1543fa488abf260f18390eda46cf85d",
        "from_git": {
            "train.py": "f0bb70b9e1c8c576eb1f7beba9cb46953d01ec1308d68c59ec055a6266f76388",
            "validate.py": "1ff87867c808997ce443eb8ff8b2c7324519cdd0ec9dafbc3d5e666f89436749",
        },
    },
}


def folder(timm_version: str | None = None) -> Path:
    """Where the files of a timm version (default: the installed one) go."""
    return ROOT / "tests" / "_vendor" / f"timm-{timm_version or version('timm')}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(name: str, data: bytes, want: str) -> bytes:
    got = _sha256(data)
    if want and got != want:
        raise SystemExit(f"{name}: SHA-256 {got} is not the pinned {want}; refusing to use it")
    return data


def _sdist(timm_version: str, sdist: Path | None, tmp: Path) -> Path:
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", f"timm=={timm_version}", "--no-deps",
                        "--no-binary", ":all:", "-d", str(tmp)], check=True)
        sdist = tmp / f"timm-{timm_version}.tar.gz"
    return sdist


def _script(name: str, commit: str, git: Path | None) -> bytes:
    if git is not None:
        return subprocess.run(["git", "-C", str(git), "show", f"{commit}:{name}"], check=True,
                              capture_output=True).stdout
    url = f"https://raw.githubusercontent.com/huggingface/pytorch-image-models/{commit}/{name}"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (a fixed https URL)
        return response.read()


def fetch(timm_version: str, sdist: Path | None = None, git: Path | None = None) -> Path:
    """Put the pinned files for ``timm_version`` in :func:`folder`; returns it."""
    if timm_version not in PINS:
        raise SystemExit(f"no pins for timm {timm_version}; pinned: {sorted(PINS)} (add the hashes to PINS)")
    pins = PINS[timm_version]
    out = folder(timm_version)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = _sdist(timm_version, sdist, Path(tmp))
        _check(archive.name, archive.read_bytes(), pins["sdist_sha256"])
        with tarfile.open(archive) as tar:
            for name, want in pins["from_sdist"].items():
                member = tar.extractfile(f"timm-{timm_version}/{name}")
                assert member is not None, name
                data = _check(name, member.read(), want)
                (out / Path(name).name).write_bytes(data)
                files[Path(name).name] = {"sha256": _sha256(data), "from": f"PyPI sdist timm-{timm_version}.tar.gz"}
    for name, want in pins["from_git"].items():
        data = _check(name, _script(name, pins["scripts_commit"], git), want)
        (out / name).write_bytes(data)
        files[name] = {"sha256": _sha256(data), "from": f"{REPO_URL} @ {pins['scripts_commit']}"}
    (out / "SOURCES.json").write_text(json.dumps({"timm": timm_version, "license": "Apache-2.0 (LICENSE)",
                                                  "files": files}, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm-version", default=version("timm"), help="default: the installed timm")
    parser.add_argument("--sdist", type=Path, help="timm's source distribution, already downloaded")
    parser.add_argument("--git", type=Path, help="a local clone of pytorch-image-models holding the pinned commit")
    args = parser.parse_args(argv)
    print(fetch(args.timm_version, args.sdist, args.git))


if __name__ == "__main__":
    main()
