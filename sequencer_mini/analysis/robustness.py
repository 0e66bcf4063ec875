"""Chapter 10: how accuracy holds up when the test images change: other resolutions, corruptions.

:func:`resize_images` (bilinear, whole image) evaluates at other resolutions; :func:`nearest_valid_size` picks
a side the model accepts. :func:`corrupt` applies one of :data:`CORRUPTIONS` at severity 1-5 with torchvision
transforms, seeded, in the spirit of ImageNet-C (Hendrycks & Dietterich, ICLR 2019); :func:`corruption_error`
normalises errors by a reference model as mCE normalises by AlexNet's. :func:`run_resolution` and
:func:`run_corruption` run the chapter's two experiments on trained models
(:class:`~sequencer_mini.analysis.trained.TrainedModel`, from :func:`~sequencer_mini.analysis.trained.load_race`);
``bench/findings.py`` adds the command line, the sizes per budget and the results files.

Models of different clean accuracy are not directly comparable under corruption: a model that is right more
often on clean images starts ahead on corrupted ones too. So the chapter also compares **checkpoints at matched
clean accuracy**: :func:`test_halves` splits the test set into a *selection* half and an *evaluation* half, and
:func:`matched_checkpoints` picks, for each model, the epoch whose selection accuracy is closest to a common
target (the highest accuracy that every model reaches); the robustness experiments then run on the evaluation
half only, so the choice never sees the images it is judged on.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from sequencer_mini.analysis.trained import epoch_checkpoints, load_trained
from sequencer_mini.core.datasets import MEAN_STD

if TYPE_CHECKING:
    from sequencer_mini.analysis.trained import TrainedModel

__all__ = [
    "resize_images",
    "nearest_valid_size",
    "CORRUPTIONS",
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "corrupt",
    "distortion",
    "corruption_error",
    "accuracy",
    "run_resolution",
    "run_corruption",
    "test_halves",
    "matched_checkpoints",
]

def nearest_valid_size(side: float, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``side`` (ties go up), at least ``multiple``."""
    return max(multiple, int(math.floor(side / multiple + 0.5)) * multiple)


def resize_images(images: Tensor, side: int) -> Tensor:
    """Bilinear resize of ``(N, C, H, W)`` float images to ``side × side`` (antialiased when shrinking).

    The whole image is resampled: nothing is cropped or padded.
    """
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)


#: The corruptions of :func:`corrupt`, in the order of the chapter's tables.
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg", "elastic", "shift")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: Parameter per severity 1-5. Noise, contrast and JPEG use ImageNet-C's values (Hendrycks & Dietterich 2019,
#: ``imagenet_c`` ``corruptions.py``); blur, elastic and shift are set in pixels for 28 × 28 images.
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std of additive noise, images in [0, 1]
    "gaussian_blur": (0.5, 0.7, 0.9, 1.1, 1.3),  # std of the Gaussian kernel, pixels
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor: x -> mean + c (x - mean)
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
    "elastic": (0.5, 0.75, 1.0, 1.5, 2.0),  # RMS length of a smooth random displacement field, pixels
    "shift": (1, 2, 3, 4, 5),  # translation length in pixels, random direction per image
}
ELASTIC_SIGMA = 2.0


def _seed_for(name: str, seed: int) -> int:
    return (seed * 1_000_003 + (CORRUPTIONS.index(name) + 1) * 1009) % (2**62)


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to float images ``(N, C, H, W)`` in ``[0, 1]``.

    Deterministic for a given ``seed``: every random draw comes from a generator (or a forked global RNG)
    seeded with ``(seed, name)``. The severities share that draw and scale it (the same noise pattern, the
    same displacement field, the same shift direction per image, only larger), so the distortion of every
    image grows with the severity. Returns float images in ``[0, 1]`` of the same shape.
    """
    if name not in SEVERITY_PARAMS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {CORRUPTIONS}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"corrupt expects float images (N, C, H, W) in [0, 1], "
                         f"got {images.dtype} {tuple(images.shape)}")
    p = SEVERITY_PARAMS[name][severity - 1]
    s = _seed_for(name, seed)
    g = torch.Generator().manual_seed(s)
    x = images.detach().cpu().clamp(0, 1)
    n, _, height, width = x.shape
    if name == "gaussian_noise":
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG
            torch.manual_seed(s)
            out = TF.gaussian_noise(x, mean=0.0, sigma=float(p), clip=True)
    elif name == "gaussian_blur":
        k = 2 * math.ceil(3 * p) + 1
        out = TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(p), float(p)])
    elif name == "contrast":
        out = TF.adjust_contrast(x, float(p))
    elif name == "jpeg":
        with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec for image codecs
            warnings.simplefilter("ignore", DeprecationWarning)
            out = TF.jpeg((x * 255).round().to(torch.uint8), quality=int(p)).float() / 255
    elif name == "elastic":
        # A smooth random displacement field per image, as torchvision's ElasticTransform draws it (uniform
        # noise blurred with a Gaussian of std ELASTIC_SIGMA), rescaled to an RMS length of p pixels.
        k = int(8 * ELASTIC_SIGMA + 1) | 1
        noise = torch.rand(n, 2, height, width, generator=g) * 2 - 1
        field = TF.gaussian_blur(noise, kernel_size=[k, k], sigma=[ELASTIC_SIGMA, ELASTIC_SIGMA])
        rms = field.pow(2).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True).sqrt()
        field = field / rms * float(p)  # pixels
        # F.elastic adds the field to a grid in [-1, 1] units: one pixel is 2/W horizontally and 2/H vertically.
        field = field * torch.tensor([2 / width, 2 / height]).view(1, 2, 1, 1)
        out = torch.stack([TF.elastic(x[i], rearrange(field[i], "xy h w -> 1 h w xy")) for i in range(n)])
    else:  # shift: an integer translation of length p in a random direction, zero fill (the background)
        angle = torch.rand(n, generator=g) * 2 * math.pi
        dx = torch.round(p * torch.cos(angle)).long().tolist()
        dy = torch.round(p * torch.sin(angle)).long().tolist()
        out = torch.empty_like(x)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, offset in enumerate(zip(dx, dy, strict=True)):
            groups.setdefault(offset, []).append(i)
        for (ox, oy), idx in groups.items():  # one call per distinct offset
            out[idx] = TF.affine(x[idx], angle=0.0, translate=[ox, oy], scale=1.0, shear=[0.0, 0.0], fill=0.0)
    return out.clamp(0, 1).to(images.dtype)


def distortion(clean: Tensor, corrupted: Tensor) -> float:
    """Root-mean-square pixel difference between two image batches in ``[0, 1]``."""
    return float(torch.sqrt(((clean - corrupted) ** 2).mean()))


def corruption_error(errors: dict[str, dict[int, float]], reference: dict[str, dict[int, float]],
                     clean: float | None = None, reference_clean: float | None = None) -> dict[str, Any]:
    """Corruption errors normalised by a reference model, as ImageNet-C's mCE is by AlexNet's.

    ``errors[c][s]`` is the top-1 error (0-1) under corruption ``c`` at severity ``s``. Returns
    ``{"ce": {c: Σ_s E_cs / Σ_s E_cs^ref}, "mce": mean over c}`` (×100 for percent), and when the clean
    errors are given also the *relative* versions, which subtract each model's clean error first.
    A ratio whose reference denominator is not positive (the reference made no error, or no more than on clean
    images: possible on a few test images) is undefined: ``None`` (JSON ``null``), and the means run over the
    corruptions where it is defined (``None`` if none is).
    """
    out: dict[str, Any] = {"ce": {}, "relative_ce": {}}
    for c, by_sev in errors.items():
        sevs = sorted(by_sev)
        ref = sum(reference[c][s] for s in sevs)
        out["ce"][c] = sum(by_sev[s] for s in sevs) / ref if ref > 0 else None
        if clean is not None and reference_clean is not None:
            ref_rel = sum(reference[c][s] - reference_clean for s in sevs)
            own_rel = sum(by_sev[s] - clean for s in sevs)
            out["relative_ce"][c] = own_rel / ref_rel if ref_rel > 0 else None

    def mean(values: dict[str, float | None]) -> float | None:
        defined = [v for v in values.values() if v is not None]
        return statistics.fmean(defined) if defined else None

    out["mce"] = mean(out["ce"])
    out["relative_mce"] = mean(out["relative_ce"])
    return out


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, *, mean: Sequence[float], std: Sequence[float],
             side: int | None = None, batch_size: int = 256) -> float:
    """Top-1 accuracy on float images ``(N, C, H, W)`` in ``[0, 1]``, resized to ``side`` and normalised."""
    param = next(model.parameters())
    device = param.device
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        if side is not None:
            x = resize_images(x, side)
        pred = model((x - m) / s).argmax(-1).cpu()
        correct += int((pred == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def run_resolution(trio: dict[str, TrainedModel], images: Tensor, labels: Tensor, sides: Sequence[int], *,
                   train_side: int = 28, batch_size: int = 256, log: Callable[[str], None] | None = None) -> dict:
    """Accuracy of each model on the test images resized (bilinear, whole image) to each side."""
    mean, std = MEAN_STD["fashion_mnist"]  # the statistics the race models were trained with
    models: dict[str, Any] = {}
    for name, tm in trio.items():
        accs = {}
        for side in sides:
            t0 = time.perf_counter()
            accs[str(side)] = accuracy(tm.model, images, labels, mean=mean, std=std, side=side, batch_size=batch_size)
            if log:
                log(f"resolution {tm.label:<12} {side:>3}px ({side / train_side:.2f}x): "
                    f"{100 * accs[str(side)]:.2f}%  [{time.perf_counter() - t0:.1f}s]")
        models[name] = {**tm.describe(), "accuracy": accs}
    return {"experiment": "resolution", "train_side": train_side, "sides": list(sides),
            "scales": [side / train_side for side in sides], "n_test": len(images),
            "resize": "bilinear, align_corners=False, antialias=True; the whole image is resampled (no crop, no pad)",
            "vit_position_embeddings": "resampled bicubic+antialias to the new grid (timm resample_abs_pos_embed)",
            "models": models}


def run_corruption(trio: dict[str, TrainedModel], images: Tensor, labels: Tensor, *,
                   corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                   reference: str = "small_cnn", seed: int = 0, batch_size: int = 256,
                   log: Callable[[str], None] | None = None) -> dict:
    """Top-1 error of each model under each corruption and severity, and CE / mCE normalised by ``reference``."""
    mean, std = MEAN_STD["fashion_mnist"]  # the statistics the race models were trained with
    clean = {name: 1 - accuracy(tm.model, images, labels, mean=mean, std=std, batch_size=batch_size)
             for name, tm in trio.items()}
    errors: dict[str, dict[str, dict[str, float]]] = {name: {} for name in trio}
    rms: dict[str, dict[str, float]] = {}
    for c in corruptions:
        rms[c] = {}
        for sev in severities:
            t0 = time.perf_counter()
            bad = corrupt(images, c, sev, seed=seed)
            rms[c][str(sev)] = distortion(images, bad)
            for name, tm in trio.items():
                errors[name].setdefault(c, {})[str(sev)] = 1 - accuracy(tm.model, bad, labels, mean=mean, std=std,
                                                                        batch_size=batch_size)
            if log:
                log(f"corruption {c:<15} severity {sev}: " + "  ".join(
                    f"{trio[n].label} err {100 * errors[n][c][str(sev)]:.1f}%" for n in trio)
                    + f"  [{time.perf_counter() - t0:.1f}s]")
    models: dict[str, Any] = {}
    for name, tm in trio.items():
        entry = {**tm.describe(), "clean_error": clean[name], "errors": errors[name]}
        if reference in trio:
            ce = corruption_error({c: {int(s): e for s, e in v.items()} for c, v in errors[name].items()},
                                  {c: {int(s): e for s, e in v.items()} for c, v in errors[reference].items()},
                                  clean[name], clean[reference])
            entry.update({"ce": ce["ce"], "mce": ce["mce"], "relative_ce": ce["relative_ce"],
                          "relative_mce": ce["relative_mce"]})
        entry["mean_corrupted_error"] = statistics.fmean(e for v in errors[name].values() for e in v.values())
        models[name] = entry
    return {"experiment": "corruption", "n_test": len(images), "seed": seed, "reference": reference,
            "corruptions": list(corruptions), "severities": list(severities),
            "severity_params": {c: list(SEVERITY_PARAMS[c]) for c in corruptions},
            "distortion_rms": rms, "models": models}



def test_halves(images: Tensor, labels: Tensor, seed: int = 0) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((selection images, labels), (evaluation images, labels))``: a fixed random split of a test set in two
    halves (the same for every caller with the same ``seed``). ``images (N, C, H, W)``, ``labels (N,)``."""
    if len(images) != len(labels) or len(images) < 2:
        raise ValueError(f"need at least 2 images and one label each, got {len(images)} images, {len(labels)} labels")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    sel, ev = perm[: len(images) // 2], perm[len(images) // 2:]
    return (images[sel], labels[sel]), (images[ev], labels[ev])


def matched_checkpoints(models: Sequence[str], images: Tensor, labels: Tensor, *, seed: int = 0,
                        log: Callable[[str], None] | None = None, **load_kwargs: Any
                        ) -> tuple[dict[str, TrainedModel], dict[str, Any]]:
    """For each race model, the epoch checkpoint whose accuracy on the **selection** images ``(N, 1, 28, 28)`` in
    ``[0, 1]`` is closest to a common target: the smallest over models of each model's best epoch accuracy (the
    highest accuracy every model reaches). Ties go to the earlier epoch. Returns ``(models, selection)``:
    ``selection`` holds the target, every epoch's selection accuracy and the chosen epoch per model."""
    mean, std = MEAN_STD["fashion_mnist"]  # the statistics the race models were trained with
    curves: dict[str, dict[int, float]] = {}
    for name in models:
        curves[name] = {}
        for ck in epoch_checkpoints(name, seed, results_dir=load_kwargs.get("results_dir")):
            if not ck.exists:
                continue
            tm = load_trained(name, seed, checkpoint=ck.checkpoint, fallback="error", log=None, **load_kwargs)
            curves[name][ck.epoch] = accuracy(tm.model, images, labels, mean=mean, std=std)
        if not curves[name]:
            raise FileNotFoundError(f"no epoch checkpoints of {name} (seed {seed}) to match accuracies with: "
                                    f"the race runs write them with --keep-epochs (bench/race.py run)")
    target = min(max(c.values()) for c in curves.values())
    chosen, out = {}, {}
    for name, curve in curves.items():
        epoch = min(curve, key=lambda e: (abs(curve[e] - target), e))
        chosen[name] = {"epoch": epoch, "selection_acc": curve[epoch]}
        out[name] = load_trained(name, seed, checkpoint=f"epoch:{epoch}", fallback="error", log=None, **load_kwargs)
        if log:
            log(f"matched: {out[name].label:<12} epoch {epoch} of {max(curve)}: {100 * curve[epoch]:.2f}% on the "
                f"selection half (target {100 * target:.2f}%)")
    selection = {"target": target, "n_selection": len(images), "seed": seed, "chosen": chosen,
                 "curves": {n: {str(e): a for e, a in c.items()} for n, c in curves.items()},
                 "rule": "per model, the epoch whose selection-half accuracy is closest to the target = the smallest "
                         "of the models' best epoch accuracies (ties: the earlier epoch)"}
    return out, selection
