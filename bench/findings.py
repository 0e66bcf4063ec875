"""The findings chapter's experiments: resolution robustness, corruptions and ablations, with provenance.

Parts (each writes its own results file, ``OUT/findings-<part>.json``):

``resolution``
    The race's models (Sequencer2D fast28, CNN, ViT) trained at 28×28, evaluated on test images resized to
    larger sides. 1.5× would be 42 px, which is not a multiple of 4 (the Sequencer and the ViT need whole
    tokens of 4 × 4 pixels), so the sweep uses multiples of 4 only: 44 px (≈1.57×) stands in for 1.5×.
    Images are resized whole, never cropped.
``corruption``
    The race's models under six corruptions at severities 1-5 (``sequencer_mini.analysis.robustness.corrupt``), with the
    corruption error normalised by the CNN's, as ImageNet-C's mCE is by AlexNet's.
``ablation``
    The Sequencer2D ablations (``sequencer_mini.analysis.ablations.ABLATIONS``, variants of ``sequencer2d_fast28``)
    trained with one fixed recipe, once per seed (at ``cpu``: two passes over the 60,000 training images, scored on
    all 10,000 test images after the last); mean ± std and the paired difference to the baseline.

Both parts run twice on the second (evaluation) half of the test set: on the race's final models, and on the
epoch checkpoints at which the three models reach a matched clean accuracy on the first (selection) half
(``sequencer_mini.analysis.robustness.matched_checkpoints``), so that a robustness difference is not a difference in
clean accuracy in disguise.

The models are the training chapter's race (``book/results/fmnist-race-<model>-s<seed>/final.pt``), loaded
with ``sequencer_mini.analysis.trained.load_race``; when weights are missing, its one fallback policy applies (the same
recipe trained here at the current budget, the results say ``FALLBACK``; ``--fallback error`` stops instead).

Usage::

    python bench/findings.py                            # every part, current budget (cpu on a CPU machine)
    python bench/findings.py --part ablation            # one part
    python bench/findings.py --budget ci --out-dir /tmp/f  # the tiny version of everything (seconds)
    python bench/findings.py --part resolution --force  # redo a part whose results file exists

A part whose results file exists, is complete and was made at the same budget is skipped (``--force``
redoes it); an interrupted ablation resumes from the runs already written. Default output: ``book/results/``
at the ``cpu``/``gpu`` budgets, ``_build/findings-ci/`` at ``ci`` (so a ci run never replaces committed files).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("resolution", "corruption", "ablation")


def sizes() -> dict[str, dict[str, Any]]:
    """Every experiment's size at the current budget (read after ``--budget`` has set the environment)."""
    from sequencer_mini.analysis.ablations import ABLATIONS
    from sequencer_mini.analysis.robustness import CORRUPTIONS
    from sequencer_mini.core.budget import pick
    from sequencer_mini.train.loop import cpu_bf16_native

    return {
        "models": dict(seed=0, checkpoint="final"),  # the race's recorded weights (trained.load_race)
        # n_test: images of the EVALUATION half of the test set (robustness.test_halves); the other half picks the
        # matched-accuracy checkpoints
        "resolution": dict(n_test=pick(ci=64, cpu=5000, gpu=5000),
                           sides=pick(ci=[28, 44, 56], cpu=[28, 36, 44, 56],
                                      gpu=[28, 32, 36, 40, 44, 48, 52, 56])),
        "corruption": dict(n_test=pick(ci=16, cpu=1000, gpu=5000), corruptions=list(CORRUPTIONS),
                           severities=pick(ci=[1, 5], cpu=[1, 3, 5], gpu=[1, 2, 3, 4, 5])),
        "ablation": dict(variants=list(ABLATIONS), seeds=pick(ci=[0], cpu=[0, 1, 2], gpu=[0, 1, 2]),
                         # cpu: two passes over all 60,000 images, long enough for the baseline to pass 88 %;
                         # the peak lr is the one the race sweep chose for sequencer2d_fast28 (bench/race.py sweep)
                         epochs=pick(ci=1, cpu=2, gpu=4), limit_train=pick(ci=64, cpu=None, gpu=None),
                         limit_test=pick(ci=64, cpu=None, gpu=None), batch_size=pick(ci=32, cpu=128, gpu=128),
                         lr=pick(ci=2e-3, cpu=4e-3, gpu=4e-3), warmup_epochs=pick(ci=0.1, cpu=0.3, gpu=0.3),
                         amp=pick(ci="off", cpu="bf16" if cpu_bf16_native() else "off", gpu="auto")),
    }


def _existing(path: Path, current_budget: str) -> dict | None:
    """The results already in ``path`` if they were made at ``current_budget``, else None."""
    from sequencer_mini.core.provenance import read_results

    if not path.is_file():
        return None
    try:
        data = read_results(path)
    except (OSError, ValueError):
        return None
    return data if (data.get("provenance") or {}).get("budget") == current_budget else None


def _trio_summary(trio: dict) -> dict[str, Any]:
    """``trio_source``: 'recorded', 'fallback' or 'mixed'; ``trio_fallback``: any model trained here."""
    sources = {tm.source for tm in trio.values()}
    return {"trio_source": sources.pop() if len(sources) == 1 else "mixed",
            "trio_fallback": any(tm.source == "fallback" for tm in trio.values())}


def main(argv: list[str] | None = None) -> dict[str, Path]:
    p = argparse.ArgumentParser(prog="python bench/findings.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable); default: all")
    p.add_argument("--budget", choices=["ci", "cpu", "gpu"], help="sizes (else $SEQUENCER_BUDGET)")
    p.add_argument("--out-dir", help="where findings-*.json go (default: book/results, or _build/findings-ci at ci)")
    p.add_argument("--seed", type=int, default=0, help="which race run's models (book/results/fmnist-race-*-sSEED)")
    p.add_argument("--fallback", choices=["train", "error"], default="train",
                   help="missing race weights: train the recipe here at the current budget, or stop")
    p.add_argument("--fallback-dir", help="where fallback models are trained (default: runs/fallback)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="redo parts whose results file exists")
    p.add_argument("--variants", nargs="+", help="ablation variants (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, help="ablation seeds")
    p.add_argument("--threads", type=int, help="torch threads (1 is often faster on a shared, busy machine)")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    args = p.parse_args(argv)

    if args.budget:
        os.environ["SEQUENCER_BUDGET"] = args.budget
    os.environ.setdefault("SEQUENCER_QUIET", "1")  # no progress bars from the training loop; we log per run
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sequencer_mini.analysis import ablations, robustness, trained
    from sequencer_mini.core.budget import budget, pick
    from sequencer_mini.core.provenance import write_results
    from sequencer_mini.train.data import fashion_mnist_tensors
    from sequencer_mini.train.loop import resolve_device

    current = budget()
    cfg = sizes()
    if args.variants:
        unknown = set(args.variants) - set(ablations.ABLATIONS)
        if unknown:
            p.error(f"unknown ablation variants {sorted(unknown)}; choose from {list(ablations.ABLATIONS)}")
        cfg["ablation"]["variants"] = args.variants
    if args.seeds:
        cfg["ablation"]["seeds"] = args.seeds
    cfg["models"]["seed"] = args.seed
    out_dir = Path(args.out_dir) if args.out_dir else (ROOT / "_build" / "findings-ci" if current == "ci"
                                                       else ROOT / "book" / "results")
    device = resolve_device(args.device)
    parts = args.part or list(PARTS)
    log: Callable[[str], None] = (lambda msg: None) if args.quiet else (
        lambda msg: print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True))
    log(f"budget {current}, device {device}, torch threads {torch.get_num_threads()}, parts {parts}, out {out_dir}")

    written: dict[str, Path] = {}
    trio = halves = matched = selection = None
    common = {"budget": current, "device": str(device), "torch_threads": torch.get_num_threads()}
    for part in parts:
        path = out_dir / f"findings-{part}.json"
        previous = None if args.force else _existing(path, current)
        if previous is not None and previous.get("complete", True):
            log(f"{part}: {path} exists (budget {current}, complete): skipped; --force redoes it")
            written[part] = path
            continue
        t0 = time.perf_counter()
        if part in ("resolution", "corruption"):
            if trio is None:
                trio = trained.load_race(args.seed, fallback=args.fallback, fallback_dir=args.fallback_dir,
                                         device=device, log=log)
                for tm in trio.values():
                    log(tm.note)
            if halves is None:  # the test set in two: one half picks the matched checkpoints, the other judges
                (sel_x, sel_y), halves = robustness.test_halves(*fashion_mnist_tensors("test", normalise=False), seed=0)
                n_sel = pick(ci=64, cpu=len(sel_x), gpu=len(sel_x))
                matched, selection = robustness.matched_checkpoints(
                    list(trio), sel_x[:n_sel], sel_y[:n_sel], seed=args.seed, device=device, log=log) \
                    if all(tm.source == "recorded" for tm in trio.values()) else (None, None)
            n_test = cfg[part]["n_test"]
            images, labels = halves[0][:n_test], halves[1][:n_test]  # [0, 1], the evaluation half
            sets = {"final": trio, **({"matched": matched} if matched is not None else {})}
            payload = {}
            for which, models in sets.items():
                if part == "resolution":
                    result = robustness.run_resolution(models, images, labels, cfg["resolution"]["sides"], log=log)
                else:
                    result = robustness.run_corruption(models, images, labels,
                                                       corruptions=cfg["corruption"]["corruptions"],
                                                       severities=cfg["corruption"]["severities"], log=log)
                payload = result if which == "final" else {**payload, "matched": {**result, "selection": selection}}
            if part == "resolution":
                payload["note_1p5x"] = (
                    "1.5x of 28 px is 42 px, not a multiple of 4 (4x4-pixel stem in sequencer2d_fast28; 4x4 "
                    "patches in small_vit); the sweep uses multiples of 4, so 44 px "
                    f"(x{44 / 28:.2f}, sequencer_mini.analysis.robustness.nearest_valid_size(42, 4) = "
                    f"{robustness.nearest_valid_size(42, 4)}) stands in for 1.5x. Whole images are resized, never "
                    "cropped.")
            payload["test_split"] = ("robustness.test_halves(seed=0): evaluation on the second half of a fixed "
                                     "random split of the 10,000 test images; the first half selects the matched "
                                     "checkpoints")
            payload.update(_trio_summary(trio))
            payload["models_loaded"] = cfg["models"]
        else:
            a = cfg["ablation"]
            done = (previous or {}).get("runs", [])  # an interrupted run at this budget: keep its runs
            head = {"experiment": "ablation", "complete": False, "sizes": a, **common}
            collected: list[dict] = []

            def save_progress(run: dict) -> None:
                collected.append(run)
                new = {(r["variant"], r["seed"]) for r in collected}
                write_results(path, {**head, "runs": [r for r in done if (r["variant"], r["seed"]) not in new]
                                     + collected})

            runs = ablations.run_ablation(a["variants"], a["seeds"], epochs=a["epochs"], limit_train=a["limit_train"],
                                     limit_test=a["limit_test"], batch_size=a["batch_size"], lr=a["lr"],
                                          warmup_epochs=a["warmup_epochs"], amp=a["amp"], device=device,
                                          done=done, on_run=save_progress, log=log)
            payload = {"experiment": "ablation", "sizes": a, "runs": runs,
                       "summary": ablations.summarize_ablation(runs),
                       "ablations": {k: {**v, "kwargs": {kk: list(vv) if isinstance(vv, tuple) else vv
                                                         for kk, vv in v["kwargs"].items()}}
                                     for k, v in ablations.ABLATIONS.items() if k in a["variants"]}}
        payload.update({"complete": True, "wall_s": time.perf_counter() - t0, "sizes": cfg.get(part), **common})
        written[part] = write_results(path, payload)
        log(f"{part}: wrote {path} in {payload['wall_s']:.0f}s")
    return written


if __name__ == "__main__":
    main()
