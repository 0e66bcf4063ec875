"""Chapter 10: how accuracy holds up when the test images change: other resolutions, corruptions.

:func:`resize_images` (bilinear, whole image) evaluates at other resolutions; :func:`nearest_valid_size` picks
a side the model accepts. :func:`corrupt` applies one of :data:`CORRUPTIONS` at severity 1-5 with torchvision
transforms, seeded, in the spirit of ImageNet-C (Hendrycks & Dietterich, ICLR 2019); :func:`corruption_error`
normalises errors by a reference model as mCE normalises by AlexNet's.

**Matched clean accuracy.** Models of different clean accuracy are not directly comparable under corruption: a
model that is right more often on clean images starts ahead on corrupted ones too. So chapter 10 compares each
race run (chapter 6: three models, several seeds, weights saved every quarter pass, and every 1/32 pass in the
first pass of the Sequencer and the CNN, whose accuracy rises fastest there) twice: by its **final** weights, and
by its **matched** snapshot, the snapshot whose accuracy on a *selection* half of the
test set is closest to a common target (:func:`~sequencer_mini.analysis.stats.match_snapshots`: the highest
accuracy level at which every run has a snapshot within 0.5 points). :func:`half_indices` / :func:`test_halves`
split the test set; everything is judged on the other, *evaluation* half, so the choice never sees the images it
is judged on.

:func:`run_findings` runs one experiment (``"resolution"`` or ``"corruption"``) on a list of
:class:`RaceCheckpoints` and stores every outcome per test image (a string of ``0``/``1`` per condition), so that
:func:`claims` can bootstrap over test images *and* seeds (:func:`~sequencer_mini.analysis.stats.bootstrap`) and
compute a verdict for each of the paper's claims. ``bench/findings.py`` adds the command line, the sizes per
budget, a cache and the results files.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from sequencer_mini.analysis.stats import Interval, bootstrap, match_snapshots
from sequencer_mini.analysis.trained import build, load_weights
from sequencer_mini.core.datasets import MEAN_STD
from sequencer_mini.train.recipes import LABELS

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
    "predict_classes",
    "half_indices",
    "test_halves",
    "RaceCheckpoints",
    "untrained_checkpoints",
    "conditions",
    "selection_curve",
    "evaluate_outcomes",
    "same_weights",
    "run_findings",
    "require_seeds",
    "outcome_tensors",
    "accuracies",
    "drop_difference",
    "mce_statistic",
    "Claim",
    "ClaimResult",
    "CLAIMS",
    "claims",
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




# ----------------------------------------------------------------------------- predictions

@torch.no_grad()
def predict_classes(model: nn.Module, images: Tensor, *, mean: Sequence[float], std: Sequence[float],
                    side: int | None = None, batch_size: int = 256) -> Tensor:
    """Predicted classes ``(N,)`` of float images ``(N, C, H, W)`` in ``[0, 1]``, resized to ``side`` and normalised."""
    device = next(model.parameters()).device
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    preds = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            if side is not None:
                x = resize_images(x, side)
            preds.append(model((x - m) / s).argmax(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, *, mean: Sequence[float], std: Sequence[float],
             side: int | None = None, batch_size: int = 256) -> float:
    """Top-1 accuracy on float images ``(N, C, H, W)`` in ``[0, 1]``, resized to ``side`` and normalised."""
    pred = predict_classes(model, images, mean=mean, std=std, side=side, batch_size=batch_size)
    return int((pred == labels).sum()) / max(1, len(images))


def _bits(correct: Tensor) -> str:
    """``(N,)`` booleans as a string of ``0``/``1``: a test image's outcome in one character."""
    return "".join("1" if c else "0" for c in correct.tolist())


def _unbits(text: str) -> Tensor:
    """A string of ``0``/``1`` as float64 ``(N,)`` 0.0/1.0."""
    return (torch.frombuffer(bytearray(text, "ascii"), dtype=torch.uint8) == ord("1")).double()


# ----------------------------------------------------------------------------- the test set in two halves

def half_indices(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(selection, evaluation)`` indices ``(n // 2,)`` and ``(n - n // 2,)``: a fixed random split of ``n`` test
    images (the same for every caller with the same ``seed``)."""
    if n < 2:
        raise ValueError(f"need at least 2 images to split in two halves, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2], perm[n // 2:]


def test_halves(images: Tensor, labels: Tensor, seed: int = 0) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((selection images, labels), (evaluation images, labels))``: a fixed random split of a test set in two
    halves (:func:`half_indices`). ``images (N, C, H, W)``, ``labels (N,)``."""
    if len(images) != len(labels) or len(images) < 2:
        raise ValueError(f"need at least 2 images and one label each, got {len(images)} images, {len(labels)} labels")
    sel, ev = half_indices(len(images), seed)
    return (images[sel], labels[sel]), (images[ev], labels[ev])


# ----------------------------------------------------------------------------- race runs and their checkpoints

Weights = Path | Mapping[str, Tensor]


@dataclass(frozen=True)
class RaceCheckpoints:
    """One race run's weights: its snapshots (images seen -> weights file or state dict) and its final
    weights. ``source``: ``"recorded"`` (files of a finished run), or what stands in for one (``"untrained ..."``)."""

    model: str
    seed: int
    run: str                        # the run folder, relative to the repository (a name for a stand-in)
    snapshots: Mapping[int, Weights]
    final: Weights
    final_images: int
    source: str = "recorded"
    replay: str | None = None       # the folder of the replayed first pass whose denser snapshots are merged in


def untrained_checkpoints(models: Sequence[str], seeds: Sequence[int]) -> list[RaceCheckpoints]:
    """Stand-ins for the race runs where their weights are absent (a fresh clone, the ``ci`` budget): each
    architecture with fresh weights per seed, as one "snapshot" at 0 images and as the final weights. They test the
    code path; their numbers are no result."""
    out = []
    for model in models:
        for seed in seeds:
            state = build(model, seed).state_dict()
            out.append(RaceCheckpoints(model, seed, f"untrained-{model}-s{seed}", {0: state}, state, 0,
                                       "untrained (no race weights here: the code path, not a result)"))
    return out


def _net(model: str, weights: Weights) -> nn.Module:
    net = build(model)
    net.load_state_dict(load_weights(weights) if isinstance(weights, Path) else dict(weights))
    return net.eval()


#: Evaluation cache: ``cache(key, compute)`` returns the stored value for ``key`` or stores ``compute()``.
Cache = Callable[[str, Callable[[], Any]], Any]


def _no_cache(key: str, compute: Callable[[], Any]) -> Any:
    return compute()


def _file_key(weights: Path) -> str:
    """The file as it is now: path, size and modification time."""
    st = weights.stat()
    return f"{weights.as_posix()}:{st.st_size}:{st.st_mtime_ns}"


_content_keys: dict[str, str] = {}


def _content_key(weights: Path) -> str:
    """A hash of the weights themselves (the state dict :func:`load_weights` returns), so that a file rewritten with
    the same weights (e.g. stripped of its EMA copies before a commit) keeps its cached evaluations."""
    file_key = _file_key(weights)
    if file_key not in _content_keys:
        state = load_weights(weights)
        h = hashlib.sha256()
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        _content_keys[file_key] = h.hexdigest()
    return _content_keys[file_key]


def _cached(cache: Cache, weights: Weights, what: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` through ``cache``, keyed by the weights' content (weights in memory are not cached); an entry
    stored under the file's path, size and time (this module's earlier key) is still found."""
    if not isinstance(weights, Path):
        return compute()

    def key(base: str) -> str:
        return hashlib.sha256(f"{base}|{what}".encode()).hexdigest()[:32]

    return cache(key(f"content:{_content_key(weights)}"), lambda: cache(key(_file_key(weights)), compute))


# ----------------------------------------------------------------------------- conditions and outcomes

def conditions(part: Literal["resolution", "corruption"], images: Tensor, *, sides: Sequence[int] = (28, 56),
               corruptions: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
               seed: int = 0) -> dict[str, tuple[Tensor, int | None]]:
    """Condition name -> (images ``(N, 1, H, W)`` in ``[0, 1]``, side to resize to or None).

    ``resolution``: ``"28"``, ``"56"``, ... (the whole image resized to that side); ``corruption``: ``"clean"`` and
    ``"<corruption>/<severity>"`` (:func:`corrupt` with ``seed``), in the order of the arguments."""
    if part == "resolution":
        return {str(side): (images, side) for side in sides}
    if part != "corruption":
        raise ValueError(f"part must be 'resolution' or 'corruption', got {part!r}")
    out: dict[str, tuple[Tensor, int | None]] = {"clean": (images, None)}
    for c in corruptions:
        for sev in severities:
            out[f"{c}/{sev}"] = (corrupt(images, c, sev, seed=seed), None)
    return out


def _outcomes(model: str, weights: Weights, conds: Mapping[str, tuple[Tensor, int | None]], labels: Tensor,
              batch_size: int) -> dict[str, str]:
    mean, std = MEAN_STD["fashion_mnist"]  # the statistics the race models were trained with
    net = _net(model, weights)
    return {name: _bits(predict_classes(net, x, mean=mean, std=std, side=side, batch_size=batch_size) == labels)
            for name, (x, side) in conds.items()}


def _fingerprint(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def selection_curve(run: RaceCheckpoints, selection: tuple[Tensor, Tensor], *,
                    given: Mapping[int, float] | None = None, cache: Cache = _no_cache,
                    batch_size: int = 256) -> dict[int, float]:
    """Images seen -> accuracy of each snapshot of ``run`` on the ``selection`` images ``(N, 1, 28, 28)`` in
    ``[0, 1]`` and labels ``(N,)``; accuracies in ``given`` (e.g. from the run's ``predictions.json``) are taken as
    they are."""
    mean, std = MEAN_STD["fashion_mnist"]  # the statistics the race models were trained with
    sel_x, sel_y = selection
    tag = f"selection|{len(sel_y)}|{_fingerprint(sel_y)}"
    curve = {}
    for images_seen, weights in sorted(run.snapshots.items()):
        if given is not None and images_seen in given:
            curve[images_seen] = float(given[images_seen])
            continue

        def score(w: Weights = weights, model: str = run.model) -> float:
            return accuracy(_net(model, w), sel_x, sel_y, mean=mean, std=std, batch_size=batch_size)

        curve[images_seen] = _cached(cache, weights, tag, score)
    return curve


def same_weights(a: Weights, b: Weights) -> bool:
    """Whether two weights files (or state dicts) hold the same tensors, e.g. a run's last snapshot and its final
    weights: then one evaluation serves both."""
    if a is b:
        return True
    sa, sb = (load_weights(w) if isinstance(w, Path) else w for w in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def evaluate_outcomes(model: str, weights: Weights, conds: Mapping[str, tuple[Tensor, int | None]], labels: Tensor,
                      *, spec: str = "", cache: Cache = _no_cache, batch_size: int = 256) -> dict[str, str]:
    """Condition -> the outcome per image (``"0110..."``: wrong/right) of ``model`` with ``weights`` on the images of
    each of ``conds`` (:func:`conditions`) against ``labels (N,)``. ``spec`` names the conditions for the cache."""
    key = f"outcomes|{spec}|{list(conds)}|{len(labels)}|{_fingerprint(labels)}"
    return _cached(cache, weights, key, lambda: _outcomes(model, weights, conds, labels, batch_size))


def run_findings(part: Literal["resolution", "corruption"], runs: Sequence[RaceCheckpoints],
                 selection: tuple[Tensor, Tensor], evaluation: tuple[Tensor, Tensor], *,
                 sides: Sequence[int] = (28, 56), corruptions: Sequence[str] = CORRUPTIONS,
                 severities: Sequence[int] = SEVERITIES, corruption_seed: int = 0, tolerance: float = 0.005,
                 selection_accs: Mapping[tuple[str, int], Mapping[int, float]] | None = None,
                 cache: Cache = _no_cache, batch_size: int = 256,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One of chapter 10's robustness experiments on the race runs, at matched clean accuracy and as trained.

    1. Each run's snapshots are scored on the ``selection`` images ``(N, 1, 28, 28)`` in ``[0, 1]`` (or read from
       ``selection_accs[(model, seed)][images_seen]``, e.g. from the runs' ``predictions.json``) and
       :func:`~sequencer_mini.analysis.stats.match_snapshots` picks one per run (target, residuals, within
       ``tolerance``).
    2. The matched snapshot and the final weights of every run are evaluated on the ``evaluation`` images under
       every condition of :func:`conditions`; every outcome is stored per image: ``outcomes[kind][model][seed]
       [condition]`` is a string of ``0``/``1`` (wrong/right), ``kind`` in ``("matched", "final")``.

    Returns a JSON-ready dict (seeds and images seen as strings) with the :func:`claims` of both kinds."""
    say = log or (lambda msg: None)
    sel_y = selection[1]
    ev_x, ev_y = evaluation
    curves: dict[tuple[str, int], dict[int, float]] = {}
    for r in runs:
        curves[(r.model, r.seed)] = selection_curve(r, selection, given=(selection_accs or {}).get((r.model, r.seed)),
                                                    cache=cache, batch_size=batch_size)
        say(f"selection {r.run}: " + " ".join(f"{k}:{100 * v:.2f}" for k, v in curves[(r.model, r.seed)].items()))
    match = match_snapshots(curves, tolerance)
    say(f"matched target {100 * match.target:.2f} % on {len(sel_y):,} selection images; every run within "
        f"{100 * tolerance:.1f} points: {match.within}")

    conds = conditions(part, ev_x, sides=sides, corruptions=corruptions, severities=severities, seed=corruption_seed)
    spec = f"{part}|corruption seed {corruption_seed}"
    outcomes: dict[str, dict[str, dict[str, dict[str, str]]]] = {"matched": {}, "final": {}}
    for r in runs:
        chosen_images = match.chosen[(r.model, r.seed)][0]
        result: dict[str, str] = {}
        for kind, weights in (("matched", r.snapshots[chosen_images]), ("final", r.final)):
            t0 = time.perf_counter()
            if kind == "matched" or not same_weights(weights, r.snapshots[chosen_images]):  # the last snapshot
                result = evaluate_outcomes(r.model, weights, conds, ev_y, spec=spec, cache=cache,
                                           batch_size=batch_size)
            outcomes[kind].setdefault(r.model, {})[str(r.seed)] = result
            say(f"{part} {kind:<7} {r.run}: " + " ".join(
                f"{c}:{100 * v.count('1') / max(1, len(v)):.1f}" for c, v in list(result.items())[:6])
                + f"  [{time.perf_counter() - t0:.0f}s]")

    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for (model, seed), (images_seen, acc) in match.chosen.items():
        chosen.setdefault(model, {})[str(seed)] = {"images_seen": images_seen, "selection_acc": acc,
                                                   "residual": acc - match.target}
    runs_info: dict[str, dict[str, Any]] = {}
    for r in runs:
        info = runs_info.setdefault(r.model, {"label": LABELS.get(r.model, r.model), "seeds": {}})
        info["seeds"][str(r.seed)] = {"run": r.run, "source": r.source, "final_images": r.final_images,
                                      "snapshots": sorted(r.snapshots), "replay": r.replay}
    fallbacks = sorted({r.source for r in runs if r.source != "recorded"})
    payload: dict[str, Any] = {
        "experiment": part, "conditions": list(conds), "n_selection": len(sel_y), "n_eval": len(ev_y),
        "source": "FALLBACK: " + "; ".join(fallbacks) if fallbacks else "recorded",
        "runs": runs_info,
        "match": {"target": match.target, "tolerance": tolerance, "within": match.within,
                  "max_abs_residual": max(abs(v) for v in match.residuals.values()), "chosen": chosen,
                  "curves": {m: {str(s): {str(k): v for k, v in c.items()} for (mm, s), c in curves.items() if mm == m}
                             for m in runs_info},
                  "rule": "per run, the snapshot whose selection-half accuracy is closest to the target "
                          "= the highest accuracy reached by a snapshot, at most the smallest of the runs' best, at "
                          "which every run has a snapshot within the tolerance (else the smallest largest residual); "
                          "ties: the earlier snapshot (sequencer_mini.analysis.stats.match_snapshots)"},
        "outcomes": outcomes,
    }
    if part == "resolution":
        payload.update({"train_side": 28, "sides": list(sides),
                        "resize": "bilinear, align_corners=False, antialias=True; the whole image is resampled "
                                  "(no crop, no pad)",
                        "vit_position_embeddings": "resampled bicubic+antialias to the new grid "
                                                   "(timm resample_abs_pos_embed)"})
    else:
        payload.update({"corruptions": list(corruptions), "severities": list(severities), "seed": corruption_seed,
                        "reference": "small_cnn",
                        "severity_params": {c: list(SEVERITY_PARAMS[c]) for c in corruptions},
                        "distortion_rms": {c: {str(s): distortion(ev_x, conds[f"{c}/{s}"][0]) for s in severities}
                                           for c in corruptions}})
    payload["claims"] = {kind: [c.to_dict() for c in claims(payload, kind)] for kind in ("matched", "final")}
    return payload


# ----------------------------------------------------------------------------- from outcomes to intervals

def require_seeds(seeds: Mapping[str, Sequence[int]], minimum: int = 2,
                  missing_runs: Mapping[str, Sequence[str]] | None = None) -> None:
    """Refuse an interval over seeds with fewer than ``minimum`` seeds of a model: the error names the models, the
    runs that are missing (``missing_runs[model]``, run folders) and the command that makes them."""
    short = {m: list(s) for m, s in seeds.items() if len(s) < minimum}
    if not short:
        return
    lines = [f"{m}: {len(s)} finished seed(s) {s}" + (f"; missing runs: {', '.join(missing_runs[m])}"
                                                      if missing_runs and missing_runs.get(m) else "")
             for m, s in short.items()]
    raise ValueError(f"chapter 10's intervals need at least {minimum} seeds per model (seeds are one source of "
                     f"chance, and one seed hides it): " + "; ".join(lines)
                     + ". Train them with: python bench/experiments.py run (chapter 6's race; it resumes), then "
                       "rerun bench/findings.py")


def outcome_tensors(outcomes: Mapping[str, Mapping[str, Mapping[str, str]]], conds: Sequence[str],
                    minimum_seeds: int = 1) -> dict[str, Tensor]:
    """Stored outcomes ``{model: {seed: {condition: "0110..."}}}`` as ``{model: (seeds, images, conditions)}``
    1.0/0.0 tensors, conditions in the order of ``conds`` (for :func:`~sequencer_mini.analysis.stats.bootstrap`)."""
    require_seeds({m: sorted(int(s) for s in by_seed) for m, by_seed in outcomes.items()}, minimum_seeds)
    out = {}
    for model, by_seed in outcomes.items():
        rows = []
        for seed in sorted(by_seed, key=int):
            missing = [c for c in conds if c not in by_seed[seed]]
            if missing:
                raise ValueError(f"{model} seed {seed}: no outcomes for conditions {missing}; rerun bench/findings.py")
            rows.append(torch.stack([_unbits(by_seed[seed][c]) for c in conds], dim=1))
        lengths = {r.shape[0] for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"{model}: the seeds were evaluated on different numbers of images {sorted(lengths)}")
        out[model] = torch.stack(rows)
    return out


def accuracies(outcomes: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {seed: {condition: accuracy}}}`` from stored outcome strings."""
    return {m: {s: {c: v.count("1") / max(1, len(v)) for c, v in by_c.items()} for s, by_c in by_seed.items()}
            for m, by_seed in outcomes.items()}


def drop_difference(model: str, other: str, near: int = 0, far: int = -1
                    ) -> Callable[[Mapping[str, Tensor]], float]:
    """Statistic on ``{model: (images, conditions)}``: ``model``'s accuracy drop from condition ``near`` to ``far``
    (e.g. 28 px to 56 px) minus ``other``'s, in points. Negative: ``model`` loses less."""
    def stat(drawn: Mapping[str, Tensor]) -> float:
        drop = {k: float(drawn[k][:, near].mean() - drawn[k][:, far].mean()) for k in (model, other)}
        return 100 * (drop[model] - drop[other])
    stat.__name__ = f"drop({model}) - drop({other})"
    return stat


def mce_statistic(model: str, reference: str, conds: Sequence[str], *, other: str | None = None,
                  relative: bool = False) -> Callable[[Mapping[str, Tensor]], float]:
    """Statistic on ``{model: (images, conditions)}`` (conditions ``conds``: ``"clean"`` and
    ``"<corruption>/<severity>"``): ``model``'s mCE (or relative mCE) normalised by ``reference``, in percent, or,
    with ``other``, ``model``'s minus ``other``'s. NaN where it is undefined (:func:`corruption_error`)."""
    index = {c: i for i, c in enumerate(conds)}
    clean_i = index["clean"]

    def errors(x: Tensor) -> tuple[dict[str, dict[int, float]], float]:
        err = 1 - x.mean(0)
        out: dict[str, dict[int, float]] = {}
        for c, i in index.items():
            if c != "clean":
                name, sev = c.split("/")
                out.setdefault(name, {})[int(sev)] = float(err[i])
        return out, float(err[clean_i])

    key = "relative_mce" if relative else "mce"

    def value(drawn: Mapping[str, Tensor], who: str) -> float:
        (own, own_clean), (ref, ref_clean) = errors(drawn[who]), errors(drawn[reference])
        v = corruption_error(own, ref, own_clean, ref_clean)[key]
        return math.nan if v is None else 100 * v

    def stat(drawn: Mapping[str, Tensor]) -> float:
        return value(drawn, model) - (value(drawn, other) if other is not None else 0.0)
    stat.__name__ = f"{key}({model})" + (f" - {key}({other})" if other else "")
    return stat


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as chapter 10 tests it: a statistic of the stored outcomes, the side the claim
    predicts, and (after :func:`claims`) its bootstrap interval and verdict."""

    key: str
    part: str
    text: str               # the claim, as the chapter states it
    statistic: str          # what is computed, with its unit
    expected: Literal["positive", "negative"]
    threshold: float
    make: Callable[[Sequence[str]], Callable[[Mapping[str, Tensor]], float]]


@dataclass(frozen=True)
class ClaimResult:
    """A claim's interval over seeds and evaluation images, and the verdict it supports."""

    key: str
    kind: str               # "matched" or "final"
    text: str
    statistic: str
    expected: str
    threshold: float
    interval: Interval
    verdict: str            # holds | reversed | inconclusive

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "text": self.text, "statistic": self.statistic,
                "expected": self.expected, "threshold": self.threshold, "verdict": self.verdict,
                "interval": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in self.interval.to_dict().items()}}  # undefined: null, as JSON has no NaN


def _drop(other: str) -> Callable[[Sequence[str]], Callable[[Mapping[str, Tensor]], float]]:
    return lambda conds: drop_difference("sequencer2d_fast28", other)


#: The paper's claims that sections 4 and 5 of chapter 10 test, with the direction each predicts.
CLAIMS: tuple[Claim, ...] = (
    Claim("res_vs_vit", "resolution", "tested at twice the training side, the Sequencer loses less accuracy than "
          "the ViT", "accuracy drop from 28 px to the largest side, Sequencer minus ViT (points)", "negative", 0.0,
          _drop("small_vit")),
    Claim("res_vs_cnn", "resolution", "tested at twice the training side, the Sequencer loses less accuracy than "
          "the CNN", "accuracy drop from 28 px to the largest side, Sequencer minus CNN (points)", "negative", 0.0,
          _drop("small_cnn")),
    Claim("mce_vs_vit", "corruption", "under corruptions the Sequencer errs less than the ViT (mCE, both normalised "
          "by the CNN)", "mCE of the Sequencer minus mCE of the ViT (points of %)", "negative", 0.0,
          lambda conds: mce_statistic("sequencer2d_fast28", "small_cnn", conds, other="small_vit")),
    Claim("mce_vs_cnn", "corruption", "under corruptions the Sequencer errs less than the CNN (mCE below 100 %)",
          "mCE of the Sequencer, CNN = 100 (%)", "negative", 100.0,
          lambda conds: mce_statistic("sequencer2d_fast28", "small_cnn", conds)),
    Claim("rmce_vs_vit", "corruption", "under corruptions the Sequencer loses less than the ViT beyond its clean "
          "error (relative mCE)", "relative mCE of the Sequencer minus the ViT's (points of %)", "negative", 0.0,
          lambda conds: mce_statistic("sequencer2d_fast28", "small_cnn", conds, other="small_vit", relative=True)),
)


def claims(data: Mapping[str, Any], kind: Literal["matched", "final"] = "matched", *, n_boot: int = 2000,
           level: float = 0.95, seed: int = 0, minimum_seeds: int = 1) -> list[ClaimResult]:
    """Every claim of :data:`CLAIMS` for the experiment in ``data`` (a :func:`run_findings` payload or its results
    file), on the ``kind`` checkpoints: the hierarchical bootstrap interval over seeds and evaluation images
    (:func:`~sequencer_mini.analysis.stats.bootstrap`, paired on images) and the verdict it supports. An interval
    that is undefined (NaN: a ratio with no reference error, a few test images) is ``inconclusive``."""
    part = data["experiment"]
    conds = list(data["conditions"])
    tensors = outcome_tensors(data["outcomes"][kind], conds, minimum_seeds)
    out = []
    for claim in CLAIMS:
        if claim.part != part:
            continue
        iv = bootstrap(tensors, claim.make(conds), n_boot=n_boot, level=level, seed=seed)
        defined = all(math.isfinite(v) for v in (iv.low, iv.high))
        verdict = iv.verdict(claim.expected, claim.threshold) if defined else "inconclusive"
        out.append(ClaimResult(claim.key, kind, claim.text, claim.statistic, claim.expected, claim.threshold, iv,
                               verdict))
    return out
