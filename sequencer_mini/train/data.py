"""Datasets, loaders and augmentations for chapters 6-8.

Three kinds of data, one interface:

* Fashion-MNIST (28x28 gray) read from the official IDX files with our own small reader;
* CIFAR-10/100 (32x32 RGB) read from the official python-pickle batches;
* Imagenette and Tiny-ImageNet as ImageFolder trees of JPEG files (downloaded on Colab).

The small datasets live in memory as one ``uint8`` tensor ``(N, C, H, W)``. ``TensorLoader`` slices
batches from it (optionally on the GPU) and augments whole batches, which is several times faster
on 2 CPU cores than a ``DataLoader`` that builds every item in Python. Every loader's shuffle order
and augmentation draws are a pure function of ``(seed, epoch)``, so a resumed run sees exactly the
batches an uninterrupted run would have seen.

Where the data is looked for. A folder you name is used exactly: the ``root`` argument (``--data-root``)
if given, else the folders in ``$SEQUENCER_DATA`` (``os.pathsep``-separated); when the data is not there the
error names what was expected in it, and nothing else is searched or downloaded (a misspelt folder must not
silently train on another copy). With neither set: the Debian package folder (Fashion-MNIST only), the
download cache ``~/.cache/sequencer_mini`` (or ``$SEQUENCER_CACHE``), and finally a download through
torchvision when there is internet. Every dataset records the folder it was read from (``.source``), and
:func:`data_identity` describes what a run trained on (checkpoints store it; ``--resume`` compares it).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import socket
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import v2

from sequencer_mini.core.datasets import MEAN_STD
from sequencer_mini.core.env import cache_dir, download_allowed

# ----------------------------------------------------------------------------- dataset facts

FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FMNIST_FILES = {  # split -> (images, labels); each may also be stored gzipped (".gz")
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
INSTALL_HINT = ("install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the "
                "four IDX files (.gz or raw) in a folder and `export SEQUENCER_DATA=/that/folder`")


CIFAR_URLS = {  # (url, md5 of the archive), the same as torchvision's
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}

# Imagenette: 10 easy ImageNet classes. Folder names are ImageNet wnids; sorted wnid order is both the
# ImageFolder class order and the ImageNet-1k index order, so the map below is increasing.
# Indices checked against timm.data.ImageNetInfo().label_names(). Note parachute is n03888257 (701);
# n03888605 is "parallel bars" (702).
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")
IMAGENETTE_CLASSES = ("tench", "English springer", "cassette player", "chain saw", "church",
                      "French horn", "garbage truck", "gas pump", "golf ball", "parachute")
IMAGENETTE_TO_IMAGENET = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
IMAGENETTE_URLS = {  # size -> (url, md5), as in torchvision.datasets.Imagenette
    "160px": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"),
    "320px": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"),
    "full": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"),
}
TINY_IMAGENET_URL = ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


class DataNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be downloaded."""


DATA_ENV = "SEQUENCER_DATA"  #: folders that hold the datasets, used exactly (no fallback)


def explicit_dirs(root: str | Path | None = None) -> list[Path]:
    """The folders the user named, which are then the only ones searched: ``[root]`` if given, else the
    entries of ``$SEQUENCER_DATA``, else ``[]`` (the default search). A named folder that does not exist is an
    error at once (a misspelt path), naming where it came from."""
    if root is not None:
        dirs, origin = [Path(root)], "data root"
    else:
        dirs, origin = [Path(p) for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p], f"${DATA_ENV} entry"
    for d in dirs:
        if not d.is_dir():
            raise DataNotFoundError(f"{origin} {str(d)!r} {'is not a folder' if d.exists() else 'does not exist'} "
                                    f"(no other folder is searched when one is named)")
    return dirs


def _explicit_missing(what: str, dirs: Sequence[Path], root: str | Path | None, expected: str) -> DataNotFoundError:
    origin = "the data root" if root is not None else f"${DATA_ENV}={os.environ.get(DATA_ENV)!r}"
    listed = "\n".join(f"  - {d}" for d in dirs)
    return DataNotFoundError(
        f"{what} not found in {origin}. Expected {expected} in:\n{listed}\nA named folder is used exactly: "
        f"nothing else is searched or downloaded. Put the files there, or name the right folder, or drop "
        f"{'--data-root' if root is not None else DATA_ENV} to search the default places "
        f"(system package, download cache) and download.")


def _with_timeout(fn: Callable[[], object], seconds: float = 60.0) -> object:
    # torchvision's downloader opens URLs without a timeout; on a firewalled machine it would hang.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        return fn()
    finally:
        socket.setdefaulttimeout(old)


# ----------------------------------------------------------------------------- IDX files (MNIST format)

# IDX header: 2 zero bytes, a dtype code, the number of dims, then one big-endian uint32 per dim.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def _read_bytes(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when the name ends in ``.gz``."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, gzip.BadGzipFile) as e:  # truncated or not gzip at all
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (raw or ``.gz``) into a tensor whose shape is the file's dims.

    Raises ``ValueError`` naming the file on a bad magic number or a size that disagrees with the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = raw[:4].hex() if len(raw) >= 4 else f"only {len(raw)} bytes"
        raise ValueError(f"{path}: not an IDX file: magic number {magic}, expected 0000 + dtype code "
                         f"(one of {[f'{c:02x}' for c in _IDX_DTYPES]}) + number of dims (e.g. 00000803)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]).newbyteorder(">"), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: expected {header} bytes, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        what = "decompressed size" if path.suffix == ".gz" else "size"
        raise ValueError(f"{path}: truncated or corrupt IDX file: header says dims {dims}, so expected "
                         f"{expected} bytes, but the {what} is {len(raw)} bytes")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_found(what: str, tried: Sequence[Path], reason: str, fix: str) -> DataNotFoundError:
    """The one error for missing data: what was looked for, every path tried, why no download, the fix."""
    listed = "\n".join(f"  - {t}" for t in tried)
    return DataNotFoundError(f"{what} not found. Looked for:\n{listed}\n({reason}.) To fix: {fix}.")


def find_fashion_mnist(root: str | Path | None = None, download: bool | None = None) -> Path:
    """The first folder holding all four Fashion-MNIST IDX files (downloading if allowed and needed)."""
    names = [n for pair in FMNIST_FILES.values() for n in pair]
    explicit = explicit_dirs(root)
    candidates = [c for d in explicit for c in (d, d / "fashion-mnist", d / "FashionMNIST" / "raw")]
    if not explicit:
        candidates = [FMNIST_SYSTEM_DIR, cache_dir() / "FashionMNIST" / "raw"]
    for folder in candidates:
        if all(_find_file(folder, n) for n in names):
            return folder
    if explicit:
        raise _explicit_missing("Fashion-MNIST", candidates, root,
                                "the four IDX files " + ", ".join(n + "[.gz]" for n in names))
    reason = "download disabled (offline: download=False or SEQUENCER_OFFLINE set)"
    if download_allowed(download):
        try:
            # import cost: torchvision's datasets load only when a download is needed
            from torchvision.datasets import FashionMNIST
            _with_timeout(lambda: FashionMNIST(cache_dir(), train=True, download=True))
            return cache_dir() / "FashionMNIST" / "raw"
        except Exception as e:  # no internet, proxy refusal, ... -> the same helpful message
            reason = f"download through torchvision failed: {type(e).__name__}: {e}"
    env = os.environ.get("SEQUENCER_DATA")
    raise _not_found(f"Fashion-MNIST ({', '.join(n + '[.gz]' for n in names)})", candidates,
                     f"$SEQUENCER_DATA is {'set to ' + repr(env) if env else 'unset'}; {reason}", INSTALL_HINT)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None,
                       download: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as tensors: images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64."""
    if split not in FMNIST_FILES:
        raise ValueError(f"split must be one of {list(FMNIST_FILES)}, got {split!r}")
    folder = find_fashion_mnist(root, download)
    img_path, lbl_path = (_find_file(folder, n) for n in FMNIST_FILES[split])
    if img_path is None or lbl_path is None:  # find_fashion_mnist found both; a file removed since then
        raise DataNotFoundError(f"{folder}: {FMNIST_FILES[split]} (or .gz) missing; {INSTALL_HINT}")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, H, W), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{lbl_path}: expected {len(images)} labels (one per image), got shape {tuple(labels.shape)}")
    return images.unsqueeze(1), check_labels(labels, len(FMNIST_CLASSES), lbl_path)


def check_labels(labels: torch.Tensor, num_classes: int, where: str | Path) -> torch.Tensor:
    """``labels`` as int64 after checking that each is a whole number in ``[0, num_classes)``; otherwise a
    ``ValueError`` naming ``where`` (the file) and the first bad label (a fractional label would be truncated,
    one out of range would fail mid-training or train on a class the model does not have)."""
    if labels.is_floating_point():
        fractional = (labels != labels.round()) | ~torch.isfinite(labels)
        if bool(fractional.any()):
            i = int(fractional.nonzero()[0])
            raise ValueError(f"{where}: labels must be whole class numbers, found {float(labels[i])} at position "
                             f"{i}; fix or replace the file")
    if len(labels) and (float(labels.min()) < 0 or float(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(f"{where}: labels must be in [0, {num_classes}) ({num_classes} classes), found "
                         f"{float(bad[0]):g}; fix or replace the file")
    return labels.long()


def fashion_mnist_tensors(split: str = "test", n: int | None = None, *, normalise: bool = True,
                          seed: int | None = None, root: str | Path | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as floats ``(N, 1, 28, 28)`` and labels ``(N,)``, for chapters that feed models directly.

    ``normalise``: with the training mean and std (what the models take), else plain pixels in ``[0, 1]`` (what
    :func:`~sequencer_mini.analysis.robustness.corrupt` takes). ``n``: the first ``n`` images, or with ``seed`` a fixed
    random subset of ``n`` (the same for every caller with the same seed); ``None``: the whole split.
    ``root``: the folder of the IDX files (default: :func:`find_fashion_mnist`'s search).
    """
    images, labels = load_fashion_mnist(split, root)
    if n is not None and n < len(images):
        if seed is None:
            idx = torch.arange(n)
        else:
            idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        images, labels = images[idx], labels[idx]
    x = images.float() / 255
    if normalise:
        (mean,), (std,) = MEAN_STD["fashion_mnist"]
        x = (x - mean) / std
    return x, labels


# ----------------------------------------------------------------------------- CIFAR python pickles

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only the numpy globals they need, so a hostile file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataNotFoundError(f"{path}: missing CIFAR batch file")
    try:
        with open(path, "rb") as f:
            # latin1: the official files were written by Python 2; this is what torchvision does too.
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise ValueError(f"{path}: not a readable CIFAR python-pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def read_cifar(root: str | Path, name: str = "cifar10", train: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Read a CIFAR python-pickle tree below ``root``.

    ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``;
    ``cifar100``: ``cifar-100-python/{train, test, meta}``.
    Returns images ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64 and the class names.

    Why our own reader and not ``torchvision.datasets.CIFAR10``: torchvision verifies md5 sums of every
    batch on construction, so a generated test tree can only be loaded by monkeypatching its private
    ``_check_integrity``/``_load_meta``. The md5 check is useful once, right after a download, and we
    still get it there (``find_cifar`` downloads through torchvision); afterwards reading the same format
    ourselves gives whole tensors for the fast path, errors that name the file, and no arbitrary code
    execution from pickles.
    """
    if name == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        label_key, meta_file, meta_key, num_classes = "labels", "batches.meta", "label_names", 10
    elif name == "cifar100":
        folder = Path(root) / "cifar-100-python"
        files = ["train"] if train else ["test"]
        label_key, meta_file, meta_key, num_classes = "fine_labels", "meta", "fine_label_names", 100
    else:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    images, labels = [], []
    for fname in files:
        batch = _load_pickle(folder / fname)
        data, lbl = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{folder / fname}: key 'data' must be a uint8 array (N, 3072), got {got}")
        if lbl is None or len(lbl) != len(data):
            raise ValueError(f"{folder / fname}: key {label_key!r} must hold {len(data)} labels, "
                             f"got {'none' if lbl is None else len(lbl)}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # rows are R plane, G, B
        try:
            as_tensor = torch.as_tensor(np.asarray(lbl))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{folder / fname}: key {label_key!r} must hold class numbers ({e})") from e
        labels.append(check_labels(as_tensor, num_classes, folder / fname))
    classes = tuple(_load_pickle(folder / meta_file).get(meta_key, ()))
    if len(classes) != num_classes:
        raise ValueError(f"{folder / meta_file}: expected {num_classes} class names under {meta_key!r}, "
                         f"got {len(classes)}")
    y = torch.cat(labels)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{folder}: labels must be in [0, {num_classes}), found [{int(y.min())}, {int(y.max())}]")
    return torch.cat(images), y, classes


def find_cifar(name: str = "cifar10", root: str | Path | None = None, download: bool | None = None) -> Path:
    """A folder that holds the CIFAR tree (the folder *above* ``cifar-10-batches-py``)."""
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    explicit = explicit_dirs(root)
    candidates = explicit or [cache_dir()]
    for folder in candidates:
        if (folder / sub).is_dir():
            return folder
    if explicit:
        raise _explicit_missing(name, candidates, root, f"the folder {sub}/ (from {CIFAR_URLS[name][0]})")
    reason = "download disabled (offline)"
    if download_allowed(download):
        try:
            # import cost: torchvision's datasets load only when a download is needed
            from torchvision.datasets import CIFAR10, CIFAR100
            cls = CIFAR10 if name == "cifar10" else CIFAR100
            _with_timeout(lambda: cls(cache_dir(), train=True, download=True))  # checks the md5 sums
            return cache_dir()
        except Exception as e:
            reason = f"download failed: {type(e).__name__}: {e}"
    raise _not_found(name, [c / sub for c in candidates], reason,
                     f"run once with internet (it downloads {CIFAR_URLS[name][0]}), or set SEQUENCER_DATA "
                     f"to the folder that contains {sub}/")


# ----------------------------------------------------------------------------- ImageFolder trees

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_image_folder(root: str | Path) -> list[str]:
    """Check an ``root/<class>/**/<image>`` tree; return the sorted class names.

    Raises ``ValueError`` naming every class folder that holds no image (ImageFolder would fail later
    with a less direct message, or silently shift class indices if the folder were skipped).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: image folder does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    empty = [c for c in classes
             if not any(p.suffix.lower() in IMG_EXTENSIONS for p in (root / c).rglob("*") if p.is_file())]
    if empty:
        raise ValueError(f"{root}: class folder(s) with no image files ({', '.join(IMG_EXTENSIONS)}): "
                         f"{', '.join(str(root / c) for c in empty)}")
    return classes


def image_folder(root: str | Path, transform: Callable | None = None, classes: Sequence[str] | None = None):
    """``torchvision.datasets.ImageFolder`` after ``check_image_folder``; ``classes`` fixes the index order."""
    # import cost: torchvision's datasets load only when a download is needed
    from torchvision.datasets import ImageFolder
    found = check_image_folder(root)
    if classes is not None and list(classes) != found:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise ValueError(f"{root}: class folders differ from the expected {len(classes)} classes "
                         f"(missing: {missing[:5]}, unexpected: {extra[:5]})")
    return ImageFolder(str(root), transform=transform)


def _download_archive(url: str, md5: str, dest: Path) -> None:
    # import cost: torchvision's datasets load only when a download is needed
    from torchvision.datasets.utils import download_and_extract_archive
    _with_timeout(lambda: download_and_extract_archive(url, download_root=str(dest), md5=md5), 120.0)


def find_tree(folder_name: str, root: str | Path | None, download: bool | None, url_md5: tuple[str, str]) -> Path:
    """``<dir>/<folder_name>`` for the first search dir that has it; else download and extract the archive."""
    explicit = explicit_dirs(root)
    candidates = explicit or [cache_dir()]
    for folder in candidates:
        if (folder / folder_name).is_dir():
            return folder / folder_name
    if explicit:
        raise _explicit_missing(folder_name, candidates, root, f"the folder {folder_name}/ (from {url_md5[0]})")
    reason = "download disabled (offline)"
    if download_allowed(download):
        try:
            _download_archive(*url_md5, cache_dir())
            return cache_dir() / folder_name
        except Exception as e:
            reason = f"download failed: {type(e).__name__}: {e}"
    raise _not_found(folder_name, [c / folder_name for c in candidates], reason,
                     f"run with internet (downloads {url_md5[0]}), or set SEQUENCER_DATA to the folder "
                     f"containing {folder_name}/")


def imagenette(split: str = "train", size: str = "160px", transform: Callable | None = None,
               root: str | Path | None = None, download: bool | None = None):
    """Imagenette as an ImageFolder; ``dataset.classes`` are the wnids in ``IMAGENETTE_WNIDS`` order.

    Map 10-class labels to ImageNet-1k with ``IMAGENETTE_TO_IMAGENET`` (e.g. ``logits[:, idx]``) to
    evaluate ImageNet-pretrained weights.
    """
    if split not in ("train", "val") or size not in IMAGENETTE_URLS:
        raise ValueError(f"split must be 'train'/'val' and size one of {list(IMAGENETTE_URLS)}, "
                         f"got {split!r}, {size!r}")
    folder = "imagenette2" if size == "full" else f"imagenette2-{size[:-2]}"
    tree = find_tree(folder, root, download, IMAGENETTE_URLS[size])
    return image_folder(tree / split, transform, classes=IMAGENETTE_WNIDS)


class TinyImageNetVal(Dataset):
    """Tiny-ImageNet's ``val`` split: all images in ``val/images``, labels in ``val/val_annotations.txt``.

    Each annotation line is ``<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>``. We read it directly instead of
    moving files into class folders, so the downloaded tree stays as published.
    Items: ``(image, label)`` with the same class indices as the train ImageFolder (sorted wnids).
    """

    def __init__(self, tree: str | Path, classes: Sequence[str], transform: Callable | None = None):
        # import cost: torchvision's datasets load only when a download is needed
        from torchvision.datasets.folder import default_loader
        tree = Path(tree)
        ann = tree / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataNotFoundError(f"{ann}: missing (expected Tiny-ImageNet's val/val_annotations.txt)")
        self.classes, self.class_to_idx = list(classes), {c: i for i, c in enumerate(classes)}
        self.transform, self.loader, self.root = transform, default_loader, str(tree / "val")
        self.samples: list[tuple[str, int]] = []
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in self.class_to_idx:
                raise ValueError(f"{ann}:{n}: expected '<file>\\t<wnid>\\t...' with a wnid from wnids.txt, "
                                 f"got {line!r}")
            path = tree / "val" / "images" / parts[0]
            if not path.is_file():
                raise ValueError(f"{ann}:{n}: image {path} does not exist")
            self.samples.append((str(path), self.class_to_idx[parts[1]]))
        if not self.samples:
            raise ValueError(f"{ann}: no annotations")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        img = self.loader(path)
        return (self.transform(img) if self.transform else img), target


def tiny_imagenet(split: str = "train", transform: Callable | None = None,
                  root: str | Path | None = None, download: bool | None = None):
    """Tiny-ImageNet-200 (64x64, 200 classes). ``train``: ImageFolder over ``train/<wnid>/images``;
    ``val``: ``TinyImageNetVal``. Class order: sorted ``wnids.txt`` for both splits."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' (test has no labels), got {split!r}")
    tree = find_tree("tiny-imagenet-200", root, download, TINY_IMAGENET_URL)
    wnids_file = tree / "wnids.txt"
    if not wnids_file.is_file():
        raise DataNotFoundError(f"{wnids_file}: missing (expected one wnid per line)")
    classes = sorted(w.strip() for w in wnids_file.read_text().split() if w.strip())
    if split == "train":
        return image_folder(tree / "train", transform, classes=classes)
    return TinyImageNetVal(tree, classes, transform)


# ----------------------------------------------------------------------------- augmentation

#: The augmentation presets by name (``AugmentConfig.preset`` and the training CLI's ``--aug``).
#: The data sets held in memory as tensors and batched by :class:`TensorLoader` (the others are image folders).
IN_MEMORY: tuple[str, ...] = ("fashion_mnist", "cifar10", "cifar100")

AUG_PRESETS: tuple[str, ...] = ("none", "flip", "light", "paper")


@dataclass
class AugmentConfig:
    """Which augmentations are on. The paper (ImageNet, 300 epochs) uses all of them:
    RandAugment m9 (timm's ``rand-m9-mstd0.5-inc1``; torchvision has no magnitude noise), random
    erasing p=0.25, mixup 0.8 / cutmix 1.0 (one of the two per batch), label smoothing 0.1. Small
    models trained for a few epochs underfit under that much regularisation, hence the presets."""
    crop_padding: int = 0          # random crop of the original size after zero padding (0: off)
    hflip: bool = False            # random horizontal flip (fine for FMNIST: classes are left-right symmetric)
    randaugment: bool = False
    randaug_num_ops: int = 2
    randaug_magnitude: int = 9
    trivialaugment: bool = False   # TrivialAugment (Mueller & Hutter 2021): one op, one magnitude, both drawn
    random_erasing: float = 0.0    # probability per image
    mixup_alpha: float = 0.0       # 0: off
    cutmix_alpha: float = 0.0      # 0: off
    label_smoothing: float = 0.0   # applied once, in the loss (mixup targets are not pre-smoothed)

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """``none``; ``flip`` (horizontal flip only); ``light`` (crop+flip+smoothing: short CPU runs); ``paper``
        (the full recipe)."""
        presets = {
            "none": cls(),
            "flip": cls(hflip=True),
            "light": cls(crop_padding=2, hflip=True, label_smoothing=0.1),
            "paper": cls(crop_padding=2, hflip=True, randaugment=True, random_erasing=0.25,
                         mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1),
        }
        if name not in presets:
            raise ValueError(f"augmentation preset must be one of {list(presets)}, got {name!r}")
        return presets[name]


def batch_mixer(aug: AugmentConfig, num_classes: int) -> Callable | None:
    """MixUp / CutMix on a batch: ``(x (B,C,H,W) float, y (B,) int) -> (x, soft y (B, num_classes))``."""
    ops = []
    if aug.mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=aug.mixup_alpha, num_classes=num_classes))
    if aug.cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=aug.cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)  # timm: switch with prob 0.5


def item_transform(aug: AugmentConfig | None, info: DatasetInfo, train: bool) -> v2.Compose:
    """Per-image pipeline (``DataLoader`` path) for a uint8 tensor or a PIL image -> normalised float (C,H,W)."""
    aug = aug if (aug is not None and train) else AugmentConfig()
    ops: list[Callable] = [v2.ToImage()]
    if info.name == "imagenette":  # photos of any size: random-resized crop, or resize + centre crop (crop_pct 0.875)
        ops += ([v2.RandomResizedCrop(info.img_size, antialias=True)] if train else
                [v2.Resize(int(info.img_size / 0.875), interpolation=v2.InterpolationMode.BICUBIC),
                 v2.CenterCrop(info.img_size)])
    elif info.name == "tiny_imagenet" and info.img_size != 64:  # all images are 64x64
        ops.append(v2.Resize(info.img_size, interpolation=v2.InterpolationMode.BICUBIC))
    if aug.crop_padding:
        ops.append(v2.RandomCrop(info.img_size, padding=aug.crop_padding))
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if aug.randaugment:
        ops.append(v2.RandAugment(aug.randaug_num_ops, aug.randaug_magnitude))
    if aug.trivialaugment:
        ops.append(v2.TrivialAugmentWide())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    if aug.random_erasing > 0:
        ops.append(v2.RandomErasing(p=aug.random_erasing, value=0))
    return v2.Compose(ops)


def imagenet_eval_transform(img_size: int = 224, crop_pct: float = 0.875) -> v2.Compose:
    """timm's evaluation transform for the ImageNet-pretrained Sequencer weights: bicubic resize of the short
    side to ``img_size / crop_pct`` (256 for 224), centre crop, ImageNet mean/std. PIL image -> (3, S, S).

    Resize and crop act on the PIL image, as in timm, so the resampling is PIL's own bicubic filter (PyTorch's
    bicubic kernel on a uint8 tensor rounds a few pixels differently); only then is it made a tensor."""
    mean, std = MEAN_STD["imagenet"]
    return v2.Compose([v2.Resize(int(img_size / crop_pct), interpolation=v2.InterpolationMode.BICUBIC),
                       v2.CenterCrop(img_size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std)])


# ----------------------------------------------------------------------------- in-memory datasets and loaders

def epoch_seed(seed: int, epoch: int) -> int:
    """The seed for everything random in one epoch of data: a pure function of ``(seed, epoch)``."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % (2**63 - 1)


class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor ``(N, C, H, W)``; items are ``(float (C,H,W) normalised, int label)``.

    ``source``: the folder the images were read from (None for tensors made in memory); ``indices``: the
    positions of these images in the full split (None: all of it, in order), set by :meth:`subset`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
                 transform: Callable | None = None, source: str | Path | None = None,
                 indices: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        self.images, self.labels, self.info = images, labels.long(), info
        self.transform = transform or item_transform(None, info, train=False)
        self.source, self.indices = (str(source) if source is not None else None), indices

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])

    def subset(self, n: int | None, seed: int = 0) -> TensorImageDataset:
        """The first ``n >= 1`` images of a fixed random permutation (class balance on average), or self."""
        check_limit(n)
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        full = self.indices if self.indices is not None else torch.arange(len(self))
        return TensorImageDataset(self.images[idx], self.labels[idx], self.info, self.transform, self.source,
                                  full[idx])


def check_limit(n: int | None, name: str = "limit") -> None:
    """A subset size is ``None`` (everything) or an int >= 1: 0 would train on nothing and, as a slice,
    -5 would mean "all but 5"."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"{name} must be a whole number >= 1 (or None for the whole split), got {n!r}")


class TensorLoader:
    """Fast path: whole-tensor batching with batched augmentation, optionally all on the GPU.

    Yields ``(x, y)``: ``x (B, C, H, W)`` float normalised on ``device``; ``y (B,)`` int64, or
    ``(B, num_classes)`` soft targets when mixup/cutmix is on. Shuffle order and every augmentation
    draw come from a generator seeded with ``epoch_seed(seed, epoch)``: call ``set_epoch`` before each
    epoch (``fit`` does).

    Where the work happens: crop, flip, normalisation and mixup are batched tensor ops, done where the
    images live. RandAugment and random erasing must run per image (torchvision applies one random draw
    to a whole batch), which costs ~0.2 ms per 28 px image on a CPU but several kernel launches per image
    on a GPU (measured 3x slower than a DataLoader with 8 workers on an H200). So with either of them on,
    the images stay on the CPU, batches are built there and then copied to ``device``.
    """

    def __init__(self, dataset: TensorImageDataset, batch_size: int, shuffle: bool = False,
                 aug: AugmentConfig | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.aug, self.seed, self.epoch, self.device = aug or AugmentConfig(), seed, 0, torch.device(device)
        self.augment = True  # False: this epoch's batches skip crop/flip (``fit`` switches it for late augmentation)
        per_image = self.aug.randaugment or self.aug.trivialaugment or self.aug.random_erasing > 0
        self.data_device = torch.device("cpu") if per_image else self.device
        self.images = dataset.images.to(self.data_device)  # uint8: 4x smaller than float on the device
        self.labels = dataset.labels.to(self.data_device)
        info = dataset.info
        self.mean = torch.tensor(info.mean, device=self.data_device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(info.std, device=self.data_device).view(1, -1, 1, 1) * 255
        self.mixer = batch_mixer(self.aug, info.num_classes)
        self.randaug: Callable | None = None  # RandAugment or TrivialAugment: one draw per image
        if self.aug.randaugment:
            self.randaug = v2.RandAugment(self.aug.randaug_num_ops, self.aug.randaug_magnitude)
        elif self.aug.trivialaugment:
            self.randaug = v2.TrivialAugmentWide()
        self.erase = v2.RandomErasing(p=self.aug.random_erasing, value=0) if self.aug.random_erasing > 0 else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random crop after zero padding and random horizontal flip, per image, for a batch (B,C,H,W)."""
        B, C, H, W = x.shape
        p = self.aug.crop_padding
        if p:
            xp = torch.nn.functional.pad(x, (p, p, p, p))
            dy, dx = (torch.randint(0, 2 * p + 1, (2, B), generator=g)).to(x.device)
            rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B,1,H,1)
            cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B,1,1,W)
            x = xp[torch.arange(B, device=x.device)[:, None, None, None],
                   torch.arange(C, device=x.device)[None, :, None, None], rows, cols]
        if self.aug.hflip:
            flip = (torch.rand(B, generator=g) < 0.5).to(x.device).view(B, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.images)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size].to(self.data_device)
            x, y = self.images[idx], self.labels[idx]
            # torchvision transforms draw from the global RNG: fork it so (1) the batch depends only on
            # (seed, epoch, b) and (2) the model's own randomness (drop path) is not shifted by augmentation.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
                if self.augment:
                    x = self._crop_flip(x, g)
                if self.randaug is not None:
                    x = torch.stack([self.randaug(im) for im in x])
                x = (x.float() - self.mean) / self.std
                if self.erase is not None:
                    x = torch.stack([self.erase(im) for im in x])
                if self.mixer is not None:
                    x, y = self.mixer(x, y)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def carve_validation(loader: TensorLoader, n_val: int, seed: int = 0) -> tuple[TensorLoader, TensorLoader]:
    """Split a training ``TensorLoader`` into ``(train, validation)`` loaders: the validation split is the first
    ``n_val`` images of a fixed permutation (``seed``, the same for every run seed), never augmented; the
    training loader keeps the rest with the same batch size, augmentation and seed. Choose checkpoints and
    hyper-parameters on it, never on the test set."""
    data = loader.dataset
    if not isinstance(loader, TensorLoader):
        raise TypeError(f"carve_validation needs a TensorLoader (in-memory data), got {type(loader).__name__}")
    if not 0 < n_val < len(data):
        raise ValueError(f"validation size must be between 1 and {len(data) - 1} (the training images), got {n_val}")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    full = data.indices if data.indices is not None else torch.arange(len(data))  # positions in the whole split
    part = lambda idx: TensorImageDataset(data.images[idx], data.labels[idx], data.info, data.transform,  # noqa: E731
                                          data.source, full[idx])
    train = TensorLoader(part(perm[n_val:]), loader.batch_size, shuffle=True, aug=loader.aug, device=loader.device,
                         seed=loader.seed, drop_last=loader.drop_last)
    return train, TensorLoader(part(perm[:n_val]), 2 * loader.batch_size, shuffle=False, device=loader.device)


class EpochSampler(Sampler[int]):
    """Shuffle for a ``DataLoader`` whose order is a pure function of ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())


class SeededDataLoader(DataLoader):
    """A ``DataLoader`` with ``set_epoch``: reseeds the sampler and the worker base seed per epoch."""

    sampler: EpochSampler
    generator: torch.Generator

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.sampler.seed, epoch) + 1)


class _MixCollate:
    """Collate a list of items, then MixUp/CutMix the batch (a class, not a lambda: workers pickle it)."""

    def __init__(self, mixer: Callable):
        self.mixer = mixer

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixer(*default_collate(batch))


def make_dataloader(dataset: Any, batch_size: int, shuffle: bool, aug: AugmentConfig | None,
                    num_classes: int, seed: int = 0, num_workers: int = 0, drop_last: bool = False) -> SeededDataLoader:
    """Per-item ``DataLoader`` path (ImageFolder trees, or GPU runs with heavy RandAugment)."""
    mixer = batch_mixer(aug, num_classes) if (aug is not None and shuffle) else None
    collate = _MixCollate(mixer) if mixer is not None else None
    return SeededDataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, shuffle),
                            num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                            generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available(),
                            persistent_workers=False)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about a dataset by name (no data is read)."""
    infos = {
        "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28, *MEAN_STD["fashion_mnist"], FMNIST_CLASSES),
        "cifar10": DatasetInfo("cifar10", 10, 3, 32, *MEAN_STD["cifar10"]),
        "cifar100": DatasetInfo("cifar100", 100, 3, 32, *MEAN_STD["cifar100"]),
        "imagenette": DatasetInfo("imagenette", 10, 3, 160, *MEAN_STD["imagenet"], IMAGENETTE_CLASSES),
        "tiny_imagenet": DatasetInfo("tiny_imagenet", 200, 3, 64, *MEAN_STD["imagenet"]),
    }
    if name not in infos:
        raise ValueError(f"dataset must be one of {list(infos)}, got {name!r}")
    return infos[name]


def tensor_datasets(name: str, root: str | Path | None = None, download: bool | None = None
                    ) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Train and test sets of an in-memory dataset (``fashion_mnist``, ``cifar10``, ``cifar100``)."""
    info = dataset_info(name)
    if name == "fashion_mnist":
        folder = find_fashion_mnist(root, download)
        (xtr, ytr), (xte, yte) = (load_fashion_mnist(s, folder, download) for s in ("train", "test"))
    elif name in ("cifar10", "cifar100"):
        folder = find_cifar(name, root, download)
        xtr, ytr, classes = read_cifar(folder, name, train=True)
        xte, yte, _ = read_cifar(folder, name, train=False)
        info = DatasetInfo(**{**asdict(info), "classes": classes})
    else:
        raise ValueError(f"{name!r} is not an in-memory dataset; use imagenette()/tiny_imagenet()")
    expected = (info.in_chans, info.img_size, info.img_size)
    for split, x in (("training", xtr), ("test", xte)):
        if len(x) == 0:
            raise ValueError(f"{folder}: the {split} split of {name} holds 0 images; fix or replace its files")
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"{folder}: the {split} images of {name} are {'x'.join(map(str, x.shape[1:]))}, expected "
                             f"{'x'.join(map(str, expected))} (channels x height x width)"
                             + ("; the train and test images differ in size" if xtr.shape[1:] != xte.shape[1:] else "")
                             + "; fix or replace its files")
    return (TensorImageDataset(xtr, ytr, info, source=folder.resolve()),
            TensorImageDataset(xte, yte, info, source=folder.resolve()))


def make_loaders(name: str, batch_size: int = 128, aug: AugmentConfig | None = None, *,
                 limit_train: int | None = None, limit_test: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", fast: bool = True, num_workers: int = 0,
                 eval_batch_size: int | None = None, img_size: int | None = None,
                 root: str | Path | None = None, download: bool | None = None):
    """``(train_loader, test_loader, info)`` for any supported dataset.

    ``fast=True`` (in-memory datasets only) gives ``TensorLoader``s with data on ``device``;
    otherwise per-item ``DataLoader``s. ``limit_*`` take a fixed random subset (same for every seed).
    ``img_size`` changes the crop size of the image-folder datasets (Imagenette: 160 by default).
    """
    info = dataset_info(name)
    check_limit(limit_train, "limit_train")
    check_limit(limit_test, "limit_test")
    if img_size is not None and name in ("imagenette", "tiny_imagenet"):
        info = DatasetInfo(**{**asdict(info), "img_size": img_size})
    eval_bs = eval_batch_size or 2 * batch_size
    train: Any  # a TensorImageDataset, an image folder or a Subset of one
    test: Any
    if name in IN_MEMORY:
        train, test = tensor_datasets(name, root, download)
        info = train.info
        train, test = train.subset(limit_train), test.subset(limit_test)
        if fast:
            return (TensorLoader(train, batch_size, shuffle=True, aug=aug, device=device, seed=seed),
                    TensorLoader(test, eval_bs, shuffle=False, device=device), info)
        train.transform = item_transform(aug, info, train=True)
    else:
        build = imagenette if name == "imagenette" else tiny_imagenet
        train = build("train", transform=item_transform(aug, info, train=True), root=root, download=download)
        test = build("val", transform=item_transform(None, info, train=False), root=root, download=download)
        for d in (train, test):
            d.info = info  # read by data_identity
        train, test = (_limit(d, n) for d, n in ((train, limit_train), (test, limit_test)))
    return (make_dataloader(train, batch_size, True, aug, info.num_classes, seed, num_workers, drop_last=False),
            make_dataloader(test, eval_bs, False, None, info.num_classes, seed, num_workers), info)


def _limit(dataset: Any, n: int | None) -> Any:
    check_limit(n)
    if n is None or n >= len(dataset):
        return dataset
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].tolist()
    return torch.utils.data.Subset(dataset, idx)


# ----------------------------------------------------------------------------- what a run trained on

def _fingerprint(*parts: bytes | np.ndarray | torch.Tensor) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else part)
    return h.hexdigest()[:16]


def _describe(ds: object) -> dict | None:
    """``name``, ``source``, ``n``, ``indices`` (positions in the full split) and ``content`` (a hash of the
    images and labels, or of the file names and labels) of a dataset we know; None for anything else."""
    if isinstance(ds, torch.utils.data.Subset):
        base = _describe(ds.dataset)
        if base is None:
            return None
        picked = torch.as_tensor(ds.indices, dtype=torch.int64)
        base_idx = torch.as_tensor(base["indices"], dtype=torch.int64)
        sub = getattr(ds.dataset, "samples", None)
        content = (_fingerprint("\n".join(f"{Path(sub[i][0]).name}\t{sub[i][1]}" for i in picked.tolist()).encode())
                   if sub is not None else base["content"] + ":" + _fingerprint(picked))
        return {**base, "n": len(picked), "indices": base_idx[picked], "content": content}
    if isinstance(ds, TensorImageDataset):
        indices = ds.indices if ds.indices is not None else torch.arange(len(ds))
        return {"name": ds.info.name, "source": ds.source, "n": len(ds), "indices": indices,
                "content": _fingerprint(ds.images, ds.labels)}
    samples = getattr(ds, "samples", None)  # ImageFolder, TinyImageNetVal: (path, label) pairs
    if isinstance(samples, list):
        info = getattr(ds, "info", None)
        return {"name": info.name if info is not None else type(ds).__name__,
                "source": str(Path(getattr(ds, "root", "")).resolve()) if getattr(ds, "root", None) else None,
                "n": len(samples), "indices": torch.arange(len(samples)),
                "content": _fingerprint("\n".join(f"{Path(p).name}\t{t}" for p, t in samples).encode())}
    return None


def data_identity(train: object, test: object) -> dict:
    """What a run trains and evaluates on, from its loaders (or datasets): ``dataset``, ``root`` (the folder
    read), ``n_train``/``n_test``, and per split a fingerprint of the sample ``indices`` (which images of the
    split) and of the ``content`` (their pixels and labels, or file names and labels). ``{}`` for loaders we
    cannot describe (e.g. a list of batches). Checkpoints store it; a resume with other data is refused."""
    described = []
    for obj in (train, test):
        ds = obj if isinstance(obj, Dataset) else getattr(obj, "dataset", None)
        described.append(_describe(ds) if ds is not None else None)
    tr, te = described
    if tr is None or te is None:
        return {}
    return {"dataset": tr["name"], "root": tr["source"], "n_train": tr["n"], "n_test": te["n"],
            "train_indices": _fingerprint(tr["indices"].to(torch.int64)), "train_content": tr["content"],
            "test_indices": _fingerprint(te["indices"].to(torch.int64)), "test_content": te["content"]}
