"""Every bad input gets a clear error before any work is done (issue 13).

Table-driven: each row is one input a user could give, the exception it must raise and the key words of its
message. Command-line rows also prove that a refused run leaves ``--out`` exactly as it was (not created, no
file added or changed). The rest: what a run records (data folder, 0644 results, rounded last line), the
resume / kill -9 / Ctrl-C / disk-full guarantees, and ``pretrained()``'s deadline against a local server on
127.0.0.1 that accepts connections and never answers (no test sends traffic anywhere else).

Issue 23 (the second half of the file): every example of the issue in two tables (``CLI23``: exit code, message,
no existing file changed; ``LIBRARY23``: exception, message, no file changed), run-folder ownership and locks,
divergence, dry runs, the environment switches, verified downloads from servers on 127.0.0.1, and a run killed at
every write (``SEQUENCER_TEST_FAULT=kill@K``) that resumes to the uninterrupted run bit for bit. Interruption tests
hold the run at a known write (``pause@K``) instead of racing the clock.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from fixtures import make_cifar_tree, make_idx_tree, single_thread  # noqa: F401 (fixture)

from sequencer_mini.train import data
from sequencer_mini.train import loop as train
from sequencer_mini.train.cli import UsageError, main, run
from sequencer_mini.train.data import AugmentConfig, DataNotFoundError, TensorImageDataset, dataset_info

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")

# A tiny run: 48 training and 32 test images of a generated Fashion-MNIST tree, the small CNN, one thread.
RUN = ["--dataset", "fashion_mnist", "--model", "small_cnn", "--budget", "ci", "--device", "cpu",
       "--limit-train", "48", "--limit-test", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Data folders: ``fm`` (64 train, 32 test), ``fm_other`` (same sizes, other pixels), ``fm_copy`` (``fm``
    elsewhere), ``empty``, ``cifar`` (a CIFAR-10 tree), and ``a_file``."""
    root = tmp_path_factory.mktemp("trees")
    make_idx_tree(root / "fm", n_train=64, n_test=32)
    make_idx_tree(root / "fm_other", n_train=64, n_test=32, seed=1)
    shutil.copytree(root / "fm", root / "fm_copy")
    (root / "empty").mkdir()
    make_cifar_tree(root / "cifar", n_per_batch=4)
    (root / "a_file").write_text("not a folder\n")
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    """Quiet, offline, an empty download cache, no $SEQUENCER_DATA, no debug."""
    monkeypatch.setenv("SEQUENCER_QUIET", "1")
    monkeypatch.setenv("SEQUENCER_OFFLINE", "1")
    monkeypatch.setenv("SEQUENCER_CACHE", str(tmp_path / "cache"))
    for var in ("SEQUENCER_DATA", "SEQUENCER_DEBUG", "SEQUENCER_BUDGET"):
        monkeypatch.delenv(var, raising=False)


def snapshot(folder: Path) -> dict | None:
    """Every file below ``folder`` with its size, mtime and hash; None if ``folder`` does not exist."""
    if not os.path.lexists(folder):
        return None
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strip_times(history: dict) -> dict:
    return {k: v for k, v in history.items() if k not in ("images_per_s", "epoch_time_s")}


@pytest.fixture(scope="module")
def partial_run(trees, tmp_path_factory) -> Path:
    """OUT of a run stopped after epoch 1 of 2 (``RUN`` on ``fm``), to resume with changed inputs."""
    out = tmp_path_factory.mktemp("partial") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQUENCER_QUIET", "1")
        mp.delenv("SEQUENCER_DATA", raising=False)
        threads = torch.get_num_threads()
        main([*RUN, "--epochs", "2", "--stop-after", "1", "--data-root", str(trees["fm"]), "--out", str(out)])
        torch.set_num_threads(threads)
    return out


# ----------------------------------------------------------------------------- the command line, refused

# (id, extra arguments, environment, exception type, regex of the message). "{fm}", "{empty}", ...: the trees;
# "{out}": the run's --out; "{tmp}": a fresh folder. Each run also gets "--data-root {fm}" unless it names
# --data-root itself or sets $SEQUENCER_DATA.
REFUSED = [
    # silent wrong results before issue 13
    ("limit-train negative", ["--limit-train", "-5"], {}, UsageError,
     r"--limit-train -5: expected a number of training images >= 1"),
    ("limit-train zero", ["--limit-train", "0"], {}, UsageError, r"--limit-train 0: expected .* >= 1"),
    ("limit-test zero", ["--limit-test", "0"], {}, UsageError,
     r"--limit-test 0: expected a number of test images >= 1"),
    ("limit-test negative", ["--limit-test", "-1"], {}, UsageError, r"--limit-test -1: expected"),
    ("warmup negative", ["--warmup-epochs", "-1"], {}, UsageError,
     r"--warmup-epochs -1.0: expected a number of epochs in \[0, --epochs = 1\]"),
    ("warmup beyond the run", ["--warmup-epochs", "5", "--epochs", "2"], {}, UsageError,
     r"--warmup-epochs 5.0: .*\[0, --epochs = 2\]"),
    ("warmup nan", ["--warmup-epochs", "nan"], {}, UsageError, r"--warmup-epochs nan: expected"),
    ("data root empty", ["--data-root", "{empty}"], {}, DataNotFoundError,
     r"(?s)Fashion-MNIST not found in the data root\. Expected the four IDX files "
     r"train-images-idx3-ubyte\[\.gz\].*{empty}.*nothing else is searched"),
    ("data root misspelt", ["--data-root", "{tmp}/fahsion"], {}, DataNotFoundError,
     r"data root '.*/fahsion' does not exist"),
    ("data root is a file", ["--data-root", "{a_file}"], {}, DataNotFoundError,
     r"data root '.*a_file' is not a folder"),
    ("SEQUENCER_DATA empty", [], {"SEQUENCER_DATA": "{empty}"}, DataNotFoundError,
     r"(?s)Fashion-MNIST not found in \$SEQUENCER_DATA='.*empty'\. Expected the four IDX files.*drop SEQUENCER_DATA"),
    ("SEQUENCER_DATA misspelt", [], {"SEQUENCER_DATA": "{tmp}/fahsion"}, DataNotFoundError,
     r"\$SEQUENCER_DATA entry '.*/fahsion' does not exist"),
    ("cifar10 root without cifar", ["--dataset", "cifar10", "--model", "small_cnn"], {}, DataNotFoundError,
     r"(?s)cifar10 not found in the data root\. Expected the folder cifar-10-batches-py/"),
    # rates and sizes out of range
    ("lr zero", ["--lr", "0"], {}, UsageError, r"--lr 0.0: expected a learning rate > 0"),
    ("lr negative", ["--lr=-1e-3"], {}, UsageError, r"--lr -0.001: expected a learning rate > 0"),
    ("lr infinite", ["--lr", "inf"], {}, UsageError, r"--lr inf: expected"),
    ("weight decay negative", ["--weight-decay", "-0.1"], {}, UsageError,
     r"--weight-decay -0.1: expected a weight decay >= 0"),
    ("drop path 1", ["--drop-path", "1.0"], {}, UsageError, r"--drop-path 1.0: expected a drop-path rate in \[0, 1\)"),
    ("drop path 2", ["--drop-path", "2.0"], {}, UsageError, r"--drop-path 2.0: expected a drop-path rate"),
    ("smoothing 1", ["--smoothing", "1"], {}, UsageError, r"--smoothing 1.0: expected a label smoothing in \[0, 1\)"),
    ("smoothing negative", ["--smoothing", "-0.1"], {}, UsageError, r"--smoothing -0.1: expected"),
    ("epochs zero", ["--epochs", "0"], {}, UsageError, r"--epochs 0: expected a whole number >= 1"),
    ("batch size zero", ["--batch-size", "0"], {}, UsageError, r"--batch-size 0: expected a whole number >= 1"),
    ("seed negative", ["--seed", "-1"], {}, UsageError, r"--seed -1: expected a whole number in \[0, 2\*\*32\)"),
    ("stop-after zero", ["--stop-after", "0"], {}, UsageError, r"--stop-after 0: expected a number of epochs >= 1"),
    ("workers negative", ["--workers", "-2"], {}, UsageError, r"--workers -2: expected"),
    ("threads zero", ["--threads", "0"], {}, UsageError, r"--threads 0: expected a number of threads >= 1"),
    ("unknown model", ["--model", "resnet50"], {}, UsageError,
     r"--model 'resnet50': expected one of .*sequencer2d_mini28.*small_cnn"),
    ("no such CUDA device", ["--device", "cuda:99"], {}, UsageError, r"--device 'cuda:99': .*CUDA"),
    ("not a device", ["--device", "gpu0"], {}, UsageError, r"--device 'gpu0': not a device name"),
    ("bad SEQUENCER_BUDGET", [], {"SEQUENCER_BUDGET": "huge"}, UsageError,
     r"SEQUENCER_BUDGET='huge' is not a budget"),
    ("ema 1", ["--ema", "1.0"], {}, UsageError, r"--ema 1.0: expected an EMA decay in \(0, 1\)"),
    ("img-sizes not numbers", ["--img-sizes", "20,big"], {}, UsageError,
     r"--img-sizes '20,big': expected image sides >= 1"),
    ("img-sizes zero", ["--img-sizes", "0,28"], {}, UsageError, r"--img-sizes '0,28': expected"),
    ("aug-from-epoch beyond the run", ["--aug-from-epoch", "3", "--epochs", "2"], {}, UsageError,
     r"--aug-from-epoch 3: expected an epoch in \[0, --epochs = 2\)"),
    ("val negative", ["--val", "-1"], {}, UsageError, r"--val -1: expected a number of validation images >= 0"),
    ("val all of the training images", ["--val", "48"], {}, UsageError,
     r"--val 48: expected fewer validation images than --limit-train 48"),
    ("val larger than the data", ["--val", "100", "--limit-train", "200"], {}, UsageError,
     r"--val 100: expected fewer validation images than the 64 training images"),
    ("val with per-item loading", ["--val", "16", "--no-fast"], {}, UsageError,
     r"--val 16: a validation split needs in-memory batching"),
    ("val on an image folder", ["--dataset", "imagenette", "--val", "16"], {}, UsageError,
     r"--val 16: .*in-memory batching \(--dataset fashion_mnist, cifar10 or cifar100"),
    ("not numbers, with the rest", ["--epochs", "two", "--lr", "fast", "--threads", "0"], {}, UsageError,
     r"(?s)invalid arguments:.*--epochs 'two': expected a whole number >= 1.*--lr 'fast': expected a learning rate "
     r"> 0.*--threads 0"),
    ("model-arg without =", ["--model-arg", "depth"], {}, UsageError, r"--model-arg expects KEY=VALUE, got 'depth'"),
    ("model-arg unknown key", ["--model-arg", "colour=3"], {}, UsageError,
     r"--model small_cnn --model-arg colour=3: .*colour"),
    ("every problem at once", ["--lr", "0", "--limit-train", "-5", "--warmup-epochs", "-1"], {}, UsageError,
     r"(?s)invalid arguments:.*--limit-train -5.*--lr 0.0.*--warmup-epochs -1.0"),
    # --out
    ("out is a file", ["--out", "{a_file}"], {}, UsageError,
     r"--out '.*a_file' is an existing file; expected a folder"),
    ("out below a file", ["--out", "{a_file}/run"], {}, UsageError,
     r"--out .*a_file/run cannot be created: a part of that path is a file"),
    # sysfs refuses new files even to root: a real kernel refusal without a read-only mount
    ("out cannot be created", ["--out", "/sys/fs/sequencer-run"], {}, UsageError,
     r"--out /sys/fs/sequencer-run cannot be created: permission denied"),
    ("out not writable", ["--out", "/sys/fs"], {}, UsageError, r"--out /sys/fs is not writable: permission denied"),
]


def _fill(text: str, trees: dict, tmp: Path, out: Path) -> str:
    return text.format(**{k: str(v) for k, v in trees.items()}, tmp=str(tmp), out=str(out))


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_cli_refuses_before_any_work(case, trees, tmp_path, monkeypatch):
    name, extra, env, exc, pattern = case
    out = tmp_path / "run"
    extra = [_fill(a, trees, tmp_path, out) for a in extra]
    args = list(RUN)
    if "SEQUENCER_BUDGET" in env:  # the budget must come from the environment
        i = args.index("--budget")
        del args[i:i + 2]
    if "--out" not in extra:
        args += ["--out", str(out)]
    if "--data-root" not in extra and "SEQUENCER_DATA" not in env:
        args += ["--data-root", str(trees["fm"])]
    for k, v in env.items():
        monkeypatch.setenv(k, _fill(v, trees, tmp_path, out))
    target = Path(extra[extra.index("--out") + 1]) if "--out" in extra else out
    # sysfs: compare the listing (its files are not for reading in bulk)
    snap = (lambda p: sorted(os.listdir(p)) if p.exists() else None) if str(target).startswith("/sys") else snapshot
    before, threads = snap(target), torch.get_num_threads()
    with pytest.raises(exc) as info:
        main([*args, *extra])
    assert re.search(_fill(pattern, trees, tmp_path, out), str(info.value)), str(info.value)
    assert snap(target) == before  # nothing created, nothing changed
    assert torch.get_num_threads() == threads  # refused before --threads took effect


# ----------------------------------------------------------------------------- resume with other inputs

RESUME_REFUSED = [
    ("changed limit-train, same steps per epoch", ["--limit-train", "40"], r"(?s)data n_train: checkpoint 48 vs now 40 "
     r"\(a different --limit-train.*data train_indices: checkpoint '\w+' vs now '\w+' "
     r"\(another subset of the training"),
    ("changed limit-test", ["--limit-test", "16"], r"data n_test: checkpoint 32 vs now 16 \(a different --limit-test"),
    ("other data, same sizes", ["--data-root", "{fm_other}"], r"(?s)data train_content: .*other training images or "
     r"labels.*data test_content"),
    ("changed seed", ["--seed", "3"], r"train config seed: checkpoint 0 vs now 3"),
    ("changed model", ["--model", "small_vit"], r"(?s)model config name: checkpoint 'small_cnn' vs now 'small_vit'"),
    ("changed epochs", ["--epochs", "3"], r"train config epochs: checkpoint 2 vs now 3"),
]


@pytest.mark.parametrize("case", RESUME_REFUSED, ids=[c[0] for c in RESUME_REFUSED])
def test_resume_refuses_other_inputs(case, partial_run, trees, tmp_path):
    name, extra, pattern = case
    out = tmp_path / "run"
    shutil.copytree(partial_run, out)
    before = snapshot(out)
    args = [*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--out", str(out), "--resume"]
    with pytest.raises(RuntimeError, match=r"checkpoint .*last.pt does not match this run") as info:
        main([*args, *[_fill(a, trees, tmp_path, out) for a in extra]])
    assert re.search(pattern, str(info.value)), str(info.value)
    assert snapshot(out) == before


def test_existing_run_needs_resume_and_corrupt_checkpoint_is_refused(partial_run, trees, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(partial_run, out)
    args = [*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--out", str(out)]
    before = snapshot(out)
    with pytest.raises(UsageError, match=r"last.pt exists: pass --resume to continue that run, or choose a new --out"):
        main(args)
    assert snapshot(out) == before
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    before = snapshot(out)
    with pytest.raises(RuntimeError, match=r"last.pt is unreadable .*Refusing to resume"):
        main([*args, "--resume"])
    assert snapshot(out) == before


def test_resume_from_moved_data_equals_straight_run(partial_run, trees, tmp_path):
    """The folder may move (only what is read is compared); the resumed run is the uninterrupted one."""
    straight = main([*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--out", str(tmp_path / "a")])
    out = tmp_path / "b"
    shutil.copytree(partial_run, out)
    resumed = main([*RUN, "--epochs", "2", "--data-root", str(trees["fm_copy"]), "--out", str(out), "--resume"])
    assert strip_times(resumed["history"]) == strip_times(straight["history"])
    assert resumed["data_root"] == str(trees["fm_copy"].resolve()) != straight["data_root"]
    assert {k: v for k, v in resumed["data"].items() if k != "root"} == \
           {k: v for k, v in straight["data"].items() if k != "root"}
    for (k, a), b in zip(torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"].items(),
                         torch.load(out / "last.pt", weights_only=True)["model"].values(), strict=True):
        assert torch.equal(a, b), k


# ----------------------------------------------------------------------------- what a run records and prints

def test_run_records_data_folder_mode_and_rounded_line(trees, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SEQUENCER_QUIET")
    monkeypatch.delenv("CI", raising=False)  # quiet() is also on under CI; this test reads the printed lines
    monkeypatch.setenv("SEQUENCER_DATA", str(trees["fm_other"]))  # --data-root wins over the variable
    old = os.umask(0o022)
    try:
        payload = main([*RUN, "--data-root", str(trees["fm"]), "--out", str(tmp_path / "run")])
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["data_root"] == payload["data_root"] == str(trees["fm"].resolve())
    assert res["data"]["n_train"] == 48 and res["data"]["n_test"] == 32 and res["data"]["dataset"] == "fashion_mnist"
    assert f"data: fashion_mnist from {trees['fm'].resolve()} (48 train, 32 test images)" in err
    assert (tmp_path / "run" / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"wrote .*results.json: final test acc \d\.\d{4} \(epoch 1\)", last), last


def test_sequencer_data_is_used_exactly(trees, tmp_path, monkeypatch):
    """With the Debian copy installed, $SEQUENCER_DATA still decides (and a folder holding the data wins)."""
    monkeypatch.setenv("SEQUENCER_DATA", f"{trees['empty']}{os.pathsep}{trees['fm']}")
    payload = main([*RUN, "--out", str(tmp_path / "run")])
    assert payload["data_root"] == str(trees["fm"].resolve()) and payload["n_train"] == 48


# ----------------------------------------------------------------------------- the process: messages, exit codes

def test_cli_prints_one_message_and_exit_code(trees, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run(main, [*RUN, "--limit-train", "-5", "--data-root", str(trees["fm"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: invalid argument:\n  --limit-train -5" in err
    assert run(main, [*RUN, "--data-root", str(trees["empty"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: Fashion-MNIST not found in the data root" in err
    assert "--debug or SEQUENCER_DEBUG=1 shows the traceback" in err
    assert run(main, [*RUN, "--data-root", str(trees["empty"]), "--out", str(out), "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("SEQUENCER_DEBUG", "1")
    assert run(main, [*RUN, "--data-root", str(trees["empty"]), "--out", str(out)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert not out.exists()


def test_help_lists_models_datasets_and_variables(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("sequencer2d_mini28", "sequencer2d_fast28", "sequencer2d_s", "small_cnn", "small_vit",
                 "fashion_mnist", "cifar100", "imagenette", "tiny_imagenet", "SEQUENCER_DATA", "SEQUENCER_CACHE",
                 "SEQUENCER_OFFLINE", "SEQUENCER_BUDGET", "SEQUENCER_DEBUG", "--debug"):
        assert word in text, word


def test_flag_types_work_in_any_parser_and_ours_collects_them(capsys):
    """The checks of the flags are plain argparse types; the command line's parser lists every refused value."""
    import argparse

    from sequencer_mini.train.cli import build_parser, number, whole
    plain = argparse.ArgumentParser()
    plain.add_argument("--n", type=whole(1, "a number of things"))
    plain.add_argument("--p", type=number("[0, 1)", "a rate"))
    assert vars(plain.parse_args(["--n", "3", "--p", "0.5"])) == {"n": 3, "p": 0.5}
    with pytest.raises(SystemExit):
        plain.parse_args(["--p", "1"])
    assert "argument --p: expected a rate in [0, 1)" in capsys.readouterr().err
    with pytest.raises(UsageError, match=r"invalid arguments:\n  --batch-size 0: .*\n  --ema 2.0: expected an EMA"):
        build_parser().parse_args(["--out", "x", "--ema", "2", "--batch-size", "0"])


def test_python_m_entry_point_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "SEQUENCER_QUIET": "1", "SEQUENCER_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SEQUENCER_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "sequencer_mini.train", "--limit-train", "-5", "--out",
                           str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("python -m sequencer_mini.train: error: invalid argument:\n  --limit-train -5")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- library inputs

def _toy_dataset(n: int = 20) -> TensorImageDataset:
    return TensorImageDataset(torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.arange(n) % 10,
                              dataset_info("fashion_mnist"))


def _evil_pickle(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"model": Evil()}, path)
    return path


def _erf(images):
    from sequencer_mini.analysis.erf import effective_receptive_field
    from sequencer_mini.models.baselines import small_cnn
    model = small_cnn(in_chans=1, num_classes=10, img_size=28)
    return effective_receptive_field(model, images, "stages.0")


LIBRARY = [
    # (id, call(tmp_path, trees), exception, regex)
    ("subset -5 is not 'all but 5'", lambda t, tr: _toy_dataset().subset(-5),
     ValueError, r"limit must be a whole number >= 1 .*got -5"),
    ("subset 0", lambda t, tr: _toy_dataset().subset(0), ValueError, r"limit must be a whole number >= 1"),
    ("make_loaders limit_train -5", lambda t, tr: data.make_loaders("fashion_mnist", 8, limit_train=-5, root=tr["fm"]),
     ValueError, r"limit_train must be a whole number >= 1 .*got -5"),
    ("make_loaders limit_test 0", lambda t, tr: data.make_loaders("fashion_mnist", 8, limit_test=0, root=tr["fm"]),
     ValueError, r"limit_test must be a whole number >= 1"),
    ("load_fashion_mnist from an empty root", lambda t, tr: data.load_fashion_mnist("train", root=tr["empty"]),
     DataNotFoundError, r"not found in the data root"),
    ("pretrained: a text file", lambda t, tr: _pretrained(checkpoint=_write(t / "weights.pth", "hello\n")),
     RuntimeError, r"checkpoint file '.*weights.pth' is not a PyTorch weights file"),
    ("pretrained: a list", lambda t, tr: _pretrained(checkpoint=_save(t / "list.pth", [1, 2])),
     RuntimeError, r"checkpoint file '.*list.pth' holds a list, expected a state dict"),
    ("pretrained: a malicious pickle", lambda t, tr: _pretrained(checkpoint=_evil_pickle(t / "evil.pth", t / "pwned")),
     RuntimeError, r"evil.pth' is not a PyTorch weights file .*it holds the Python object posix.system, "
     r"which weights-only loading refuses"),
    ("pretrained: no such file", lambda t, tr: _pretrained(checkpoint=t / "missing.pth"),
     RuntimeError, r"missing.pth' does not exist"),
    ("pretrained: unknown name", lambda t, tr: _pretrained("sequencer2d_xs"),
     ValueError, r"pretrained weights exist for"),
    ("pretrained: timeout 0", lambda t, tr: _pretrained(timeout=0),
     ValueError, r"timeout must be a number of seconds > 0"),
    ("load_checkpoint: a malicious pickle",
     lambda t, tr: train.load_checkpoint(_evil_pickle(t / "last.pt", t / "pwned"), _tiny()),
     RuntimeError, r"last.pt is unreadable .*Refusing to resume"),
    ("load_checkpoint: a text file", lambda t, tr: train.load_checkpoint(_write(t / "last.pt", "hello"), _tiny()),
     RuntimeError, r"last.pt is unreadable"),
    ("ERF of zero images", lambda t, tr: _erf(torch.zeros(0, 1, 28, 28)),
     ValueError, r"N >= 1, got torch.float32 \(0, 1, 28, 28\)"),
    ("ERF of uint8 images", lambda t, tr: _erf(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)),
     ValueError, r"float .*got torch.uint8"),
    ("ERF of a 3-d tensor", lambda t, tr: _erf(torch.zeros(1, 28, 28)), ValueError, r"\(N, C, H, W\)"),
    ("CIFAR pickle that runs code", lambda t, tr: data.read_cifar(_evil_cifar(t), "cifar10"),
     ValueError, r"is not allowed in a CIFAR batch"),
    ("IDX with a bad magic number", lambda t, tr: data.read_idx(_write(t / "x-idx3-ubyte", "hello world")),
     ValueError, r"not an IDX file"),
    ("batch size 0", lambda t, tr: data.TensorLoader(_toy_dataset(), 0), ValueError, r"batch_size must be >= 1"),
    ("unknown augmentation preset", lambda t, tr: AugmentConfig.preset("strong"),
     ValueError, r"augmentation preset must be one of"),
    ("unknown dataset", lambda t, tr: dataset_info("mnist"), ValueError, r"dataset must be one of"),
    ("TrainConfig amp fp8", lambda t, tr: train.TrainConfig(amp="fp8"), ValueError, r"amp must be"),
    ("TrainConfig epochs 0", lambda t, tr: train.TrainConfig(epochs=0), ValueError, r"need epochs >= 1"),
    ("TrainConfig lr inf", lambda t, tr: train.TrainConfig(lr=float("inf")), ValueError, r"need lr > 0"),
    ("TrainConfig warmup beyond the run", lambda t, tr: train.TrainConfig(epochs=2, warmup_epochs=3),
     ValueError, r"warmup_epochs 3: expected a number of epochs in \[0, epochs = 2\]"),
    ("TrainConfig late augmentation after the run", lambda t, tr: train.TrainConfig(epochs=2, aug_from_epoch=2),
     ValueError, r"aug_from_epoch 2: expected an epoch in \[0, epochs = 2\)"),
    ("TrainConfig every problem at once", lambda t, tr: train.TrainConfig(epochs=0, lr=0, amp="fp8", warmup_epochs=-1),
     ValueError, r"amp must be.*need epochs >= 1.*need lr > 0.*warmup_epochs -1: expected a number of epochs in \[0, "
     r"epochs\]"),
    ("results payload not a dict", lambda t, tr: _write_results(t / "r.json", [1]),
     TypeError, r"payload must be a dict"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _pretrained(*args, **kwargs):
    from sequencer_mini.interop.weights import pretrained
    return pretrained(*args, **kwargs)


def _write_results(path, payload):
    from sequencer_mini.core.provenance import write_results
    return write_results(path, payload)


def _tiny():
    from sequencer_mini.models.baselines import small_cnn
    return small_cnn(in_chans=1, num_classes=10, img_size=28)


def _evil_cifar(tmp: Path) -> Path:
    make_cifar_tree(tmp, n_per_batch=2)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))
    (tmp / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    return tmp


@pytest.mark.parametrize("case", LIBRARY, ids=[c[0] for c in LIBRARY])
def test_library_refuses(case, tmp_path, trees):
    name, call, exc, pattern = case
    with pytest.raises(exc) as info:
        call(tmp_path, trees)
    assert re.search(pattern, str(info.value), re.S), str(info.value)
    assert not (tmp_path / "pwned").exists()  # no code from a pickle ran


def test_download_timeout_variable_must_be_a_number(monkeypatch):
    monkeypatch.setenv("SEQUENCER_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"\$SEQUENCER_DOWNLOAD_TIMEOUT='soon' is not a number of seconds"):
        _pretrained("sequencer2d_s")


# ----------------------------------------------------------------------------- full disk, permissions

def _open_dev_full(real_open):
    def fake(path, mode="r", *args, **kwargs):  # every write of the checkpoint hits a full device
        return real_open("/dev/full", mode, *args, **kwargs) if "w" in mode else real_open(path, mode, *args, **kwargs)
    return fake


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_disk_full_is_reported_and_resume_is_exact(tmp_path, monkeypatch):
    """A real ENOSPC from the kernel (/dev/full) mid-run: one OSError that names the file and the space, the
    last good checkpoint untouched, and a resume that ends bitwise equal to an uninterrupted run."""
    import builtins

    from test_train import cfg_for, tiny_model, toy_loaders
    train_loader, test_loader = toy_loaders(n=64)
    straight = train.fit(tiny_model(), train_loader, test_loader, cfg_for(tmp_path / "a", epochs=2))
    out = tmp_path / "b"
    train.fit(tiny_model(), train_loader, test_loader, cfg_for(out, epochs=2, stop_after=1))
    good = snapshot(out)
    monkeypatch.setattr(train, "open", _open_dev_full(builtins.open), raising=False)
    with pytest.raises(OSError) as info:
        train.fit(tiny_model(), train_loader, test_loader, cfg_for(out, epochs=2, resume=True))
    msg = str(info.value)
    assert info.value.errno == errno.ENOSPC
    # epochs/NNN.pt (if kept) comes before last.pt, best.pt and final.pt after it
    assert re.search(rf"no space left on the device while writing {out}/(final|last)\.pt: it needs about [\d.,]+ MB, "
                     rf"[\d.,]+ MB free in {out}", msg), msg
    assert "unexpected pos" not in msg and snapshot(out) == good
    monkeypatch.delattr(train, "open")
    resumed = train.fit(tiny_model(seed=3), train_loader, test_loader, cfg_for(out, epochs=2, resume=True))
    assert strip_times(resumed) == strip_times(straight)


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
def test_permission_errors_name_the_file_not_the_cleanup(tmp_path, monkeypatch, code, words):
    def refuse(path, mode="r", *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    def refuse_unlink(self, missing_ok=False):  # on a read-only mount the cleanup fails as well
        raise OSError(code, os.strerror(code), str(self))
    monkeypatch.setattr(train, "open", refuse, raising=False)
    monkeypatch.setattr(Path, "unlink", refuse_unlink)
    with pytest.raises(OSError) as info:
        train.atomic_save({"x": torch.zeros(3)}, tmp_path / "last.pt")
    assert info.value.errno == code and f"cannot write {tmp_path / 'last.pt'}: {words}" in str(info.value)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_results_json_disk_full(tmp_path, monkeypatch):
    from sequencer_mini.core import provenance
    real_fdopen = os.fdopen
    monkeypatch.setattr(provenance.os, "fdopen",
                        lambda fd, *a, **k: (os.close(fd), real_fdopen(os.open("/dev/full", os.O_WRONLY), *a, **k))[1])
    with pytest.raises(OSError, match=r"no space left on the device while writing .*r.json: it needs about"):
        provenance.write_results(tmp_path / "r.json", {"v": 1})
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# ----------------------------------------------------------------------------- kill -9 and Ctrl-C

def _cli(args: list[str], trees, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "SEQUENCER_QUIET": "1", "SEQUENCER_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    env.pop("SEQUENCER_DATA", None)
    if fault is not None:
        env["SEQUENCER_TEST_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "sequencer_mini.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)


def _as_in_a_terminal() -> None:
    """The run's Ctrl-C as in a terminal: a test suite started in the background (``pytest &``, ``nohup``) has
    SIGINT ignored, the child would inherit that, and the Ctrl-C tests would wait for a run that never hears it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_paused(proc: subprocess.Popen) -> str:
    """Read the run's stderr until it says it paused (SEQUENCER_TEST_FAULT=pause@K); the line."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("SEQUENCER_TEST_FAULT: paused"):
            return line
    raise AssertionError(f"the run ended without pausing: {proc.communicate()}")


INTERRUPTED = ["--dataset", "fashion_mnist", "--model", "small_cnn", "--budget", "ci", "--device", "cpu",
               "--epochs", "6", "--limit-train", "64", "--limit-test", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def uninterrupted(trees, tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQUENCER_QUIET", "1")
        threads = torch.get_num_threads()
        payload = main([*INTERRUPTED, "--data-root", str(trees["fm"]),
                        "--out", str(tmp_path_factory.mktemp("straight"))])
        torch.set_num_threads(threads)
    return payload


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=["kill -9", "Ctrl-C", "SIGTERM"])
def test_interrupted_run_resumes_to_the_same_result(sig, trees, tmp_path, uninterrupted):
    """The run is held at a known point (paused right after epoch 1's last.pt is in place, by the test-only
    SEQUENCER_TEST_FAULT=pause@2), then signalled: no race with the clock, on a machine of any speed."""
    args = [*INTERRUPTED, "--data-root", str(trees["fm"]), "--out", str(tmp_path / "run")]
    proc = _cli(args, trees, fault="pause@2")
    assert "(after replace last.pt)" in _wait_paused(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err and "continue with --resume" in err, err
    else:
        assert proc.returncode == -sig
    done = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"]
    assert done == 1
    resumed = main([*args, "--resume"])
    assert strip_times(resumed["history"]) == strip_times(uninterrupted["history"])


# ----------------------------------------------------------------------------- pretrained() and a stalled network

@pytest.fixture
def stalled_server():
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte; yields (port, accepted list)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_pretrained_keeps_its_deadline_when_the_network_stalls(stalled_server, tmp_path):
    port, accepted = stalled_server
    code = f"""
import time, sequencer_mini.interop.weights as w
w.OFFICIAL_URLS["sequencer2d_s"] = "http://127.0.0.1:{port}/sequencer2d_s.pth"
t0 = time.monotonic()
try:
    w.pretrained("sequencer2d_s", timeout=3)
except RuntimeError as e:
    print("ELAPSED", time.monotonic() - t0)
    print(e)
"""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert "ELAPSED" in proc.stdout, proc.stdout + proc.stderr
    elapsed = float(proc.stdout.split("ELAPSED")[1].split()[0])
    assert elapsed < 3 + 5, proc.stdout  # not the Hub's retries (54 s before the deadline existed); slack: a busy CPU
    assert accepted, "the request never reached the stalled server"
    assert "no complete answer within the 3 s deadline" in proc.stdout
    assert "not tried: the 3 s deadline had passed" in proc.stdout, proc.stdout


def test_pretrained_fails_fast_on_a_refused_port(monkeypatch):
    import sequencer_mini.interop.weights as w
    with socket.socket() as s:  # a port that was free a moment ago: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setitem(w.OFFICIAL_URLS, "sequencer2d_s", f"http://127.0.0.1:{port}/sequencer2d_s.pth")
    monkeypatch.setitem(w.MODELS, "sequencer2d_s", lambda **kw: torch.nn.Linear(1, 1))  # time the network only
    t0 = time.monotonic()
    with pytest.raises(RuntimeError,
                       match=r"(?s)needs internet.*no network connection to 127.0.0.1.*no network connection"):
        w.pretrained("sequencer2d_s", timeout=30)
    assert time.monotonic() - t0 < 5


# ============================================================================= issue 23: nothing lost, nothing
# silently wrong. Every example of the issue, and each class of items 1-8: the exit code (or exception), the key
# words of the message, and that no existing file changed. Network cases use servers on 127.0.0.1 only.

from sequencer_mini.core import fsutil  # noqa: E402
from sequencer_mini.core.provenance import DryRunResultsError, read_results, write_results  # noqa: E402


def _world(tmp: Path) -> dict:
    """Every file under ``tmp`` with its size, mtime and hash (the lock file aside: it comes and goes)."""
    return {k: v for k, v in (snapshot(tmp) or {}).items() if not k.endswith(fsutil.LOCK_NAME)}


@pytest.fixture(scope="module")
def finished(trees, tmp_path_factory) -> Path:
    """A finished 2-epoch run with --keep-epochs and --val 16 (so best.pt too): results, last/best/final, epochs/."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQUENCER_QUIET", "1")
        threads = torch.get_num_threads()
        main([*RUN, "--epochs", "2", "--keep-epochs", "--val", "16", "--data-root", str(trees["fm"]),
              "--out", str(out)])
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def dry_finished(trees, tmp_path_factory) -> Path:
    """A dry run's folder (SEQUENCER_DRY_RUN=1), stopped after epoch 1 of 2: last.pt and results.json."""
    out = tmp_path_factory.mktemp("dry") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQUENCER_QUIET", "1")
        mp.setenv("SEQUENCER_DRY_RUN", "1")
        threads = torch.get_num_threads()
        main([*RUN, "--epochs", "2", "--stop-after", "1", "--data-root", str(trees["fm"]), "--out", str(out)])
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def bad_trees(tmp_path_factory) -> dict[str, Path]:
    """Fashion-MNIST trees with one thing wrong each."""
    import gzip
    import struct

    import numpy as np
    from fixtures import FMNIST_NAMES, idx_bytes
    root = tmp_path_factory.mktemp("bad_trees")

    def tree(name: str, n_train: int = 64, n_test: int = 32, side_test: int = 28, train_labels=None,
             n_train_labels: int | None = None) -> None:
        rng = np.random.default_rng(0)
        (root / name).mkdir()
        for split, n, side in (("train", n_train, 28), ("test", n_test, side_test)):
            images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
            labels = (np.arange(n if split == "test" or n_train_labels is None else n_train_labels) % 10
                      ).astype(np.uint8)
            if split == "train" and train_labels is not None:
                labels = train_labels
            for fname, arr in zip(FMNIST_NAMES[split], (images, labels), strict=True):
                raw = idx_bytes(arr) if arr.dtype == np.uint8 else (  # float32 labels: IDX dtype code 0x0D
                    struct.pack(">HBBI", 0, 0x0D, 1, len(arr)) + arr.astype(">f4").tobytes())
                (root / name / f"{fname}.gz").write_bytes(gzip.compress(raw))

    tree("labels_out_of_range", train_labels=np.array([12] + [1] * 63, dtype=np.uint8))
    tree("labels_fractional", train_labels=(np.arange(64) % 10 + 0.5).astype(np.float32))
    tree("sizes_differ", side_test=32)
    tree("no_train_images", n_train=0)
    tree("labels_short", n_train_labels=60)
    return {p.name: p for p in root.iterdir()}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _lock(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / fsutil.LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                    "started": "2026-01-01T00:00:00Z"}))


def _ckpt_edit(out: Path, edit) -> None:
    ckpt = torch.load(out / "last.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out / "last.pt")


def _nan_weights(ckpt: dict) -> None:
    next(iter(ckpt["model"].values())).view(-1)[0] = float("nan")


def _recorded_copy(src: Path, out: Path) -> None:
    """A committed run folder: what git holds of a run (no last.pt, no best.pt)."""
    shutil.copytree(src, out)
    (out / "last.pt").unlink()
    (out / "best.pt").unlink(missing_ok=True)


# (id, setup(world, ctx) -> None, extra argv, env, exit code, regex). "{out}": the run's --out (world/run);
# ctx: the module fixtures. Unless it names its own, each row gets "--epochs 2 --data-root {fm} --out {out}".
CLI23 = [
    # item 1: a run folder is owned
    ("out is a committed run folder (no last.pt)", lambda w, c: _recorded_copy(c["finished"], w / "run"), [], {}, 2,
     r"--out .*run holds another run's files \(results.json, final.pt, epochs\): choose a new --out, or pass "
     r"--overwrite"),
    ("resume into a committed run folder", lambda w, c: _recorded_copy(c["finished"], w / "run"), ["--resume"], {}, 2,
     r"--resume: .*run holds a finished or recorded run \(results.json, final.pt, epochs\) but no last.pt to continue"),
    ("out holds a finished run", lambda w, c: shutil.copytree(c["finished"], w / "run"), [], {}, 2,
     r"last.pt exists: pass --resume to continue that run, or choose a new --out \(--overwrite replaces it"),
    ("out holds only results.json", lambda w, c: _write_results(w / "run" / "results.json", {"complete": True}), [], {},
     2, r"holds another run's files \(results.json\)"),
    ("second live run into the same out", lambda w, c: _lock(w / "run", os.getpid()), [], {}, 1,
     r"run is being written by another run \(process \d+ on this machine.*choose another --out"),
    ("lock held on another host", lambda w, c: _lock(w / "run", 1, "elsewhere"), [], {}, 1,
     r"process 1 on host 'elsewhere' \(since .*its lock was touched \d+ s ago\).*If that run is no longer running, "
     r"wait 300 s after its last touch, or delete .*\.run\.lock"),
    ("out empty (an unset variable)", None, ["--out", ""], {}, 2, r"--out '' is empty: expected a folder"),
    ("out whitespace", None, ["--out", "  "], {}, 2, r"--out '  ' is empty"),
    ("resume and overwrite together", None, ["--resume", "--overwrite"], {}, 2, r"contradict each other"),
    # item 3: divergence
    ("lr 1e6 diverges", None, ["--lr", "1e6"], {}, 1, r"training diverged: .* became nan in epoch 1.*learning rate "
     r".*peak --lr 1e\+06\).*no checkpoint was written.*no results are marked complete"),
    ("resume a checkpoint with NaN weights",
     lambda w, c: (shutil.copytree(c["partial"], w / "run"), _ckpt_edit(w / "run", _nan_weights)), ["--resume"], {}, 1,
     r"checkpoint .*last.pt holds non-finite weights \(NaN or infinity\) in model\..*it is not resumed"),
    # item 4: dry runs never touch real runs
    ("dry-run resume into a real run", lambda w, c: shutil.copytree(c["partial"], w / "run"), ["--resume"],
     {"SEQUENCER_DRY_RUN": "1"}, 2, r"holds a real run's .*files and this is a dry run: dry runs never write into"),
    ("real resume into a dry run's folder", lambda w, c: shutil.copytree(c["dry"], w / "run"), ["--resume"], {}, 2,
     r"holds a dry run's \(SEQUENCER_DRY_RUN\) files and this is a real run"),
    ("dry run overwriting a real run", lambda w, c: shutil.copytree(c["partial"], w / "run"), ["--overwrite"],
     {"SEQUENCER_DRY_RUN": "1"}, 2, r"holds a real run's .*this is a dry run"),
    ("dry-run checkpoint without results.json, resumed for real",
     lambda w, c: (shutil.copytree(c["dry"], w / "run"), (w / "run" / "results.json").unlink()), ["--resume"], {}, 2,
     r"holds a dry run's"),
    # item 5: one parser for every switch
    ("SEQUENCER_DRY_RUN=maybe", None, [], {"SEQUENCER_DRY_RUN": "maybe"}, 2,
     r"SEQUENCER_DRY_RUN='maybe' is not an on/off value; accepted: 1, true, yes, on \(on\) or 0, false, no, off"),
    ("SEQUENCER_DRY_RUN=n", None, [], {"SEQUENCER_DRY_RUN": "n"}, 2, r"SEQUENCER_DRY_RUN='n' is not an on/off value"),
    ("SEQUENCER_OFFLINE=perhaps", None, [], {"SEQUENCER_OFFLINE": "perhaps"}, 2,
     r"SEQUENCER_OFFLINE='perhaps' is not an on/off"),
    ("SEQUENCER_DEBUG=2", None, [], {"SEQUENCER_DEBUG": "2"}, 2, r"SEQUENCER_DEBUG='2' is not an on/off"),
    ("SEQUENCER_QUIET=loud", None, [], {"SEQUENCER_QUIET": "loud"}, 2, r"SEQUENCER_QUIET='loud' is not an on/off"),
    ("SEQUENCER_DOWNLOAD_TIMEOUT=inf", None, [], {"SEQUENCER_DOWNLOAD_TIMEOUT": "inf"}, 2,
     r"\$SEQUENCER_DOWNLOAD_TIMEOUT='inf' is not a number of seconds: expected a finite number > 0"),
    ("SEQUENCER_DOWNLOAD_TIMEOUT=-1", None, [], {"SEQUENCER_DOWNLOAD_TIMEOUT": "-1"}, 2,
     r"SEQUENCER_DOWNLOAD_TIMEOUT='-1' is not a number of seconds"),
    ("SEQUENCER_TEST_FAULT=bad", None, [], {"SEQUENCER_TEST_FAULT": "now"}, 2, r"SEQUENCER_TEST_FAULT='now': expected"),
    ("threads 10000", None, ["--threads", "10000"], {}, 2,
     r"--threads 10000: expected a number of threads >= 1 and <= \d+ \(the cores this process may use\)"),
    # item 6: every file read is checked and named
    *[(f"checkpoint without {field}",
       lambda w, c, field=field: (shutil.copytree(c["partial"], w / "run"),
                                  _ckpt_edit(w / "run", lambda ck: ck.pop(field))), ["--resume"], {}, 1,
       rf"checkpoint .*last.pt \(sequencer_mini/checkpoint/v2\) is incomplete: missing field\(s\) {field} .*delete it")
      for field in ("optimizer", "scheduler", "scaler", "rng", "history", "train_config")],
    ("checkpoint of an unknown format", lambda w, c: (shutil.copytree(c["partial"], w / "run"),
                                                     _ckpt_edit(w / "run", lambda ck: ck.update(format="v9"))),
     ["--resume"], {}, 1, r"is format 'v9', not a sequencer_mini/checkpoint/v2 training checkpoint"),
    ("history without images_seen and no data record",
     lambda w, c: (shutil.copytree(c["partial"], w / "run"),
                   _ckpt_edit(w / "run", lambda ck: (ck["history"].pop("images_seen"), ck.pop("data"),
                                                     ck.update(format="sequencer_mini/checkpoint/v1")))),
     ["--resume"], {}, 1, r"has no images_seen in its history and records no training-set size"),
    ("labels out of range", None, ["--data-root", "{labels_out_of_range}"], {}, 1,
     r"train-labels-idx1-ubyte.gz: labels must be in \[0, 10\) \(10 classes\), found 12"),
    ("fractional labels", None, ["--data-root", "{labels_fractional}"], {}, 1,
     r"train-labels-idx1-ubyte.gz: labels must be whole class numbers, found 0.5"),
    ("train and test sizes differ", None, ["--data-root", "{sizes_differ}"], {}, 1,
     r"sizes_differ: the test images of fashion_mnist are 1x32x32, expected 1x28x28.*differ in size"),
    ("no training images", None, ["--data-root", "{no_train_images}"], {}, 1,
     r"no_train_images: the training split of fashion_mnist holds 0 images"),
    ("fewer labels than images", None, ["--data-root", "{labels_short}"], {}, 1,
     r"train-labels-idx1-ubyte.gz: expected 64 labels \(one per image\)"),
    ("val with --no-fast", None, ["--val", "16", "--no-fast"], {}, 2, r"--val 16: a validation split needs in-memory"),
]


@pytest.mark.parametrize("case", CLI23, ids=[c[0] for c in CLI23])
def test_cli_refuses_issue23(case, trees, bad_trees, partial_run, finished, dry_finished, tmp_path, monkeypatch,
                             capsys):
    name, setup, extra, env, code, pattern = case
    world, out = tmp_path / "world", tmp_path / "world" / "run"
    world.mkdir()
    ctx = {"partial": partial_run, "finished": finished, "dry": dry_finished}
    if setup is not None:
        setup(world, ctx)
    names = {**{k: str(v) for k, v in {**trees, **bad_trees}.items()}, "out": str(out)}
    extra = [a.format(**names) for a in extra]
    args = [*RUN, "--epochs", "2"]
    if "--out" not in extra:
        args += ["--out", str(out)]
    if "--data-root" not in extra:
        args += ["--data-root", str(trees["fm"])]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before, threads = _world(world), torch.get_num_threads()
    assert run(main, [*args, *extra]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(pattern, err, re.S), err
    assert _world(world) == before  # no existing file changed, none added
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- item 1: what is allowed

def test_stale_lock_is_cleared_and_resume_continues(partial_run, trees, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(partial_run, out)
    pid = _dead_pid()
    _lock(out, pid)
    assert run(main, [*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"removed a stale lock: .*\.run\.lock named process {pid} .*no longer running", err), err
    assert not (out / fsutil.LOCK_NAME).exists() and read_results(out / "results.json")["complete"]


def test_a_stale_lock_from_another_host_is_cleared(partial_run, trees, tmp_path, capsys):
    """A Colab VM that disconnected (or a killed container) left its lock: another host, untouched for an hour."""
    out = tmp_path / "run"
    shutil.copytree(partial_run, out)
    _lock(out, 12345, "colab-vm-that-disconnected")
    os.utime(out / fsutil.LOCK_NAME, (time.time() - 3600, time.time() - 3600))
    assert run(main, [*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"removed a stale lock: .* process 12345 on host 'colab-vm-that-disconnected' .*untouched for "
                     r"36\d\d s", err), err


def test_live_owner_tells_a_running_run_from_a_gone_one(tmp_path):
    """What a restarted scheduler (bench/experiments.py run) asks before it starts a run: is the folder's lock held
    by a live run? This process: yes; a finished pid: no; another host: while its heartbeat is fresh."""
    assert fsutil.live_owner(tmp_path / "none") is None
    _lock(tmp_path / "mine", os.getpid())
    assert fsutil.live_owner(tmp_path / "mine")["pid"] == os.getpid()
    _lock(tmp_path / "gone", _dead_pid())
    assert fsutil.live_owner(tmp_path / "gone") is None
    _lock(tmp_path / "colab", 12345, "colab-vm")
    assert fsutil.live_owner(tmp_path / "colab")["host"] == "colab-vm"
    os.utime(tmp_path / "colab" / fsutil.LOCK_NAME, (time.time() - 3600, time.time() - 3600))
    assert fsutil.live_owner(tmp_path / "colab") is None
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / fsutil.LOCK_NAME).write_text("{")
    assert fsutil.live_owner(tmp_path / "torn") is None


def test_overwrite_replaces_the_old_run_entirely(finished, trees, tmp_path):
    """--overwrite: the old run's files go first, so no old epochs/NNN.pt is read as the new run's."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    main([*RUN, "--epochs", "1", "--data-root", str(trees["fm"]), "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "last.pt", "results.json"]
    assert read_results(out / "results.json")["epochs_completed"] == 1


def test_load_trained_refuses_weights_of_another_run(finished, tmp_path):
    """A results.json of a 1-epoch run beside the final.pt of an older 2-epoch one: refused, not returned as
    'epoch 2 of 1'."""
    from sequencer_mini.analysis.trained import load_trained, run_name
    run_dir = tmp_path / run_name("small_cnn", 0)
    shutil.copytree(finished, run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    results["epochs_completed"] = 1
    (run_dir / "results.json").write_text(json.dumps(results))
    before = _world(tmp_path)
    with pytest.raises(ValueError, match=r"final.pt holds epoch 2, but the run's results.json records 1 epoch"):
        load_trained("small_cnn", results_dir=tmp_path, fallback="error", log=None)
    assert _world(tmp_path) == before


# ----------------------------------------------------------------------------- item 3: divergence, library level

class _PoisonedAt:
    """A loader that turns its images into NaN from ``epoch`` on (0-based): the run diverges there."""

    def __init__(self, loader, epoch: int):
        self.loader, self.epoch, self.now = loader, epoch, 0
        self.dataset = loader.dataset

    def set_epoch(self, epoch: int) -> None:
        self.now = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield (x * float("nan") if self.now >= self.epoch else x), y


def test_divergence_stops_with_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path):
    from test_train import cfg_for, tiny_model, toy_loaders
    train_loader, test_loader = toy_loaders(n=64)
    out = tmp_path / "run"
    poisoned = _PoisonedAt(train_loader, 1)
    train.fit(tiny_model(), poisoned, test_loader, cfg_for(out, epochs=3, stop_after=1))
    good = snapshot(out)
    with pytest.raises(train.DivergedError) as info:
        train.fit(tiny_model(), poisoned, test_loader, cfg_for(out, epochs=3, resume=True))
    msg = str(info.value)
    assert re.search(r"training diverged: the training loss became nan in epoch 2, step 1 of 2 \(optimizer step 3 "
                     r"of the run\), at learning rate [\d.e-]+ .*last.pt still holds epoch 1, the last good one",
                     msg), msg
    assert snapshot(out) == good  # nothing of the diverged epoch was written


def test_results_json_is_always_strict_json(tmp_path):
    with pytest.raises(ValueError, match=r"non-finite numbers at history.train_loss\[1\] \(nan\).*not written"):
        write_results(tmp_path / "r.json", {"history": {"train_loss": [0.5, float("nan")]}})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- library readers (items 3, 4, 6, 8)

def _race_dir(tmp: Path, finished: Path, edit=None, name: str = "fmnist-race240k-small_cnn-s0") -> Path:
    run_dir = tmp / name
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(finished, run_dir)
    if edit is not None:
        edit(run_dir)
    return tmp


def _trained(tmp, finished, edit, call="load"):
    from sequencer_mini.analysis import trained
    if call == "race":  # chapter 6's race table reads the protocol's folders under a repository root
        from sequencer_mini.analysis.experiments import race_table
        from sequencer_mini.train.protocol import race_run
        _race_dir(tmp, finished, edit, race_run("small_cnn", 8e-3, 0).out)
        return race_table({"small_cnn": 8e-3}, root=tmp)
    root = _race_dir(tmp, finished, edit, trained.run_name("small_cnn", 0))
    if call == "seeds":
        return trained.race_seeds("small_cnn", results_dir=root)
    return trained.load_trained("small_cnn", results_dir=root, fallback="error", log=None)


def _with_choice(tmp: Path, finished: Path, text: str):
    """load_trained with the tuning's choice.json replaced by ``text`` (the race's folder names need its rates)."""
    from sequencer_mini.analysis import trained
    choice = _write(tmp / "choice.json", text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trained, "_choice_file", lambda: choice)
        return trained.load_trained("small_cnn", results_dir=tmp, fallback="error", log=None)


def _truncate(path: Path, keep: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _make_dry(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    results["provenance"]["dry_run"] = True
    (run_dir / "results.json").write_text(json.dumps(results))


def _nan_final(run_dir: Path) -> None:
    weights = torch.load(run_dir / "final.pt", weights_only=True)
    _nan_weights(weights)
    torch.save(weights, run_dir / "final.pt")


def _erf_call(images=None, **kw):
    from sequencer_mini.analysis.erf import effective_receptive_field
    from sequencer_mini.models.baselines import small_cnn
    model = small_cnn(in_chans=1, num_classes=10, img_size=28)
    return effective_receptive_field(model, torch.randn(2, 1, 28, 28) if images is None else images, "stages.0", **kw)


def _nan_pixel() -> torch.Tensor:
    x = torch.randn(4, 1, 28, 28)
    x[1, 0, 3, 3] = float("nan")
    return x


# (id, call(tmp, ctx), exception, regex); ctx: finished, partial. Each also checks that no file under tmp changed.
LIBRARY23 = [
    ("read_results: truncated", lambda t, c: read_results(_write(t / "r.json", '{"complete": tr')),
     ValueError, r"results file '.*r.json' is not valid JSON \(.* truncated or damaged\); regenerate"),
    ("read_results: zero bytes", lambda t, c: read_results(_write(t / "r.json", "")), ValueError, r"r.json' is empty"),
    ("read_results: not an object", lambda t, c: read_results(_write(t / "r.json", "[1, 2]")),
     ValueError, r"r.json' holds a JSON list, expected an object"),
    ("read_results: bare NaN", lambda t, c: read_results(_write(t / "r.json", '{"acc": NaN}')),
     ValueError, r"r.json' is not valid JSON: it holds a bare NaN"),
    ("load_trained: truncated results.json",
     lambda t, c: _trained(t, c["finished"], lambda d: _truncate(d / "results.json")),
     ValueError, r"results file '.*fmnist-race240k-small_cnn-s0/results.json' is not valid JSON.*remake the run "
                 r"with: python -m sequencer_mini.train .*--out book/results/fmnist-race240k-small_cnn-s0"),
    ("load_trained: truncated choice.json", lambda t, c: _with_choice(t, c["finished"], '{"chosen_lr": {"sm'),
     ValueError, r"results file '.*choice.json' is not valid JSON .*python bench/experiments.py run"),
    ("load_trained: choice.json without the model's rate",
     lambda t, c: _with_choice(t, c["finished"], '{"chosen_lr": {"small_vit": 0.002, "sequencer2d_fast28": 0.004}}'),
     ValueError, r"choice.json: 'chosen_lr' must give a learning rate > 0 .*none for \['small_cnn'\]; restore it"),
    ("race_seeds: truncated results.json",
     lambda t, c: _trained(t, c["finished"], lambda d: _truncate(d / "results.json"), "seeds"),
     ValueError, r"results file '.*fmnist-race240k-small_cnn-s0/results.json' is not valid JSON"),
    ("load_trained: results.json not an object",
     lambda t, c: _trained(t, c["finished"], lambda d: _write(d / "results.json", "42")),
     ValueError, r"results.json' holds a JSON int, expected an object"),
    ("race_table: truncated results.json",
     lambda t, c: _trained(t, c["finished"], lambda d: _truncate(d / "results.json"), "race"),
     ValueError, r"results file '.*fmnist-race240k-small_cnn-s0/results.json' is not valid JSON.*"
                 r"python bench/experiments.py run"),
    ("load_trained: zero-byte final.pt", lambda t, c: _trained(t, c["finished"], lambda d: _write(d / "final.pt", "")),
     ValueError, r"weights file .*final.pt is empty \(0 bytes"),
    ("load_trained: truncated final.pt",
     lambda t, c: _trained(t, c["finished"], lambda d: _truncate(d / "final.pt", 4000)),
     ValueError, r"weights file .*final.pt is unreadable \(truncated or not a weights file"),
    ("load_trained: NaN weights", lambda t, c: _trained(t, c["finished"], _nan_final),
     ValueError, r"final.pt holds non-finite weights \(NaN or infinity\) in 1 tensor"),
    ("load_trained: a dry run's results", lambda t, c: _trained(t, c["finished"], _make_dry),
     DryRunResultsError, r"written by a dry run"),
    ("pretrained: NaN weights file",
     lambda t, c: _pretrained(checkpoint=_save(t / "nan.pth", {"w": torch.tensor([1.0, float("nan")])})),
     RuntimeError, r"checkpoint file '.*nan.pth' holds non-finite weights"),
    ("pretrained: timeout inf", lambda t, c: _pretrained(timeout=float("inf")),
     ValueError, r"timeout must be a number of seconds > 0 and <= 1e\+06, got inf"),
    ("load_checkpoint: a weights file, not a checkpoint",
     lambda t, c: train.load_checkpoint(c["finished"] / "final.pt", _tiny()),
     RuntimeError, r"final.pt is a weights file .*not a sequencer_mini/checkpoint/v2 training checkpoint"),
    ("load_checkpoint: history shorter than its epochs",
     lambda t, c: train.load_checkpoint(_ckpt_copy(t, c["partial"], lambda ck: ck.update(epoch=5)), _tiny()),
     RuntimeError, r"says 5 epoch\(s\) done but its history lists 1 epochs"),
    ("check_labels: negative", lambda t, c: data.check_labels(torch.tensor([1, -1]), 10, "f.idx"),
     ValueError, r"f.idx: labels must be in \[0, 10\)"),
    ("ERF: one NaN pixel", lambda t, c: _erf_call(_nan_pixel()), ValueError, r"images hold 1 non-finite value"),
    ("ERF: batch_size 0", lambda t, c: _erf_call(batch_size=0),
     ValueError, r"batch_size must be a whole number .*got 0"),
    ("ERF: empty map", lambda t, c: _erf_measure("area", torch.zeros(0, 0)), ValueError, r"got an empty map"),
    ("ERF: no maps", lambda t, c: _erf_measure("joint", []), ValueError, r"at least one ERF map, got none"),
    ("ERF: NaN map", lambda t, c: _erf_measure("cross", torch.full((3, 3), float("nan"))),
     ValueError, r"must be finite"),
]


def _ckpt_copy(tmp: Path, partial: Path, edit) -> Path:
    ckpt = torch.load(partial / "last.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp / "edited.pt")
    return tmp / "edited.pt"


def _erf_measure(which: str, arg):
    from sequencer_mini.analysis import erf
    if which == "area":
        return erf.area_ratios(arg, (0, 0))
    if which == "cross":
        return erf.cross_share(arg, (1, 2), (1, 2))
    return erf.joint_minmax(arg)


@pytest.mark.parametrize("case", LIBRARY23, ids=[c[0] for c in LIBRARY23])
def test_library_refuses_issue23(case, tmp_path, finished, partial_run):
    name, call, exc, pattern = case
    before = _world(finished), _world(partial_run)
    with pytest.raises(exc) as info:
        call(tmp_path, {"finished": finished, "partial": partial_run})
    assert re.search(pattern, str(info.value), re.S), str(info.value)
    assert (_world(finished), _world(partial_run)) == before


def test_environment_switches_parse_one_way(monkeypatch):
    from sequencer_mini.core import env
    from sequencer_mini.core.budget import dry_run, quiet
    for raw, want in (("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("false", False),
                      ("no", False), ("off", False), ("", False)):
        monkeypatch.setenv("SEQUENCER_DRY_RUN", raw)
        monkeypatch.setenv("SEQUENCER_QUIET", raw)
        monkeypatch.setenv("SEQUENCER_OFFLINE", raw)
        assert dry_run() is want and env.download_allowed(None) is not want, raw
        monkeypatch.delenv("CI", raising=False)
        assert quiet() is want
    monkeypatch.setenv("SEQUENCER_OFFLINE", "0")  # before issue 23: read as "on"
    assert env.download_allowed(None)


def test_an_older_checkpoint_is_upgraded_and_resumes(partial_run, trees, tmp_path):
    """v1 (before dry_run) without images_seen but with its data record: upgraded, resumed, equal to v2's."""
    out, ref = tmp_path / "old", tmp_path / "ref"
    shutil.copytree(partial_run, out)
    shutil.copytree(partial_run, ref)
    _ckpt_edit(out, lambda ck: (ck["history"].pop("images_seen"), ck.pop("dry_run", None),
                                ck.update(format="sequencer_mini/checkpoint/v1")))
    args = [*RUN, "--epochs", "2", "--data-root", str(trees["fm"]), "--resume"]
    old = main([*args, "--out", str(out)])
    new = main([*args, "--out", str(ref)])
    assert strip_times(old["history"]) == strip_times(new["history"]) and old["complete"]


# ----------------------------------------------------------------------------- item 7: verified downloads

class _Server:
    """An HTTP server on 127.0.0.1 answering every GET with ``body`` (and ``length`` as Content-Length)."""

    def __init__(self, body: bytes, content_type: str = "application/octet-stream", length: int | None = None):
        import http.server

        outer = self
        self.body, self.hits = body, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length if length is not None else len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sequencer2d_s.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _weights_bytes(tmp: Path) -> bytes:
    torch.save({"weight": torch.ones(1, 1), "bias": torch.zeros(1)}, tmp / "good.pth")
    return (tmp / "good.pth").read_bytes()


def _official_release_at(server: _Server, tmp_path: Path, monkeypatch) -> Path:
    """Point pretrained("sequencer2d_s") at ``server`` (a tiny model, a cache under ``tmp_path``); returns where
    torch.hub caches the file."""
    import sequencer_mini.interop.weights as w
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(w.OFFICIAL_URLS, "sequencer2d_s", server.url)
    monkeypatch.setitem(w.MODELS, "sequencer2d_s", lambda **kw: torch.nn.Linear(1, 1))
    return tmp_path / "torch" / "hub" / "checkpoints" / "sequencer2d_s.pth"


@pytest.mark.parametrize("served, content_type, length, words", [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html; charset=utf-8", None,
     r"the server sent an HTML page \(48 bytes, text/html; charset=utf-8\), not a weights file"),
    (b"\x00garbage that is not a weights file", "application/octet-stream", None,
     r"the server sent 35 bytes starting with b'\\x00garbage that is' \(application/octet-stream\), not a weights "
     r"file"),
    ("cut", "application/octet-stream", 10**6, r"was cut short: [\d,]+ of 1,000,000 bytes; nothing was cached"),
], ids=["HTML with status 200", "garbage with status 200", "cut short"])
def test_pretrained_refuses_a_bad_download_and_caches_nothing(served, content_type, length, words, tmp_path,
                                                             monkeypatch):
    import sequencer_mini.interop.weights as w
    body = _weights_bytes(tmp_path)[:2000] if served == "cut" else served
    server = _Server(body, content_type, length)
    try:
        _official_release_at(server, tmp_path, monkeypatch)
        with pytest.raises(RuntimeError, match=r"(?s)could not load the official sequencer2d_s weights.*" + words):
            w.pretrained("sequencer2d_s", timeout=30)
        assert server.hits == 1
        cached = tmp_path / "torch" / "hub" / "checkpoints"
        assert not cached.exists() or list(cached.iterdir()) == []  # nothing cached, no partial file
    finally:
        server.close()


def test_pretrained_verifies_the_cache_and_moves_a_bad_copy_aside(tmp_path, monkeypatch, capsys):
    import sequencer_mini.interop.weights as w
    good = _weights_bytes(tmp_path)
    server = _Server(good)
    try:
        cached = _official_release_at(server, tmp_path, monkeypatch)
        w.pretrained("sequencer2d_s", timeout=30)  # first download: the checksum is recorded beside it
        assert cached.read_bytes() == good
        assert capsys.readouterr().err.count("the library records no checksum for sequencer2d_s.pth") == 1
        digest = hashlib.sha256(good).hexdigest()
        assert (cached.parent / "sequencer2d_s.pth.sha256").read_text().split() == [digest, str(len(good))]
        w.pretrained("sequencer2d_s", timeout=30)
        assert server.hits == 1  # the verified cache is used
        tampered = bytearray(good)
        tampered[-30] ^= 1  # a valid-looking file with one bit changed
        cached.write_bytes(bytes(tampered))
        w.pretrained("sequencer2d_s", timeout=30)
        err = capsys.readouterr().err
        assert re.search(r"the cached weights file .*sequencer2d_s.pth failed its check \(its SHA-256 is \w+, expected "
                         rf"{digest}.*moved aside to .*sequencer2d_s.pth.bad-\d+T\d+; downloading it again", err), err
        assert server.hits == 2 and cached.read_bytes() == good
        assert len(list(cached.parent.glob("sequencer2d_s.pth.bad-*"))) == 1
        monkeypatch.setitem(w.WEIGHT_FILES, "sequencer2d_s.pth", (len(good) + 1, None))  # a recorded size
        with pytest.raises(RuntimeError, match=r"does not match its record: its size is [\d,]+ bytes, expected"):
            w.pretrained("sequencer2d_s", timeout=30)
    finally:
        server.close()


# ----------------------------------------------------------------------------- item 2: killed at every write

KILLED = [*RUN, "--epochs", "2", "--keep-epochs", "--val", "16"]


def _forked_run(argv: list[str], fault: str) -> int:
    """``run(main, argv)`` in a forked child with ``SEQUENCER_TEST_FAULT=fault``; its wait status. A fork, not a
    new interpreter: the child starts with everything imported, so each killed run costs its training only."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            os.environ["SEQUENCER_TEST_FAULT"] = fault
            fsutil._points.clear()
            code = run(main, argv)
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _tensors(obj, prefix: str = "") -> dict:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _tensors(val, f"{prefix}.{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _tensors(val, f"{prefix}[{i}]").items()}
    return {}


def _assert_same_run(out: Path, ref: Path) -> None:
    """Same files; every weights file's tensors bitwise equal (last.pt: model, optimizer, EMA, RNG); the same
    history; results complete."""
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(out) == files(ref)
    for rel in files(ref):
        if rel.endswith(".pt"):
            a, b = (torch.load(d / rel, weights_only=True) for d in (out, ref))
            ta, tb = _tensors({k: v for k, v in a.items() if k != "history"}), _tensors(
                {k: v for k, v in b.items() if k != "history"})
            assert ta.keys() == tb.keys(), rel
            assert all(torch.equal(ta[k], tb[k]) for k in ta), rel
            if "history" in a:
                assert strip_times(a["history"]) == strip_times(b["history"]), rel
    got, want = (read_results(d / "results.json") for d in (out, ref))
    assert got["complete"] and strip_times(got["history"]) == strip_times(want["history"])


def test_killed_at_every_write_resumes_to_the_uninterrupted_run(trees, tmp_path):
    """kill -9 at each write of a run (each file's temporary written, then renamed: both sides of every rename),
    then --resume: every folder ends complete and equal to an uninterrupted run's."""
    argv = [*KILLED, "--data-root", str(trees["fm"])]
    fsutil._points.clear()
    main([*argv, "--out", str(tmp_path / "ref")])
    points = fsutil.fault_points()
    assert points[-2:] == ["before replace results.json", "after replace results.json"], points
    assert {"after replace final.pt", "after replace best.pt", "after replace 002.pt"} <= set(points), points
    for k, label in enumerate(points, 1):
        out = tmp_path / f"killed-{k}"
        status = _forked_run([*argv, "--out", str(out)], f"kill@{k}")
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (k, label, status)
        main([*argv, "--out", str(out), "--resume"])
        _assert_same_run(out, tmp_path / "ref")


def test_a_second_live_run_into_the_same_out_is_refused(trees, tmp_path, capsys):
    """Two runs started into one --out: the first holds the folder (paused before its first last.pt is in place),
    the second is refused naming the first's process, and nothing the first wrote is touched."""
    out = tmp_path / "run"
    args = [*INTERRUPTED, "--data-root", str(trees["fm"]), "--out", str(out)]
    first = _cli(args, trees, fault="pause@1")
    try:
        assert "(before replace last.pt)" in _wait_paused(first)
        before = snapshot(out)
        assert run(main, args) == 1
        err = capsys.readouterr().err
        assert re.search(rf"run is being written by another run \(process {first.pid} on this machine", err), err
        assert snapshot(out) == before
    finally:
        first.kill()
        first.communicate()


def test_debug_off_means_off(trees, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQUENCER_DEBUG", "0")  # before issue 23: any non-empty value read as "on"
    assert run(main, [*RUN, "--data-root", str(trees["empty"]), "--out", str(tmp_path / "run")]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_pretrained_moves_aside_a_partial_file_left_under_the_final_name(tmp_path, monkeypatch, capsys):
    """What torch.hub's own download left after a cut connection: a partial file under the final name, no record."""
    import sequencer_mini.interop.weights as w
    good = _weights_bytes(tmp_path)
    server = _Server(good)
    try:
        cached = _official_release_at(server, tmp_path, monkeypatch)
        cached.parent.mkdir(parents=True)
        cached.write_bytes(good[: len(good) // 2])
        w.pretrained("sequencer2d_s", timeout=30)
        err = capsys.readouterr().err
        assert re.search(r"the cached weights file .*sequencer2d_s.pth failed its check \(it is not a readable weights "
                         r"file.*moved aside to .*sequencer2d_s.pth.bad-", err), err
        assert cached.read_bytes() == good and server.hits == 1
    finally:
        server.close()
