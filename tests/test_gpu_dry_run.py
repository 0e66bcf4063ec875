"""Every notebook at the ``gpu`` budget, as a dry run on the CPU.

``SEQUENCER_BUDGET=gpu SEQUENCER_DRY_RUN=1``: each notebook runs with the gpu budget's sizes (models,
batch sizes, image sizes, data paths, plots, glue) while every training or sweep loop that goes through
:func:`sequencer_mini.core.budget.limit` (``fit``, ``train_one_epoch``, ``evaluate`` and the notebooks' own
loops) stops after two items. CUDA is hidden, so the device falls back to the CPU although the budget is
``gpu``; downloads are off (``SEQUENCER_OFFLINE``). CIFAR-10 and Imagenette come as small random fixtures
(``$SEQUENCER_DATA``), so that chapters 7 and 8 run their gpu-budget training paths (on the CPU, which a dry
run allows) instead of the "no data here" fallback; Fashion-MNIST is the real one. Each notebook runs in a
fresh kernel on a copy of ``book/``: whatever a dry run writes (results files marked ``dry_run``,
checkpoints) stays in the test's temporary folder.

Run one chapter: ``python -m pytest tests/test_gpu_dry_run.py -k 07``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from fixtures import load_script

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
TIMES = ROOT / "_build" / "dry_run_times.json"
EXECUTED = ROOT / "_build" / "dry_run"
CELL_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def load_tool(name: str):
    return load_script(f"tools/{name}.py")


@pytest.fixture(scope="module")
def book_copy(tmp_path_factory) -> Path:
    """A copy of book/ (notebooks, data/, results/), so that a dry run cannot touch the checkout."""
    dest = tmp_path_factory.mktemp("dry-run") / "book"
    shutil.copytree(BOOK, dest, ignore=shutil.ignore_patterns("_vendor", ".ipynb_checkpoints"))
    stamp = load_tool("stamp_setup_cells")
    for path in dest.glob("*.ipynb"):  # run the setup cell this checkout's tool writes, stamped or not
        nb = nbformat.read(path, as_version=4)
        if stamp.stamp(nb, chapter=path.stem):
            nbformat.write(nb, path)
    return dest


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> Path:
    """$SEQUENCER_DATA with the real Fashion-MNIST files (linked), a random CIFAR-10 (50 + 10 images) and
    Imagenette-320 (1 + 1 per class)."""
    from fixtures import make_cifar_tree, make_image_folder

    from sequencer_mini.train.data import IMAGENETTE_WNIDS, find_fashion_mnist

    root = tmp_path_factory.mktemp("dry-run-data")
    # A named data folder is the only one searched (issue 13), so the real Fashion-MNIST files are linked in too.
    fmnist = find_fashion_mnist(download=False)
    for f in fmnist.iterdir():
        if "idx" in f.name:
            (root / f.name).symlink_to(f.resolve())
    make_cifar_tree(root, n_per_batch=10)
    for split in ("train", "val"):
        make_image_folder(root / "imagenette2-320" / split, list(IMAGENETTE_WNIDS), per_class=1, size=96,
                          ext=".JPEG")
    return root


def dry_run_env(monkeypatch, scratch: Path, data: Path) -> None:
    """The kernel's environment (kernels inherit this process's)."""
    for name, value in {
        "SEQUENCER_DATA": str(data),
        "SEQUENCER_BUDGET": "gpu",
        "SEQUENCER_DRY_RUN": "1",
        "SEQUENCER_OFFLINE": "1",  # no downloads: missing data takes the chapter's documented fallback
        "SEQUENCER_QUIET": "1",
        "SEQUENCER_CHECKPOINTS": str(scratch / "checkpoints"),
        "CUDA_VISIBLE_DEVICES": "",  # the CPU even on a GPU machine: the dry run checks code paths, not speed
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(name, value)


def _record_time(name: str, seconds: float) -> None:
    """Add one notebook's time to TIMES. The notebooks run in both xdist workers, so the read-modify-write holds
    a lock (a sibling ``.lock`` file) and replaces the file atomically: no worker's entry is lost."""
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    with open(TIMES.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(TIMES.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data[name] = round(seconds, 1)
        tmp = TIMES.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, TIMES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_gpu_budget_dry(path: Path, book_copy: Path, fixture_data: Path, tmp_path: Path,
                                         monkeypatch) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    dry_run_env(monkeypatch, tmp_path, fixture_data)
    nb = nbformat.read(book_copy / path.name, as_version=4)
    for cell in nb.cells:  # start from a clean slate: no stored output can hide a failure
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", startup_timeout=300,
                            resources={"metadata": {"path": str(book_copy)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed at the gpu budget (dry run):\n{err}", pytrace=False)
    finally:
        seconds = time.perf_counter() - start
        _record_time(path.name, seconds)
        EXECUTED.mkdir(parents=True, exist_ok=True)  # for a look at what failed, with per-cell timings
        nbformat.write(nb, EXECUTED / path.name)
    # every code cell ran, and the budget the notebook saw was gpu with the dry run on
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), path.name
    printed = "".join(o.get("text", "") for c in code[:1] for o in c.outputs)
    assert "budget: gpu" in printed and "dry run" in printed, printed
    assert "device: cuda" not in printed.lower()


def test_dry_run_results_are_marked_and_refused(tmp_path: Path, monkeypatch) -> None:
    """A dry run's results file carries provenance.dry_run; outside a dry run read_results refuses it."""
    from sequencer_mini.core.provenance import DryRunResultsError, is_dry_run, read_results, write_results

    monkeypatch.setenv("SEQUENCER_DRY_RUN", "1")
    path = write_results(tmp_path / "results.json", {"best_test_acc": 0.99})
    assert read_results(path)["provenance"]["dry_run"] is True  # the dry run reads back its own file
    monkeypatch.delenv("SEQUENCER_DRY_RUN")
    with pytest.raises(DryRunResultsError, match="dry run"):
        read_results(path, command="python -m sequencer_mini.train ...")
    assert is_dry_run(read_results(path, allow_dry_run=True))
    real = write_results(tmp_path / "real.json", {"best_test_acc": 0.5})
    assert "dry_run" not in read_results(real)["provenance"]


def test_dry_run_stops_fit_after_two_epochs_of_two_steps(monkeypatch) -> None:
    """fit, train_one_epoch and evaluate honour the dry run; outside it they run in full."""
    import torch

    from sequencer_mini import create_model
    from sequencer_mini.core.budget import limit
    from sequencer_mini.train.loop import TrainConfig, fit

    seen: list[int] = []

    class Batches:  # a loader that counts the batches taken from it
        def __init__(self, items: list) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __iter__(self):
            for batch in self.items:
                seen.append(1)
                yield batch

    g = torch.Generator().manual_seed(0)
    batches = Batches([(torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g))
                       for _ in range(5)])
    tiny = dict(layers=(1, 1), embed_dims=(16, 32), hidden_sizes=(4, 8))
    cfg = TrainConfig(epochs=3, amp="off", device="cpu")
    monkeypatch.setenv("SEQUENCER_DRY_RUN", "1")
    assert fit(create_model("sequencer2d_mini28", **tiny), batches, batches, cfg)["epoch"] == [1, 2]
    assert len(seen) == 2 * (2 + 2)  # 2 epochs x (2 training + 2 evaluation batches)
    assert list(limit(iter(range(10)))) == [0, 1] and limit((1, 2, 3), 1) == (1,)
    monkeypatch.delenv("SEQUENCER_DRY_RUN")
    seen.clear()
    assert fit(create_model("sequencer2d_mini28", **tiny), batches, batches, cfg)["epoch"] == [1, 2, 3]
    assert len(seen) == 3 * (5 + 5) and limit(range(10)) == range(10)
