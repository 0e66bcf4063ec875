"""Chapter 6's controlled experiments, planned from the results already on disk and resumable at any point.

    python bench/experiments.py status                     # what is done, what runs next, what waits for what
    python bench/experiments.py run --jobs 2 --threads 1   # run (or resume) everything that can run now
    python bench/experiments.py commands                   # the exact training command of every planned run
    python bench/experiments.py predict                    # per-image test predictions of every finished run
    python bench/experiments.py slim                       # race final.pt: the chosen EMA setting's weights only

Every run is a ``python -m sequencer_mini.train ... --resume --out book/results/NAME`` command (relative to the
repository root), so a stopped session loses at most one epoch of each run: ``run`` again resumes them bitwise. A
run's ``last.pt`` is git-ignored, and a new session's work tree is laid anew without ignored files, so while a run
trains the runner copies each newer ``last.pt`` to ``parked.pt`` beside it (untracked, not ignored: it travels with
the work tree, never into a commit) and restores it before resuming a run whose ``last.pt`` is missing. What
runs next is decided from the finished results files alone, never from memory:

1. **Tuning** (``book/results/fmnist-tune/MODEL-lrLR``): the Sequencer, the CNN and the ViT each train 2 passes
   over 50,000 training images (100,000 images seen) at peak learning rates on a factor-2 grid, scored on 10,000
   validation images carved from the training set (never the test set), with the race's other settings. The grid
   starts at 2e-3, 4e-3 and 8e-3 for every model and grows by one step beyond whichever end wins, until the chosen
   rate has a tried neighbour on both sides (it brackets the optimum). A run that diverges counts as worse than any.
   Three EMAs of the weights only watch each run (``--ema-probe``): the same run scores "no EMA" and each decay.
2. **The EMA decision**, for all three models alike: the setting (off or a decay) with the best mean validation
   accuracy over the three models at their chosen rates (``fmnist-tune/choice.json``).
3. **The race** (``book/results/fmnist-race240k-MODEL-sSEED``): all 60,000 training images, 4 passes (240,000
   images seen) for every model, 3 seeds, each model at its own tuned rate. The EMAs watch here too and weights are
   saved every quarter pass (``--snapshots 4``, chapter 10's matched checkpoints), so a race run can start as soon as
   its own model is tuned; the table reports the column that step 2 chose.
   **Replays** (``...-sSEED-pass1``): the Sequencer's and the CNN's race runs' first pass once more, same flags and
   seed, with weights every 1/32 pass (``--snapshots 32 --stop-after 1``): their accuracy rises through the range
   every model reaches within that pass, and chapter 10 matches checkpoints within 0.5 points.
4. **Single-factor ablations** of the Sequencer's race recipe (``fmnist-ablate240k-sequencer2d_fast28-LEVER-sSEED``),
   seeds 0 and 1, each lever switched alone: no label smoothing, no crop/flip, crop/flip from the first pass, the
   peak rate one grid step up and one down. The EMA needs no run: the race's watching EMAs are that ablation.
   Each lever that lifted the Sequencer beyond the reseeding noise (``protocol.helping_levers``) is then switched
   in the CNN's race recipe too, seeds 0 and 1 (``fmnist-ablate240k-small_cnn-LEVER-sSEED``): does it close the
   gap, or lift both?
5. **The Sequencer's best recipe at 16 passes** (960,000 images seen; ``fmnist-16pass-MODEL-RECIPE-sSEED``): the race
   recipe stretched to 16 passes, then each lever of the paper's ImageNet recipe that the CPU runs had not tried, one
   at a time on seed 0: random erasing, mixup/CutMix, TrivialAugment, RandAugment, stochastic depth, a warmup twice
   as long; then crop/flip off, the one switch step 4 found helping at 4 passes; the CNN's race recipe at 16 passes
   beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sequencer_mini.core.fsutil import atomic_copy, live_owner  # noqa: E402
from sequencer_mini.core.provenance import write_results  # noqa: E402
from sequencer_mini.train.protocol import (  # noqa: E402
    ABLATION_SEEDS,
    ABLATIONS,
    CONTROL,
    GRID,
    PROBES,
    RACE_SEEDS,
    REPLAY_MODELS,
    START,
    TUNE_DIR,
    Run,
    ablation_run,
    diverged,
    ema_choice,
    finished,
    helping_levers,
    long_run,
    race_run,
    read_json,
    replay_run,
    replayed,
    screening,
    tuning,
)
from sequencer_mini.train.recipes import RACE_MODELS  # noqa: E402

LOG_DIR = ROOT / "runs" / "experiments"
PARKED = "parked.pt"


def park(folder: Path) -> bool:
    """Copy ``folder/last.pt`` to ``folder/parked.pt`` (atomically) if it is newer; True if it copied. The parked
    copy outlives a work tree laid anew without git-ignored files, so the next session resumes the run from it."""
    last, parked = folder / "last.pt", folder / PARKED
    if not last.is_file() or (parked.is_file() and parked.stat().st_mtime >= last.stat().st_mtime):
        return False
    atomic_copy(last, parked)  # keeps last.pt's mtime, so an unchanged last.pt is not copied again
    return True


def unpark(folder: Path) -> bool:
    """Before (re)starting a run: restore ``last.pt`` from ``parked.pt`` when the work tree lost it. True if it
    restored. A run whose ``last.pt`` survived resumes from that (it is never older than the parked copy)."""
    last, parked = folder / "last.pt", folder / PARKED
    if last.exists() or not parked.is_file():
        return False
    atomic_copy(parked, last)
    return True


def _race_plan(chosen: dict[str, float]) -> tuple[list[Run], list[str]]:
    """The race runs and the replays of their first pass still to make (in that order), and what is done."""
    runnable: list[Run] = []
    notes: list[str] = []
    for seed in RACE_SEEDS:
        for model in ("small_vit", "sequencer2d_fast28", "small_cnn"):
            if model not in chosen:
                notes.append(f"race {model} s{seed}: waits for its tuning")
                continue
            run = race_run(model, chosen[model], seed)
            if finished(run, ROOT) is None:
                runnable.append(run)
            else:
                notes.append(f"race {model} s{seed}: done")
    for seed in RACE_SEEDS:
        for model in REPLAY_MODELS:
            if model in chosen:
                run = replay_run(model, chosen[model], seed)
                if replayed(run, ROOT) is None:
                    runnable.append(run)
                else:
                    notes.append(f"replay {model} s{seed} (first pass, 1/{run.value('--snapshots')} pass snapshots): "
                                 f"done")
    return runnable, notes


def plan() -> tuple[list[Run], list[str]]:
    """(runs that can run now, in priority order; lines saying what is done or waiting)."""
    runnable: list[Run] = []
    notes: list[str] = []
    chosen: dict[str, float] = {}
    for model in ("small_vit", "sequencer2d_fast28", "small_cnn"):  # the slowest model first: the critical path
        needed, lr, tried = tuning(model, ROOT)
        trail = ", ".join(f"{k:g}: {v:.4f}" for k, v in sorted(tried.items()))
        if lr is None:
            runnable += needed
            notes.append(f"tune {model}: running {[r.out.rsplit('-lr', 1)[1] for r in needed]}; done {{{trail}}}")
        else:
            chosen[model] = lr
            notes.append(f"tune {model}: chose {lr:g} {{{trail}}}")
    if len(chosen) == len(RACE_MODELS):
        choice = {"chosen_lr": chosen, **ema_choice(chosen, ROOT), "grid": GRID, "start": START, "probes": PROBES}
        path = ROOT / TUNE_DIR / "choice.json"
        old = read_json(path)
        if old is None or {k: v for k, v in old.items() if k != "provenance"} != json.loads(json.dumps(choice)):
            write_results(path, choice, {"command": "python bench/experiments.py run"})
        notes.append(f"EMA: {choice['ema']} (mean validation accuracy {choice['mean_val_acc']})")
    more, lines = _race_plan(chosen)
    runnable += more
    notes += lines
    if len(chosen) < len(RACE_MODELS):
        notes.append("ablations and 16-pass runs: wait for the EMA decision (all tuning done)")
        return runnable, notes
    ema = ema_choice(chosen, ROOT)["ema"]
    ablations = [ablation_run(lever, chosen["sequencer2d_fast28"], ema, seed)
                 for seed in ABLATION_SEEDS for lever in ABLATIONS]
    helping = helping_levers(chosen, ema, ROOT)
    controls = [ablation_run(lever, chosen[CONTROL], ema, seed, CONTROL)
                for lever in helping or [] for seed in ABLATION_SEEDS]
    notes.append(f"{CONTROL} controls: " + ("wait for every ablation of the Sequencer" if helping is None else
                                            f"for the levers that helped the Sequencer beyond the noise: {helping}"))
    cnn_long = long_run("small_cnn", "race", chosen["small_cnn"], ema, 0)
    search = screening(chosen["sequencer2d_fast28"], ema, ROOT)
    # the Sequencer's screening before the CNN's 16-pass reference run: the CNN fills a free slot while the
    # screening waits for its seed-0 runs (the combined recipe and the kept recipe's seed 1 depend on them)
    for run in [*ablations, *controls, *search.needed, cnn_long]:
        if run in search.needed or (finished(run, ROOT) is None and not diverged(run, ROOT)):
            runnable.append(run)
        else:
            notes.append(f"{run.out}: done")
    trail = ", ".join(f"{k}: {v:.4f}" for k, v in search.accs.items())
    if search.kept is None:
        notes.append(f"16-pass screening (seed 0): {len(search.accs)} of {len(search.runs)} recipes done {{{trail}}}")
    else:
        notes.append(f"16-pass screening: kept {search.kept} (helped on seed 0: {search.helped}) {{{trail}}}; "
                     f"kept recipe's seeds {'done' if not search.needed else 'running'}")
    return runnable, notes


# ----------------------------------------------------------------------------- running

def _divergence(log: Path) -> str | None:
    """The message of a run that stopped on a non-finite loss or weight, from its log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in reversed(text.splitlines()):
        low = line.lower()
        if "non-finite" in low or "diverg" in low or "nan" in low.split():
            return line.strip()
    return None


def run_all(jobs: int, threads: int, poll_s: float = 10.0) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    failures = 0
    adopted: dict[str, Run] = {}  # out -> run, for runs another process trains
    while True:
        todo = [r for r in plan()[0] if r.out not in running]
        # runs another process trains right now (e.g. those of a runner that was stopped and restarted): left
        # alone, and counted against --jobs
        owners = {r.out: owner for r in todo if (owner := live_owner(ROOT / r.out)) is not None}
        for out in sorted(owners.keys() - adopted.keys()):
            print(f"{out}: trained by process {owners[out]['pid']} already; left to it", flush=True)
        for out in owners:
            park(ROOT / out)
        for out, run in adopted.items():  # an adopted run ended; finished, its parked state is of no more use
            if out not in owners and finished(run, ROOT) is not None:
                (ROOT / out / PARKED).unlink(missing_ok=True)
        adopted = {r.out: r for r in todo if r.out in owners}
        todo = [r for r in todo if r.out not in adopted]
        while todo and len(running) + len(adopted) < jobs:
            run = todo.pop(0)
            log = LOG_DIR / (Path(run.out).name + ".log")
            if unpark(ROOT / run.out):
                print(f"{run.out}: last.pt restored from {PARKED}", flush=True)
            cmd = run.command(threads)
            with open(log, "a") as f:
                f.write(f"\n$ {shlex.join(cmd)}   # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                f.flush()
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                        env={**os.environ, "SEQUENCER_QUIET": "1"})
            print(f"started {run.out} (pid {proc.pid}, log {log})", flush=True)
            running[run.out] = (proc, log)
        if not running and not adopted:
            return 1 if failures else 0
        time.sleep(poll_s)
        for out, (proc, log) in list(running.items()):
            if proc.poll() is None:
                park(ROOT / out)
                continue
            del running[out]
            if proc.returncode == 0:  # finished: its results are the record, the parked state is of no more use
                (ROOT / out / PARKED).unlink(missing_ok=True)
            print(f"finished {out}: exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                reason = _divergence(log)
                if reason is not None:  # a result: this rate is past the edge of stability
                    write_results(ROOT / out / "diverged.json", {"reason": reason},
                                  {"command": "python bench/experiments.py run"})
                else:
                    failures += 1
                    print(f"  {out} failed; see {log}. Fix it, then run again (it resumes).", flush=True)
                    return 1


def predict_all(log=print) -> int:
    """``OUT/predictions.json`` for every finished race, ablation and 16-pass run that lacks one: the predicted
    class of each of the 10,000 test images by the final weights (every EMA setting the file holds) and, for the
    race runs, by each quarter-pass snapshot with the chosen EMA setting. Returns the number of files written. (The
    replayed first passes get none: only chapter 10 reads them, on half the test set, and records what it reads.)"""
    from sequencer_mini.analysis.experiments import predict, weight_sets
    from sequencer_mini.analysis.trained import build, load_weights, read_weights
    from sequencer_mini.train.data import fashion_mnist_tensors

    choice = read_json(ROOT / TUNE_DIR / "choice.json")
    if choice is None:
        log("predict: the tuning has not finished (no fmnist-tune/choice.json): nothing to predict yet")
        return 0
    chosen, ema = choice["chosen_lr"], choice["ema"]
    images, labels = fashion_mnist_tensors("test")
    runs = [(m, race_run(m, lr, s), True) for s in RACE_SEEDS for m, lr in chosen.items()]
    runs += [("sequencer2d_fast28", ablation_run(lever, chosen["sequencer2d_fast28"], ema, s), False)
             for s in ABLATION_SEEDS for lever in ABLATIONS]
    runs += [(CONTROL, ablation_run(lever, chosen[CONTROL], ema, s, CONTROL), False)
             for lever in helping_levers(chosen, ema, ROOT) or [] for s in ABLATION_SEEDS]
    search = screening(chosen["sequencer2d_fast28"], ema, ROOT)
    screened = dict.fromkeys([*search.runs.values(), *search.kept_runs])
    runs += [("sequencer2d_fast28", run, False) for run in screened]
    runs.append(("small_cnn", long_run("small_cnn", "race", chosen["small_cnn"], ema, 0), False))
    written = 0
    for model, run, snapshots in runs:
        folder = ROOT / run.out
        if finished(run, ROOT) is None or (folder / "predictions.json").exists():
            continue
        net = build(model)
        weights = read_weights(folder / "final.pt")  # a damaged file is refused, naming it and what to do
        out: dict = {"test": {}, "snapshots": {}, "ema": ema}
        for setting, state in weight_sets(weights).items():
            net.load_state_dict(state)
            out["test"][setting] = predict(net, images)
        for snap in sorted((folder / "snapshots").glob("*.pt")) if snapshots else []:
            sets = weight_sets(read_weights(snap))
            net.load_state_dict(sets[ema] if ema in sets else load_weights(snap))
            out["snapshots"][str(int(snap.stem))] = predict(net, images)
        write_results(folder / "predictions.json", out, {"command": "python bench/experiments.py predict"})
        log(f"predictions: {run.out} ({len(out['snapshots'])} snapshots)")
        written += 1
    return written


def slim_all(log=print) -> int:
    """Rewrite each finished race run's ``final.pt`` with the chosen EMA setting's weights only (about 1/4 of the
    size, what git keeps and the chapters load), once ``predictions.json`` holds every setting's predictions.
    The file keeps its other keys and says what was dropped. Returns the number of files rewritten."""
    from sequencer_mini.analysis.experiments import weight_sets
    from sequencer_mini.analysis.trained import load_weights, read_weights
    from sequencer_mini.train.loop import atomic_save

    choice = read_json(ROOT / TUNE_DIR / "choice.json")
    if choice is None:
        log("slim: the tuning has not finished (no fmnist-tune/choice.json)")
        return 0
    ema, written = choice["ema"], 0
    for s in RACE_SEEDS:
        for model, lr in choice["chosen_lr"].items():
            run = race_run(model, lr, s)
            folder = ROOT / run.out
            if finished(run, ROOT) is None or not (folder / "final.pt").exists():
                continue
            weights = read_weights(folder / "final.pt")
            if "ema_probes" not in weights:
                continue
            if not (folder / "predictions.json").exists():
                log(f"slim: {folder.relative_to(ROOT)} has no predictions.json yet: run predict first")
                continue
            sets = weight_sets(weights)
            if ema not in sets:
                raise ValueError(f"{folder.relative_to(ROOT)}/final.pt holds no weights for the chosen EMA setting "
                                 f"{ema!r} (it has {sorted(sets)})")
            slim = {k: v for k, v in weights.items() if k not in ("ema_probes", "raw")}
            slim["model"] = sets[ema]
            slim["ema"] = ema
            slim["dropped"] = (f"the watching EMAs' weights {sorted(set(sets) - {ema})}, after predictions.json "
                               f"recorded their test predictions (python bench/experiments.py slim)")
            atomic_save(slim, folder / "final.pt")
            load_weights(folder / "final.pt")  # read back: readable and finite
            log(f"slim: {folder.relative_to(ROOT)}/final.pt keeps the {ema!r} weights only")
            written += 1
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["status", "run", "commands", "predict", "slim"])
    p.add_argument("--jobs", type=int, default=2, help="trainings side by side (default 2: one per core)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    args = p.parse_args()
    if args.step == "status":
        runnable, notes = plan()
        print("\n".join(notes))
        print("runs now:" if runnable else "nothing to run now", *(f"  {r.out}" for r in runnable), sep="\n")
    elif args.step == "predict":
        predict_all()
    elif args.step == "slim":
        slim_all()
    elif args.step == "commands":
        print("\n".join(shlex.join(r.command(args.threads)) for r in plan()[0]))
    else:
        sys.exit(run_all(args.jobs, args.threads))


if __name__ == "__main__":
    main()
