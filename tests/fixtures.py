"""Generate small datasets in the exact on-disk formats, at test time (no binary data in the repository)."""
from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """A script of the repository (``tools/NAME.py``, ``bench/NAME.py``: not a package) imported from its file,
    afresh on every call."""
    file = REPO / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec is not None and spec.loader is not None, f"{file} is not a Python file"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FMNIST_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 0x0000, dtype code (0x08 for uint8), ndim, big-endian uint32 dims, then the data."""
    assert array.dtype == np.uint8
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_idx_tree(root: Path, n_train: int = 40, n_test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    """Four Fashion-MNIST-format IDX files (28x28 uint8 images, labels 0..9) in ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, arr in zip(FMNIST_NAMES[split], (images, labels), strict=True):
            data = idx_bytes(arr)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return root


def make_cifar_tree(root: Path, n_per_batch: int = 10, cifar100: bool = False, seed: int = 0) -> Path:
    """A ``cifar-10-batches-py`` (or ``cifar-100-python``) tree of pickled dicts, as the official archives hold."""
    rng = np.random.default_rng(seed)
    if cifar100:
        folder, files, key, k = root / "cifar-100-python", ["train", "test"], "fine_labels", 100
        meta_name, meta = "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                   "coarse_label_names": [f"super{i}" for i in range(20)]}
    else:
        folder, files, key, k = (root / "cifar-10-batches-py",
                                 [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10)
        meta_name, meta = "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                           "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        batch = {"batch_label": name, key: [int(v) for v in rng.integers(0, k, n_per_batch)],
                 "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"img{i}.png" for i in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


def make_image_folder(root: Path, classes: list[str], per_class: int = 2, size: int = 16,
                      ext: str = ".png", subdir: str = "", seed: int = 0) -> Path:
    """``root/<class>/[subdir/]img<i><ext>`` with random RGB images."""
    rng = np.random.default_rng(seed)
    for c in classes:
        d = root / c / subdir if subdir else root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"img{i}{ext}")
    return root


def make_tiny_imagenet_tree(root: Path, wnids: list[str], per_class: int = 2, val_per_class: int = 1) -> Path:
    """``tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt}``."""
    tree = root / "tiny-imagenet-200"
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "wnids.txt").write_text("\n".join(wnids) + "\n")
    make_image_folder(tree / "train", wnids, per_class, size=64, ext=".JPEG", subdir="images")
    for w in wnids:  # the boxes file sits next to images/ in the real tree and must be ignored
        (tree / "train" / w / f"{w}_boxes.txt").write_text("")
    (tree / "val" / "images").mkdir(parents=True, exist_ok=True)
    lines, rng = [], np.random.default_rng(1)
    for i in range(val_per_class * len(wnids)):
        name = f"val_{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tree / "val" / "images" / name)
        lines.append(f"{name}\t{wnids[i % len(wnids)]}\t0\t0\t63\t63")
    (tree / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def single_thread():
    """One intra-op thread: the test models are tiny, and on a shared 2-core runner two OpenMP threads that
    wait for each other are up to 10x slower than one. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
