"""Data-parallel training: ``torchrun`` with 2 gloo processes on the CPU is the same run as 1 process.

The same global batch, the same (seed, epoch) order: the final weights agree to float tolerance (gradients are
averaged in a different order) and so does the history; rank 0 alone writes; resume works under DDP.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import make_idx_tree

from sequencer_mini.train.distributed import ShardedLoader, reduce_epoch_stats, shard, wrap

REPO = Path(__file__).resolve().parent.parent
# 48 images, global batch 16: 3 steps per epoch, 8 images per process and step.
COMMON = ["--dataset", "fashion_mnist", "--model", "sequencer2d_fast28", "--budget", "ci", "--epochs", "2",
          "--limit-train", "48", "--limit-test", "32", "--batch-size", "16", "--aug", "none", "--device", "cpu",
          "--threads", "1"]


def env_for(data: Path) -> dict[str, str]:
    return {**os.environ, "SEQUENCER_DATA": str(data), "SEQUENCER_OFFLINE": "1", "SEQUENCER_QUIET": "1",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(nproc: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "sequencer_mini.train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def test_two_gloo_processes_equal_one_and_resume(tmp_path):
    data = make_idx_tree(tmp_path / "fm", n_train=64, n_test=32)
    env = env_for(data)
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "sequencer_mini.train", *COMMON, "--out", str(one)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    # Two processes, interrupted after epoch 1 and resumed: the resume path runs under DDP too.
    first = torchrun(2, *COMMON, "--out", str(two), "--stop-after", "1", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((two / "results.json").read_text())["epochs_completed"] == 1
    second = torchrun(2, *COMMON, "--out", str(two), "--resume", env=env)
    assert second.returncode == 0, second.stderr[-3000:]

    a, b = weights(one), weights(two)
    assert list(a) == list(b)  # rank 0 saved the plain model, not DDP's "module."-prefixed copy
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    ra, rb = (json.loads((run / "results.json").read_text()) for run in (one, two))
    assert ra["processes"] == 1 and rb["processes"] == 2 and rb["complete"]
    for key in ("epoch", "lr"):
        assert ra["history"][key] == rb["history"][key]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert rb["history"][key] == pytest.approx(ra["history"][key], rel=1e-4, abs=1e-5), key
    assert sorted(p.name for p in two.iterdir()) == ["final.pt", "last.pt", "results.json"]  # no per-rank files


class GlobalBatches:
    """A stand-in loader: 10 items in global batches of 4 (the last holds 2)."""

    batch_size, drop_last = 4, False
    dataset = list(range(10))

    def __len__(self) -> int:
        return 3

    def __iter__(self):
        for b in range(3):
            x = torch.arange(b * 4, min(10, b * 4 + 4))
            yield x, x


def test_sharded_loader_splits_every_global_batch():
    shards = [ShardedLoader(GlobalBatches(), r, 2) for r in range(2)]
    got = [[x.tolist() for x, _ in s] for s in shards]
    assert got == [[[0, 2], [4, 6], [8]], [[1, 3], [5, 7], [9]]]
    assert [s.num_samples for s in shards] == [5, 5] and all(len(s) == 3 for s in shards)


def test_sharded_dataloader_reads_only_its_share():
    from sequencer_mini.train.data import EpochSampler, SeededDataLoader
    dataset = torch.utils.data.TensorDataset(torch.arange(12))
    loader = SeededDataLoader(dataset, batch_size=6, sampler=EpochSampler(12, seed=0),
                              generator=torch.Generator())
    loader.set_epoch(1)
    whole = [x[0].tolist() for x in loader]
    shards = [ShardedLoader(loader, r, 3) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    parts = [[x[0].tolist() for x in s] for s in shards]
    for b, batch in enumerate(whole):
        assert sorted(sum((p[b] for p in parts), [])) == sorted(batch)  # each global batch, split three ways
        assert parts[0][b] == batch[0::3]


def test_uneven_splits_are_refused_with_the_reason():
    loader = GlobalBatches()
    with pytest.raises(ValueError,
                       match=r"global batch size \(4\) must be a multiple of the number of processes \(3\)"):
        ShardedLoader(loader, 0, 3)
    loader.dataset = list(range(9))  # last batch: 1 image for 2 processes
    with pytest.raises(ValueError, match="last batch holds 1 image"):
        ShardedLoader(loader, 0, 2)


def test_single_process_is_untouched():
    loader, model = GlobalBatches(), torch.nn.Linear(2, 2)
    stats = {"train_loss": 1.0, "train_acc": 0.5, "images_per_s": 3.0, "epoch_time_s": 2.0}
    assert shard(loader) is loader and wrap(model, torch.device("cpu")) is model
    assert reduce_epoch_stats(stats, loader) is stats
