"""The environment switches that reach below the training layer: where downloads go and whether they may happen.

``SEQUENCER_OFFLINE`` (set: never download; the tests set it) and ``SEQUENCER_CACHE`` (the download folder) are
read by the data loaders and by the pretrained-weights downloader alike, so they are read here, once.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "OFFLINE_ENV", "cache_dir", "download_allowed"]

CACHE_ENV = "SEQUENCER_CACHE"  #: where downloads go
OFFLINE_ENV = "SEQUENCER_OFFLINE"  #: set: never download


def cache_dir() -> Path:
    """Where downloads go: ``$SEQUENCER_CACHE`` or ``~/.cache/sequencer_mini``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sequencer_mini"))


def download_allowed(download: bool | None) -> bool:
    """``download=None`` means: yes, unless ``SEQUENCER_OFFLINE`` is set."""
    return (not os.environ.get(OFFLINE_ENV)) if download is None else download
