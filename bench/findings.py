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
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("resolution", "corruption", "ablation")

# torch and sequencer_mini are imported inside the functions: main() sets $SEQUENCER_BUDGET (--budget) first.


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/findings.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable); default: all")
    p.add_argument("--budget", choices=["ci", "cpu", "gpu"], help="sizes (else $SEQUENCER_BUDGET)")
    p.add_argument("--out-dir", help="where findings-*.json go (default: book/results, or _build/findings-ci at ci)")
    p.add_argument("--seed", type=int, default=0, help="which race run's models (book/results/fmnist-race-*-sSEED)")
    p.add_argument("--fallback", choices=["train", "error"], default="train",
                   help="missing race weights: train the recipe here at the current budget, or stop")
    p.add_argument("--fallback-dir",
                   help="where fallback models are trained (default: trained.checkpoint_dir('fallback'))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="redo parts whose results file exists")
    p.add_argument("--variants", nargs="+", help="ablation variants (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, help="ablation seeds")
    p.add_argument("--threads", type=int, help="torch threads (1 is often faster on a shared, busy machine)")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    return p


def _configure(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """:func:`sizes` at the current budget, with the command line's variants, seeds and race seed."""
    from sequencer_mini.analysis.ablations import ABLATIONS

    cfg = sizes()
    if args.variants:
        unknown = set(args.variants) - set(ABLATIONS)
        if unknown:
            p.error(f"unknown ablation variants {sorted(unknown)}; choose from {list(ABLATIONS)}")
        cfg["ablation"]["variants"] = args.variants
    if args.seeds:
        cfg["ablation"]["seeds"] = args.seeds
    cfg["models"]["seed"] = args.seed
    return cfg


def _logger(quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda msg: None
    return lambda msg: print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _Race:
    """The race's three models, the test set's two halves and the matched-accuracy checkpoints: loaded by the
    first robustness part (resolution or corruption) that needs them, then shared by both."""

    def __init__(self, args: argparse.Namespace, device: Any, log: Callable[[str], None]) -> None:
        self.args, self.device, self.log = args, device, log
        self.trio: dict | None = None
        self.halves: Any = None  # the evaluation half: (images in [0, 1], labels)
        self.matched: dict | None = None
        self.selection: Any = None

    def load(self) -> _Race:
        if self.trio is not None:
            return self
        from sequencer_mini.analysis import robustness, trained
        from sequencer_mini.core.budget import pick
        from sequencer_mini.train.data import fashion_mnist_tensors

        args = self.args
        self.trio = trained.load_race(args.seed, fallback=args.fallback, fallback_dir=args.fallback_dir,
                                      device=self.device, log=self.log)
        for tm in self.trio.values():
            self.log(tm.note)
        # the test set in two: one half picks the matched checkpoints, the other judges
        (sel_x, sel_y), self.halves = robustness.test_halves(*fashion_mnist_tensors("test", normalise=False), seed=0)
        if all(tm.source == "recorded" for tm in self.trio.values()):
            n_sel = pick(ci=64, cpu=len(sel_x), gpu=len(sel_x))
            self.matched, self.selection = robustness.matched_checkpoints(
                list(self.trio), sel_x[:n_sel], sel_y[:n_sel], seed=args.seed, device=self.device, log=self.log)
        return self


_NOTE_1P5X = ("1.5x of 28 px is 42 px, not a multiple of 4 (4x4-pixel stem in sequencer2d_fast28; 4x4 "
              "patches in small_vit); the sweep uses multiples of 4, so 44 px "
              "(x{ratio:.2f}, sequencer_mini.analysis.robustness.nearest_valid_size(42, 4) = "
              "{nearest}) stands in for 1.5x. Whole images are resized, never cropped.")
_TEST_SPLIT = ("robustness.test_halves(seed=0): evaluation on the second half of a fixed random split of the 10,000 "
               "test images; the first half selects the matched checkpoints")


def _robustness_payload(part: str, race: _Race, cfg: dict[str, dict[str, Any]],
                        log: Callable[[str], None]) -> dict[str, Any]:
    """The resolution or corruption part, on the final models and (when recorded) the matched checkpoints."""
    from sequencer_mini.analysis import robustness

    n_test = cfg[part]["n_test"]
    images, labels = race.halves[0][:n_test], race.halves[1][:n_test]  # [0, 1], the evaluation half

    def run(models: dict) -> dict[str, Any]:
        if part == "resolution":
            return robustness.run_resolution(models, images, labels, cfg["resolution"]["sides"], log=log)
        return robustness.run_corruption(models, images, labels, corruptions=cfg["corruption"]["corruptions"],
                                         severities=cfg["corruption"]["severities"], log=log)

    payload = run(race.trio)
    if race.matched is not None:
        payload["matched"] = {**run(race.matched), "selection": race.selection}
    if part == "resolution":
        payload["note_1p5x"] = _NOTE_1P5X.format(ratio=44 / 28, nearest=robustness.nearest_valid_size(42, 4))
    payload["test_split"] = _TEST_SPLIT
    payload.update(_trio_summary(race.trio))
    payload["models_loaded"] = cfg["models"]
    return payload


def _save_ablation_progress(path: Path, head: dict, done: list[dict], collected: list[dict], run: dict) -> None:
    """``on_run`` of the ablation: write the runs so far (and the earlier runs not redone), to resume from."""
    from sequencer_mini.core.provenance import write_results

    collected.append(run)
    new = {(r["variant"], r["seed"]) for r in collected}
    write_results(path, {**head, "runs": [r for r in done if (r["variant"], r["seed"]) not in new] + collected})


def _ablation_payload(path: Path, previous: dict | None, a: dict[str, Any], common: dict[str, Any], device: Any,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """The ablation part: every variant and seed, resuming from the runs of an interrupted run at this budget."""
    from sequencer_mini.analysis import ablations

    done = (previous or {}).get("runs", [])  # an interrupted run at this budget: keep its runs
    head = {"experiment": "ablation", "complete": False, "sizes": a, **common}
    on_run = functools.partial(_save_ablation_progress, path, head, done, [])
    runs = ablations.run_ablation(a["variants"], a["seeds"], epochs=a["epochs"], limit_train=a["limit_train"],
                                  limit_test=a["limit_test"], batch_size=a["batch_size"], lr=a["lr"],
                                  warmup_epochs=a["warmup_epochs"], amp=a["amp"], device=device,
                                  done=done, on_run=on_run, log=log)
    kwargs_as_json = {k: {**v, "kwargs": {kk: list(vv) if isinstance(vv, tuple) else vv
                                          for kk, vv in v["kwargs"].items()}}
                      for k, v in ablations.ABLATIONS.items() if k in a["variants"]}
    return {"experiment": "ablation", "sizes": a, "runs": runs, "summary": ablations.summarize_ablation(runs),
            "ablations": kwargs_as_json}


def main(argv: list[str] | None = None) -> dict[str, Path]:
    p = _parser()
    args = p.parse_args(argv)
    if args.budget:
        os.environ["SEQUENCER_BUDGET"] = args.budget
    os.environ.setdefault("SEQUENCER_QUIET", "1")  # no progress bars from the training loop; we log per run
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sequencer_mini.core.budget import budget
    from sequencer_mini.core.provenance import write_results
    from sequencer_mini.train.loop import resolve_device

    current = budget()
    cfg = _configure(p, args)
    out_dir = Path(args.out_dir) if args.out_dir else (ROOT / "_build" / "findings-ci" if current == "ci"
                                                       else ROOT / "book" / "results")
    device = resolve_device(args.device)
    parts = args.part or list(PARTS)
    log = _logger(args.quiet)
    log(f"budget {current}, device {device}, torch threads {torch.get_num_threads()}, parts {parts}, out {out_dir}")

    written: dict[str, Path] = {}
    race = _Race(args, device, log)
    common = {"budget": current, "device": str(device), "torch_threads": torch.get_num_threads()}
    for part in parts:
        path = out_dir / f"findings-{part}.json"
        previous = None if args.force else _existing(path, current)
        if previous is not None and previous.get("complete", True):
            log(f"{part}: {path} exists (budget {current}, complete): skipped; --force redoes it")
            written[part] = path
            continue
        t0 = time.perf_counter()
        if part == "ablation":
            payload = _ablation_payload(path, previous, cfg["ablation"], common, device, log)
        else:
            payload = _robustness_payload(part, race.load(), cfg, log)
        payload.update({"complete": True, "wall_s": time.perf_counter() - t0, "sizes": cfg.get(part), **common})
        written[part] = write_results(path, payload)
        log(f"{part}: wrote {path} in {payload['wall_s']:.0f}s")
    return written


if __name__ == "__main__":
    main()
