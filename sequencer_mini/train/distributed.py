"""Past one GPU: data-parallel training with PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node=N -m sequencer_mini.train ...`` starts ``N`` copies of the trainer. Each one:

* joins the process group (:func:`init`: NCCL with one GPU per process, gloo on CPUs);
* builds the same model from the same seed (DDP also broadcasts rank 0's weights at the start);
* reads its own share of every global batch (:func:`shard`): the shuffle order is the same function of
  ``(seed, epoch)`` in every process, global batch ``b`` is cut into ``N`` interleaved slices, rank ``r``
  takes slice ``r``. ``--batch-size`` stays the *global* batch, so a run on ``N`` processes is the same run
  as on one (``tests/test_distributed.py`` checks the weights and the history);
* averages gradients with every other rank after each backward pass (:func:`wrap`: DDP's all-reduce);
* leaves checkpoints, results and printing to rank 0 (:func:`is_main`); the epoch statistics are
  all-reduced first (:func:`reduce_epoch_stats`), so rank 0 reports the whole batch, not its slice.

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) every function here is a
no-op and the trainer runs exactly as before.

What is left as it was: every rank evaluates the whole test set (the same numbers on each; simple, but for
ImageNet's 50,000 validation images ``N`` times the work of sharding it), and BatchNorm statistics are per
process (our Sequencers use LayerNorm only; the CNN baseline would want ``nn.SyncBatchNorm``).
"""

from __future__ import annotations

import os
from typing import Any
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

__all__ = ["init", "teardown", "is_distributed", "rank", "world_size", "is_main", "barrier", "wrap", "shard",
           "ShardedLoader", "reduce_epoch_stats"]


def is_distributed() -> bool:
    """Has :func:`init` started a process group with more than one process?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints and results and prints."""
    return rank() == 0


def init(device: str = "auto") -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment; return this process's device.

    NCCL and ``cuda:LOCAL_RANK`` when CUDA is available and ``device`` is ``'auto'`` or ``'cuda'``, else gloo on
    the CPU. Without ``torchrun`` (``WORLD_SIZE`` unset or 1): no process group, just the device.
    """
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device(("cuda" if want_cuda else "cpu") if device == "auto" else device)
    if not dist.is_initialized():
        if want_cuda:
            local_rank = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local_rank)  # "cuda" now means this process's GPU
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    return torch.device("cuda", torch.cuda.current_device()) if want_cuda else torch.device("cpu")


def teardown() -> None:
    """Leave the process group (after the last collective call)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` under torchrun, else ``model`` itself.

    Train through the wrapper (its backward all-reduces the gradients); save, evaluate and count parameters on
    the plain ``model`` (the wrapper's state-dict keys start with ``module.``).
    """
    if not is_distributed():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class _ShardedBatchSampler(Sampler[list[int]]):
    """Cut the sampler's order into global batches and yield slice ``rank::world`` of each."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, rank: int, world: int):
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]


class ShardedLoader:
    """This rank's share of every global batch of ``loader``, with the loader's length and ``set_epoch``.

    * a ``DataLoader`` (image folders) is rebuilt on a sharded batch sampler, so each process reads and
      decodes only its own images;
    * any other loader of global batches (our in-memory :class:`~sequencer_mini.train.data.TensorLoader`) is sliced
      after the batch is built, so augmentation draws stay exactly those of a single process.
    """

    def __init__(self, loader: Any, rank: int, world: int):
        batch_size = getattr(loader, "batch_size", None)
        if batch_size is None or batch_size % world:
            raise ValueError(f"the global batch size ({batch_size}) must be a multiple of the number of processes "
                             f"({world}), so that every process gets the same share of each batch")
        n = len(loader.dataset)
        last = n % batch_size
        if last and last < world and not getattr(loader, "drop_last", False):
            raise ValueError(f"the last batch holds {last} image(s) ({n} images, batch {batch_size}), too few to give "
                             f"each of the {world} processes one; change the data size or the batch size")
        self.loader, self.rank, self.world, self.batch_size = loader, rank, world, batch_size
        self.dataset = loader.dataset
        self._dataloader: DataLoader | None = None
        if isinstance(loader, DataLoader):
            # DataLoader.sampler is typed Sampler | Iterable; ours are always Samplers
            sampler = _ShardedBatchSampler(loader.sampler, batch_size, loader.drop_last, rank, world)  # type: ignore[arg-type]
            self._dataloader = DataLoader(
                loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                persistent_workers=loader.persistent_workers)
        full, last = divmod(n, batch_size)
        drop = getattr(loader, "drop_last", False)
        #: images this rank sees per epoch
        self.num_samples = full * len(range(rank, batch_size, world)) + (0 if drop else len(range(rank, last, world)))

    def set_epoch(self, epoch: int) -> None:
        # The sampler (and worker seeds) of a DataLoader are shared with the rebuilt one: one call sets both.
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)
        elif hasattr(getattr(self.loader, "sampler", None), "set_epoch"):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)  # global steps: the learning-rate schedule is the single-process one

    def __iter__(self) -> Iterator[Any]:
        if self._dataloader is not None:
            yield from self._dataloader
            return
        for x, y in self.loader:
            yield x[self.rank::self.world], y[self.rank::self.world]


def shard(loader: Iterable) -> Iterable:
    """:class:`ShardedLoader` of ``loader`` for this rank under torchrun; ``loader`` itself otherwise."""
    return ShardedLoader(loader, rank(), world_size()) if is_distributed() else loader


def reduce_epoch_stats(stats: dict[str, float], loader: Iterable) -> dict[str, float]:
    """Whole-batch epoch statistics from every rank's own: loss and accuracy averaged with each rank's image
    count as weight, images/s summed, epoch time the slowest rank's. Unchanged outside torchrun."""
    if not is_distributed():
        return stats
    n = float(getattr(loader, "num_samples", 1))
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    sums = torch.tensor([stats["train_loss"] * n, stats["train_acc"] * n, n, stats["images_per_s"]],
                        dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    slowest = torch.tensor([stats["epoch_time_s"]], dtype=torch.float64, device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    loss, acc, total, speed = sums.tolist()
    out = {**stats, "train_loss": loss / total, "train_acc": acc / total, "images_per_s": speed,
           "epoch_time_s": slowest.item()}
    if "images" in stats:  # the images of this epoch on all ranks together
        out["images"] = int(round(total))
    return out
