"""sequencer_mini.train.data: readers, error paths, loaders and augmentations on generated fixtures."""
from __future__ import annotations

import gzip
import pickle

import pytest
import torch
from fixtures import make_cifar_tree, make_idx_tree, make_image_folder, make_tiny_imagenet_tree, single_thread  # noqa: F401

from sequencer_mini.train import data
from sequencer_mini.train.data import (
    AugmentConfig,
    DataNotFoundError,
    TensorImageDataset,
    TensorLoader,
    dataset_info,
    read_cifar,
    read_idx,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No $SEQUENCER_DATA, no Debian package folder, an empty cache, no downloads."""
    monkeypatch.delenv("SEQUENCER_DATA", raising=False)
    monkeypatch.setenv("SEQUENCER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEQUENCER_OFFLINE", "1")
    monkeypatch.setattr(data, "FMNIST_SYSTEM_DIR", tmp_path / "no-debian-package")


# ----------------------------------------------------------------------------- IDX / Fashion-MNIST

@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz, no_system_data):
    make_idx_tree(tmp_path, n_train=30, n_test=10, gz=gz)
    x, y = data.load_fashion_mnist("train", root=tmp_path)
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.uint8
    assert y.tolist() == [i % 10 for i in range(30)] and y.dtype == torch.int64


def test_env_var_is_searched(tmp_path, monkeypatch, no_system_data):
    make_idx_tree(tmp_path / "fm")
    monkeypatch.setenv("SEQUENCER_DATA", str(tmp_path))  # sub-folder "fashion-mnist" or the folder itself
    (tmp_path / "fm").rename(tmp_path / "fashion-mnist")
    assert data.find_fashion_mnist() == tmp_path / "fashion-mnist"


def test_missing_offline_names_paths_and_fix(tmp_path, no_system_data):
    with pytest.raises(DataNotFoundError) as err:  # the default search (no folder named)
        data.load_fashion_mnist("train", download=False)
    msg = str(err.value)
    assert str(tmp_path / "cache") in msg and str(tmp_path / "no-debian-package") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "SEQUENCER_DATA" in msg
    assert "download disabled" in msg


def test_truncated_idx(tmp_path, no_system_data):
    make_idx_tree(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    full = path.read_bytes()
    path.write_bytes(full[:-100])
    with pytest.raises(ValueError, match=rf"{path}.*expected {len(full)} bytes.*is {len(full) - 100} bytes"):
        read_idx(path)


def test_truncated_gzip(tmp_path, no_system_data):
    make_idx_tree(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_of_truncated_payload(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + bytes(7)))
    with pytest.raises(ValueError, match="expected 18 bytes, but the decompressed size is 15"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x50\x4b\x03\x04" + bytes(100))  # a zip file, say
    with pytest.raises(ValueError, match=rf"{path}: not an IDX file: magic number 504b0304"):
        read_idx(path)


def test_labels_and_images_disagree(tmp_path, no_system_data):
    make_idx_tree(tmp_path, n_train=30, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\0\0\x08\x01" + (29).to_bytes(4, "big") + bytes(29))
    with pytest.raises(ValueError, match="expected 30 labels"):
        data.load_fashion_mnist("train", root=tmp_path)


def test_real_fashion_mnist_if_installed():
    folder = data.FMNIST_SYSTEM_DIR
    if not (folder / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    x, y = data.load_fashion_mnist("test", root=folder)
    assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("cifar100", [False, True])
def test_cifar_tree(tmp_path, cifar100):
    make_cifar_tree(tmp_path, n_per_batch=6, cifar100=cifar100)
    name = "cifar100" if cifar100 else "cifar10"
    x, y, classes = read_cifar(tmp_path, name, train=True)
    assert x.shape == ((6 if cifar100 else 30), 3, 32, 32) and x.dtype == torch.uint8
    assert len(classes) == (100 if cifar100 else 10) and int(y.max()) < len(classes)
    xt, _, _ = read_cifar(tmp_path, name, train=False)
    assert len(xt) == 6


def test_cifar_pixel_layout(tmp_path):
    """Each row of 'data' holds the 1024 red values, then green, then blue, each row-major 32x32."""
    make_cifar_tree(tmp_path, n_per_batch=2)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    x, _, _ = read_cifar(tmp_path, "cifar10")
    assert x[0, 1, 0, 5] == raw[0, 1024 + 5] and x[1, 2, 31, 31] == raw[1, 3071]


def test_cifar_corrupt_pickle(tmp_path):
    make_cifar_tree(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=rf"{path}: not a readable CIFAR python-pickle batch"):
        read_cifar(tmp_path, "cifar10")


def test_cifar_pickle_may_not_run_code(tmp_path):
    make_cifar_tree(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(ValueError, match="builtins.print is not allowed"):
        read_cifar(tmp_path, "cifar10", train=False)


def test_cifar_wrong_shape(tmp_path):
    make_cifar_tree(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    batch["data"] = batch["data"][:, :1000]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_1: key 'data' must be a uint8 array \(N, 3072\), "
                                         r"got uint8 \(10, 1000\)"):
        read_cifar(tmp_path, "cifar10")


def test_cifar_missing_offline(tmp_path, no_system_data):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        data.find_cifar("cifar10", root=tmp_path, download=False)


def test_cifar_tensor_datasets(tmp_path, no_system_data):
    make_cifar_tree(tmp_path, n_per_batch=4)
    train, test = data.tensor_datasets("cifar10", root=tmp_path)
    assert len(train) == 20 and len(test) == 4 and train.info.classes[0] == "class0"
    img, label = train[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and isinstance(label, int)


# ----------------------------------------------------------------------------- image folders

def test_image_folder(tmp_path):
    make_image_folder(tmp_path, ["b", "a"], per_class=2)
    ds = data.image_folder(tmp_path)
    assert ds.classes == ["a", "b"] and len(ds) == 4


def test_empty_image_folder_class(tmp_path):
    make_image_folder(tmp_path, ["cat", "dog"], per_class=1)
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=rf"class folder\(s\) with no image files.*{tmp_path / 'emu'}"):
        data.image_folder(tmp_path)


def test_image_folder_without_classes(tmp_path):
    with pytest.raises(ValueError, match="one sub-folder per class"):
        data.image_folder(tmp_path)


def test_imagenette_tree_and_imagenet_map(tmp_path, no_system_data):
    for split in ("train", "val"):
        make_image_folder(tmp_path / "imagenette2-160" / split, list(data.IMAGENETTE_WNIDS), per_class=1, ext=".JPEG")
    tf = data.item_transform(None, dataset_info("imagenette"), train=False)
    ds = data.imagenette("val", transform=tf, root=tmp_path)
    x, y = ds[3]
    assert ds.classes == list(data.IMAGENETTE_WNIDS) and x.shape == (3, 160, 160) and y == 3
    assert list(data.IMAGENETTE_TO_IMAGENET) == sorted(data.IMAGENETTE_TO_IMAGENET)


def test_imagenette_indices_match_timm():
    timm_data = pytest.importorskip("timm.data")
    names = timm_data.ImageNetInfo().label_names()
    assert [names.index(w) for w in data.IMAGENETTE_WNIDS] == list(data.IMAGENETTE_TO_IMAGENET)


def test_tiny_imagenet_tree(tmp_path, no_system_data):
    wnids = ["n02", "n01", "n03"]
    make_tiny_imagenet_tree(tmp_path, wnids, per_class=2, val_per_class=1)
    train = data.tiny_imagenet("train", root=tmp_path)
    val = data.tiny_imagenet("val", root=tmp_path)
    assert train.classes == val.classes == ["n01", "n02", "n03"] and len(train) == 6 and len(val) == 3
    # val_0 is annotated with wnids[0] = "n02", index 1 in sorted order
    assert val.samples[0][0].endswith("val_0.JPEG") and val[0][1] == 1 and val[0][0].size == (64, 64)


def test_tiny_imagenet_bad_annotation(tmp_path, no_system_data):
    make_tiny_imagenet_tree(tmp_path, ["n01", "n02"])
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:3: .*'val_9.JPEG\\tn99"):
        data.tiny_imagenet("val", root=tmp_path)


def test_image_tree_missing_offline(tmp_path, no_system_data):
    with pytest.raises(DataNotFoundError, match="(?s)tiny-imagenet-200.*download disabled"):
        data.tiny_imagenet("train")  # default search: the (empty) cache, then no download
    with pytest.raises(DataNotFoundError, match="(?s)tiny-imagenet-200.*in the data root.*nothing else is searched"):
        data.tiny_imagenet("train", root=tmp_path)


# ----------------------------------------------------------------------------- loaders and augmentation

def _toy(n=50, c=1, s=28):
    g = torch.Generator().manual_seed(0)
    info = dataset_info("fashion_mnist") if c == 1 else dataset_info("cifar10")
    return TensorImageDataset(torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g),
                              torch.arange(n) % 10, info)


def test_tensor_loader_order_is_pure_function_of_seed_and_epoch():
    loader = TensorLoader(_toy(), batch_size=16, shuffle=True, aug=AugmentConfig.preset("paper"), seed=3)
    torch.manual_seed(0)
    loader.set_epoch(2)
    first = [(x.clone(), y.clone()) for x, y in loader]
    torch.manual_seed(123)  # the global RNG must not matter ...
    torch.rand(7)
    second = list(loader)
    assert len(first) == len(loader) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    loader.set_epoch(3)  # ... but the epoch does
    assert not torch.equal(next(iter(loader))[0], first[0][0])


def test_tensor_loader_leaves_global_rng_alone():
    loader = TensorLoader(_toy(), batch_size=16, shuffle=True, aug=AugmentConfig.preset("paper"))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(loader)
    assert torch.equal(torch.rand(3), expected)


def test_no_aug_is_plain_normalisation():
    ds = _toy()
    x, y = next(iter(TensorLoader(ds, batch_size=8)))
    mean, std = ds.info.mean[0], ds.info.std[0]
    assert torch.allclose(x, (ds.images[:8].float() / 255 - mean) / std, atol=1e-5)
    assert torch.equal(y, ds.labels[:8])
    assert torch.allclose(ds[0][0], x[0], atol=1e-5)  # the per-item path agrees


def test_crop_flip_moves_pixels_but_keeps_shape():
    ds = _toy(c=3, s=32)
    aug = AugmentConfig(crop_padding=4, hflip=True)
    x, _ = next(iter(TensorLoader(ds, batch_size=16, aug=aug)))
    plain, _ = next(iter(TensorLoader(ds, batch_size=16)))
    assert x.shape == plain.shape == (16, 3, 32, 32) and not torch.equal(x, plain)


def test_crop_is_a_shifted_window():
    ds = TensorImageDataset(torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(8, 1, 1, 1),
                            torch.zeros(8, dtype=torch.long), dataset_info("fashion_mnist"))
    loader = TensorLoader(ds, batch_size=8, aug=AugmentConfig(crop_padding=1))
    g = torch.Generator().manual_seed(0)
    crops = loader._crop_flip(ds.images, g)
    padded = torch.nn.functional.pad(ds.images, (1, 1, 1, 1))
    windows = {padded[0, 0, i:i + 4, j:j + 4].numpy().tobytes() for i in range(3) for j in range(3)}
    assert all(c[0].numpy().tobytes() in windows for c in crops)


def test_per_image_augmentation_runs_on_cpu():
    """RandAugment / random erasing are per-image loops: batches are built on the CPU, then moved."""
    assert TensorLoader(_toy(), 8, aug=AugmentConfig.preset("paper"), device="cpu").data_device.type == "cpu"
    light = TensorLoader(_toy(), 8, aug=AugmentConfig.preset("light"), device="meta")
    assert light.data_device.type == "meta" and light.images.device.type == "meta"
    paper = TensorLoader(_toy(), 8, aug=AugmentConfig.preset("paper"), device="meta")
    assert paper.data_device.type == "cpu" and paper.images.device.type == "cpu"


def test_mixup_cutmix_give_soft_targets():
    aug = AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0)
    x, y = next(iter(TensorLoader(_toy(), batch_size=16, shuffle=True, aug=aug)))
    assert y.shape == (16, 10) and torch.allclose(y.sum(1), torch.ones(16))


def test_dataloader_path_matches_epoch_contract():
    ds = _toy()
    ds.transform = data.item_transform(AugmentConfig.preset("light"), ds.info, train=True)
    dl = data.make_dataloader(ds, 16, shuffle=True, aug=AugmentConfig.preset("light"), num_classes=10, seed=1)
    dl.set_epoch(1)
    a = [y for _, y in dl]
    dl.set_epoch(1)
    b = [y for _, y in dl]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True)) and sum(len(y) for y in a) == 50


def test_augment_preset_errors():
    with pytest.raises(ValueError, match="one of \\['none', 'flip', 'light', 'paper'\\], got 'heavy'"):
        AugmentConfig.preset("heavy")


def test_make_loaders_fmnist_fixture(tmp_path, no_system_data):
    make_idx_tree(tmp_path, n_train=40, n_test=20)
    train, test, info = data.make_loaders("fashion_mnist", 16, AugmentConfig.preset("light"),
                                          limit_train=32, root=tmp_path)
    assert info.in_chans == 1 and len(train.dataset) == 32 and len(test.dataset) == 20
    x, y = next(iter(train))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32


def test_imagenet_eval_transform_is_timms_pil_pipeline():
    """Resize (PIL bicubic, short side 256) and centre crop act on the PIL image, as timm's eval transform."""
    import numpy as np
    from PIL import Image

    from sequencer_mini.train.data import MEAN_STD, imagenet_eval_transform

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 410, 3), dtype=np.uint8))
    x = imagenet_eval_transform(224)(photo)
    resized = photo.resize((int(256 * 410 / 300), 256), Image.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    ref = torch.from_numpy(np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255)
    mean, std = (torch.tensor(v)[:, None, None] for v in MEAN_STD["imagenet"])
    torch.testing.assert_close(x.as_subclass(torch.Tensor), (ref.permute(2, 0, 1) - mean) / std, rtol=0, atol=1e-5)


def test_every_preset_name_builds_and_the_cli_offers_exactly_those():
    from sequencer_mini.train.cli import build_parser
    from sequencer_mini.train.data import AUG_PRESETS

    assert all(isinstance(AugmentConfig.preset(name), AugmentConfig) for name in AUG_PRESETS)
    aug_action = next(a for a in build_parser()._actions if a.dest == "aug")
    assert tuple(aug_action.choices) == AUG_PRESETS
