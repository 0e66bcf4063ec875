"""The findings chapter's experiments: resolution robustness, corruptions and ablations, with provenance.

Parts (each writes its own results file, ``OUT/findings-<part>.json``):

``resolution``
    The race of chapter 6 (``sequencer_mini.train.protocol.race_run``: Sequencer2D fast28, CNN, ViT, each at its tuned
    learning rate, 240,000 images seen, seeds ``RACE_SEEDS``), trained at 28×28, evaluated on test images resized
    to larger sides. 1.5× would be 42 px, which is not a multiple of 4 (the Sequencer and the ViT need whole tokens
    of 4 × 4 pixels), so the sweep uses multiples of 4 only: 44 px (≈1.57×) stands in for 1.5×. Images are resized
    whole, never cropped.
``corruption``
    The same runs under six corruptions at several severities (``sequencer_mini.analysis.robustness.corrupt``), with
    the corruption error normalised by the CNN's, as ImageNet-C's mCE is by AlexNet's.
``ablation``
    The Sequencer2D ablations (``sequencer_mini.analysis.ablations.ABLATIONS``, variants of ``sequencer2d_fast28``)
    trained with one fixed recipe, once per seed (at ``cpu``: two passes over the 60,000 training images, scored on
    all 10,000 test images after the last); mean ± std and the paired difference to the baseline.

The two robustness parts use every finished seed of every model (``--seeds`` to choose; at least 2 per model, else the
error names the missing runs and ``python bench/experiments.py run``, which makes them). Per run they evaluate two
checkpoints on the second (evaluation) half of the test set (``robustness.test_halves``): the **matched** snapshot
(every quarter pass; every 1/32 pass in the replayed first pass of the Sequencer and the CNN, ``protocol.replay_run``,
checked equal to the race's where they coincide), whose accuracy on the first (selection) half is closest to a common
target, the highest level at which every run has a snapshot within 0.5 points
(``sequencer_mini.analysis.stats.match_snapshots``), so that a robustness difference is not a difference in clean
accuracy in disguise; and the **final** weights. Every outcome is stored per test image and condition (a string of
0/1), so chapter 10 bootstraps its intervals over seeds and images (``robustness.claims``). Selection accuracies come
from a run's ``predictions.json`` (``python bench/experiments.py predict``) when it exists, else are computed here.
Evaluations are cached per weights file in ``_build/findings-cache/`` (``--cache-dir``), so a rerun with one more seed
only evaluates that seed; ``--warm`` fills the cache from the runs present (also unfinished ones) and writes no
results file.

Without the race's weights (a fresh clone: the snapshots stay on the machine that trained them), ``--fallback
untrained`` (the default at ``ci``) evaluates untrained models of the same architectures (two seeds): the code path,
marked FALLBACK in the results; ``--fallback error`` (the default at ``cpu``/``gpu``) stops with the missing runs.

Usage::

    python bench/findings.py                            # every part, current budget (cpu on a CPU machine)
    python bench/findings.py --part ablation            # one part
    python bench/findings.py --budget ci --out-dir /tmp/f  # the tiny version of everything (seconds)
    python bench/findings.py --part resolution --force  # redo a part whose results file exists
    python bench/findings.py --part resolution --warm   # evaluate what is there into the cache, write nothing

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
        # n_test: images of the EVALUATION half of the test set (robustness.test_halves); n_selection: images of the
        # other half, which pick the matched snapshots
        "resolution": dict(n_test=pick(ci=64, cpu=5000, gpu=5000), n_selection=pick(ci=64, cpu=5000, gpu=5000),
                           sides=pick(ci=[28, 44, 56], cpu=[28, 36, 44, 56],
                                      gpu=[28, 32, 36, 40, 44, 48, 52, 56])),
        "corruption": dict(n_test=pick(ci=16, cpu=1000, gpu=5000), n_selection=pick(ci=64, cpu=5000, gpu=5000),
                           corruptions=list(CORRUPTIONS),
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/findings.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable); default: all")
    p.add_argument("--budget", choices=["ci", "cpu", "gpu"], help="sizes (else $SEQUENCER_BUDGET)")
    p.add_argument("--out-dir", help="where findings-*.json go (default: book/results, or _build/findings-ci at ci)")
    p.add_argument("--fallback", choices=["untrained", "error"],
                   help="race runs missing (fewer than 2 finished seeds of a model): evaluate untrained models of the "
                        "same architectures (the code path; default at ci) or stop (default at cpu and gpu)")
    p.add_argument("--runs-root", help="the folder that holds book/results/fmnist-race240k-* (default: this checkout)")
    p.add_argument("--cache-dir", help="evaluation cache (default: _build/findings-cache)")
    p.add_argument("--warm", action="store_true",
                   help="resolution/corruption: evaluate the runs present (finished or not) into the cache, write "
                        "no results file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="redo parts whose results file exists")
    p.add_argument("--variants", nargs="+", help="ablation variants (default: all)")
    p.add_argument("--seeds", nargs="+", type=int,
                   help="ablation: the seeds to train; resolution/corruption: the race seeds (default: all finished)")
    p.add_argument("--threads", type=int, help="torch threads (1 is often faster on a shared, busy machine)")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    return p


def _configure(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """:func:`sizes` at the current budget, with the command line's ablation variants and seeds."""
    from sequencer_mini.analysis.ablations import ABLATIONS

    cfg = sizes()
    if args.variants:
        unknown = set(args.variants) - set(ABLATIONS)
        if unknown:
            p.error(f"unknown ablation variants {sorted(unknown)}; choose from {list(ABLATIONS)}")
        cfg["ablation"]["variants"] = args.variants
    if args.seeds:
        cfg["ablation"]["seeds"] = args.seeds
    return cfg


def _logger(quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda msg: None
    return lambda msg: print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _file_cache(folder: Path) -> Callable[[str, Callable[[], Any]], Any]:
    """``robustness.Cache`` on disk: one JSON file per key in ``folder`` (written atomically)."""
    import json

    def cache(key: str, compute: Callable[[], Any]) -> Any:
        path = folder / f"{key}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text())["value"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry: computed again below
        value = compute()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"value": value}))
        os.replace(tmp, path)
        return value

    return cache


def race_checkpoints(root: Path, seeds: list[int] | None, *, unfinished: bool = False
                     ) -> tuple[list[Any], dict[str, list[str]], dict[str, float]]:
    """``(runs, missing, lrs)``: the race runs of chapter 6 under ``root`` with their snapshots (and those of their
    replayed first pass, where done) and final weights (``robustness.RaceCheckpoints``), the run folders missing
    per model (not finished, or weights not on this machine) and the tuned learning rate per model. ``seeds``:
    None = every finished seed. ``unfinished``: also runs still training (their snapshots so far; ``final`` None)."""
    from sequencer_mini.analysis.robustness import RaceCheckpoints
    from sequencer_mini.train.protocol import RACE_SEEDS, TUNE_DIR, finished, race_run, read_json

    choice = read_json(root / TUNE_DIR / "choice.json")
    if choice is None:
        raise FileNotFoundError(f"{TUNE_DIR}/choice.json is missing: chapter 6's tuning has not finished; run "
                                f"python bench/experiments.py run (it tunes, then races)")
    lrs = {m: float(lr) for m, lr in choice["chosen_lr"].items()}
    runs, missing = [], {}
    for model, lr in lrs.items():
        missing[model] = []
        for seed in (seeds if seeds is not None else RACE_SEEDS):
            run = race_run(model, lr, seed)
            folder = root / run.out
            results = finished(run, root)
            snapshots = {int(f.stem): f for f in sorted((folder / "snapshots").glob("*.pt"))}
            replay = _replay_snapshots(root, model, lr, seed, snapshots) if snapshots else None
            if replay is not None:
                snapshots = {**replay[1], **snapshots}  # where they coincide the files hold the same weights
            extra = {"replay": replay[0]} if replay is not None else {}
            final = folder / "final.pt"
            if results is not None and snapshots and final.is_file():
                runs.append(RaceCheckpoints(model, seed, run.out, snapshots, final, int(results["images_seen"]),
                                            **extra))
            elif unfinished and snapshots:
                runs.append(RaceCheckpoints(model, seed, run.out, snapshots, None, 0, "unfinished", **extra))
            else:
                why = ("not finished" if results is None else
                       "no snapshots/ on this machine" if not snapshots else "no final.pt on this machine")
                missing[model].append(f"{run.out} ({why})")
    return runs, missing, lrs


def _replay_snapshots(root: Path, model: str, lr: float, seed: int, race: dict[int, Path]
                      ) -> tuple[str, dict[int, Path]] | None:
    """``(folder, images seen -> weights file)`` of the replayed first pass of a race run
    (``protocol.replay_run``), when it is done on this machine; None otherwise. The replay is the same computation
    as the race run, so wherever their snapshots coincide the weights must be equal, tensor for tensor: checked
    here, and a replay that differs is refused (it is another run, whose snapshots cannot stand for the race's)."""
    from sequencer_mini.analysis.robustness import same_weights
    from sequencer_mini.train.protocol import REPLAY_MODELS, replay_run, replayed

    if model not in REPLAY_MODELS:
        return None
    run = replay_run(model, lr, seed)
    if replayed(run, root) is None:
        return None
    snaps = {int(f.stem): f for f in sorted((root / run.out / "snapshots").glob("*.pt"))}
    shared = sorted(set(snaps) & set(race))
    if not shared:
        raise ValueError(f"{run.out}/snapshots shares no snapshot with the race run's ({sorted(race)}): the replay "
                         f"cannot be checked against it. Delete {run.out} and run python bench/experiments.py run")
    for n in shared:
        if not same_weights(snaps[n], race[n]):
            raise ValueError(f"{run.out}/snapshots/{n:07d}.pt differs from the race run's snapshot at {n:,} images "
                             f"({race[n].relative_to(root)}): the replay is not the same computation (another "
                             f"machine, library version or thread count?), so its snapshots cannot stand in for the "
                             f"race's. Delete {run.out} and replay it where the race ran")
    return run.out, snaps


def _selection_accs(runs: list[Any], sel_idx: Any, labels: Any, root: Path) -> dict[tuple[str, int], dict[int, float]]:
    """Selection-half accuracies of the snapshots from each run's ``predictions.json``, where it exists
    (``python bench/experiments.py predict``: one digit per test image, in test order)."""
    from sequencer_mini.train.protocol import read_json

    out = {}
    truth = labels[sel_idx]
    for r in runs:
        for folder in ([r.run] + ([r.replay] if r.replay else [])) if r.source == "recorded" else []:
            pred = read_json(root / folder / "predictions.json")
            if pred is None or pred.get("ema") != "off":
                continue  # predictions of another EMA setting are not the snapshot weights evaluated here
            accs = out.setdefault((r.model, r.seed), {})
            for images_seen, digits in (pred.get("snapshots") or {}).items():
                if len(digits) != len(labels):
                    continue
                chosen = [int(digits[i]) for i in sel_idx.tolist()]
                accs[int(images_seen)] = sum(int(p == t) for p, t in zip(chosen, truth.tolist(),
                                                                         strict=True)) / len(chosen)
    return out


_NOTE_1P5X = ("1.5x of 28 px is 42 px, not a multiple of 4 (4x4-pixel stem in sequencer2d_fast28; 4x4 "
              "patches in small_vit); the sweep uses multiples of 4, so 44 px "
              "(x{ratio:.2f}, sequencer_mini.analysis.robustness.nearest_valid_size(42, 4) = "
              "{nearest}) stands in for 1.5x. Whole images are resized, never cropped.")
_TEST_SPLIT = ("robustness.test_halves(seed=0): evaluation on the second half of a fixed random split of the 10,000 "
               "test images; the first half selects the matched snapshots")


class _Robustness:
    """The race runs, the two halves of the test set and the cache, shared by the resolution and corruption parts."""

    def __init__(self, args: argparse.Namespace, current: str, log: Callable[[str], None]) -> None:
        self.args, self.current, self.log = args, current, log
        self.root = Path(args.runs_root) if args.runs_root else ROOT
        self.cache = _file_cache(Path(args.cache_dir) if args.cache_dir else ROOT / "_build" / "findings-cache")
        self.runs: list[Any] | None = None
        self.lrs: dict[str, float] = {}

    def load(self) -> _Robustness:
        if self.runs is not None:
            return self
        from sequencer_mini.analysis import robustness
        from sequencer_mini.train.data import fashion_mnist_tensors
        from sequencer_mini.train.recipes import RACE_MODELS

        args = self.args
        images, labels = fashion_mnist_tensors("test", normalise=False)
        self.labels = labels
        self.sel_idx, self.ev_idx = robustness.half_indices(len(labels), seed=0)
        self.images = images
        try:
            runs, missing, self.lrs = race_checkpoints(self.root, args.seeds, unfinished=args.warm)
        except FileNotFoundError:
            runs, missing = [], {m: ["chapter 6's tuning (fmnist-tune/choice.json)"] for m in RACE_MODELS}
        if args.warm:
            self.runs = runs
            return self
        seeds = {m: sorted(r.seed for r in runs if r.model == m) for m in (missing or RACE_MODELS)}
        fallback = args.fallback or ("untrained" if self.current == "ci" else "error")
        if any(len(s) < 2 for s in seeds.values()) and fallback == "untrained":
            self.log("FALLBACK: fewer than 2 finished race seeds of some model here; untrained models of the same "
                     "architectures stand in (the code path, not a result)")
            self.runs = robustness.untrained_checkpoints(list(RACE_MODELS), [0, 1])
            return self
        robustness.require_seeds(seeds, 2, missing)
        self.runs = runs
        self.log("race runs: " + ", ".join(r.run for r in runs))
        return self

    def payload(self, part: str, cfg: dict[str, Any]) -> dict[str, Any]:
        from sequencer_mini.analysis import robustness

        sel = self.sel_idx[:cfg["n_selection"]]
        ev = self.ev_idx[:cfg["n_test"]]
        selection = (self.images[sel], self.labels[sel])
        evaluation = (self.images[ev], self.labels[ev])
        given = _selection_accs(self.runs, sel, self.labels, self.root)
        if given:
            self.log(f"selection accuracies from predictions.json: {len(given)} run(s)")
        extra = ({"sides": cfg["sides"]} if part == "resolution" else
                 {"corruptions": cfg["corruptions"], "severities": cfg["severities"]})
        payload = robustness.run_findings(part, self.runs, selection, evaluation, selection_accs=given,
                                          cache=self.cache, log=self.log, **extra)
        if part == "resolution":
            payload["note_1p5x"] = _NOTE_1P5X.format(ratio=44 / 28, nearest=robustness.nearest_valid_size(42, 4))
        payload["test_split"] = _TEST_SPLIT
        payload["learning_rates"] = self.lrs
        payload["selection_from_predictions"] = sorted(f"{m}-s{s}" for m, s in given)
        return payload

    def warm(self, part: str, cfg: dict[str, Any]) -> None:
        """Fill the cache: every snapshot's selection accuracy, the finished runs' final weights, and each run's
        snapshot closest to the target of the finished runs (what the matched checkpoint will most likely be)."""
        from sequencer_mini.analysis import robustness

        sel, ev = self.sel_idx[:cfg["n_selection"]], self.ev_idx[:cfg["n_test"]]
        selection, (ev_x, ev_y) = (self.images[sel], self.labels[sel]), (self.images[ev], self.labels[ev])
        given = _selection_accs(self.runs, sel, self.labels, self.root)
        curves = []
        for r in self.runs:
            curves.append((r, robustness.selection_curve(r, selection, given=given.get((r.model, r.seed)),
                                                         cache=self.cache)))
            self.log(f"warm: selection {r.run} ({len(curves[-1][1])} snapshots)")
        done = [c for r, c in curves if r.final is not None]
        target = min(max(c.values()) for c in done) if done else None
        conds = robustness.conditions(part, ev_x, **({"sides": cfg["sides"]} if part == "resolution" else
                                                     {"corruptions": cfg["corruptions"],
                                                      "severities": cfg["severities"]}))
        spec = f"{part}|corruption seed 0"
        for r, c in curves:
            todo = [r.final] if r.final is not None else []
            if target is not None:
                matched = r.snapshots[min(c, key=lambda n: (abs(c[n] - target), n))]
                todo = [matched] + [w for w in todo if not robustness.same_weights(w, matched)]
            for w in todo:
                t0 = time.perf_counter()
                robustness.evaluate_outcomes(r.model, w, conds, ev_y, spec=spec, cache=self.cache)
                self.log(f"warm: {part} {w.relative_to(self.root) if isinstance(w, Path) else w} "
                         f"[{time.perf_counter() - t0:.0f}s]")


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
    race = _Robustness(args, current, log)
    common = {"budget": current, "device": str(device), "torch_threads": torch.get_num_threads()}
    for part in parts:
        path = out_dir / f"findings-{part}.json"
        if args.warm and part != "ablation":
            race.load().warm(part, cfg[part])
            continue
        previous = None if args.force else _existing(path, current)
        if previous is not None and previous.get("complete", True):
            log(f"{part}: {path} exists (budget {current}, complete): skipped; --force redoes it")
            written[part] = path
            continue
        t0 = time.perf_counter()
        if part == "ablation":
            payload = _ablation_payload(path, previous, cfg["ablation"], common, device, log)
        else:
            payload = race.load().payload(part, cfg[part])
        payload.update({"complete": True, "wall_s": time.perf_counter() - t0, "sizes": cfg.get(part), **common})
        written[part] = write_results(path, payload)
        log(f"{part}: wrote {path} in {payload['wall_s']:.0f}s")
    return written


if __name__ == "__main__":
    main()
