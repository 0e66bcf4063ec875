#!/usr/bin/env python
"""Print how much disk the installed Python packages take, and how much of it is CUDA.

    python tools/install_size.py

The README quotes its output to tell readers without a GPU what a CPU-only PyTorch saves. CUDA
packages are the ``nvidia-*`` and ``cuda-*`` distributions and ``triton`` (PyTorch's GPU compiler),
which the default Linux wheels of PyTorch pull in and the CPU wheels do not.
"""

from __future__ import annotations

import contextlib

import importlib.metadata as md
from pathlib import Path


def dist_bytes(dist: md.Distribution) -> int:
    """Bytes of the files a distribution installed (from its RECORD)."""
    total = 0
    for f in dist.files or []:
        with contextlib.suppress(OSError):  # a file listed in RECORD but removed since
            total += Path(dist.locate_file(f)).stat().st_size
    return total


def is_cuda(name: str) -> bool:
    return name.startswith(("nvidia-", "nvidia_", "cuda-", "cuda_")) or name == "triton"


def main() -> None:
    sizes = {d.metadata["Name"].lower(): dist_bytes(d) for d in md.distributions()}
    total = sum(sizes.values())
    cuda = sum(v for k, v in sizes.items() if is_cuda(k))
    print(f"all packages: {total / 1e9:.1f} GB; CUDA libraries and triton: {cuda / 1e9:.1f} GB; "
          f"torch itself: {sizes.get('torch', 0) / 1e9:.1f} GB; torch {md.version('torch')}")


if __name__ == "__main__":
    main()
