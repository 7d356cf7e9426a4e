"""Everything the trainer does across ranks, in one place: the process group (``torchrun`` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT), the rank and device of this process, object all-gathers, votes and barriers
through a CPU (gloo) group, and the feature all-gathers of the contrastive losses.

Every helper is a no-op (or the identity) in a single process, so callers never branch on the world size.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run: its global ``rank``, ``local_rank`` on its node (the CUDA device index),
    the number of ranks ``size`` and the ``device`` it trains on."""

    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def ddp(self) -> bool:
        """Several ranks: the model runs under DistributedDataParallel."""
        return self.size > 1

    @property
    def master(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


@contextlib.contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join the ranks ``torchrun`` started (nccl on CUDA, gloo on CPU; none in a single process), yield this
    process's :class:`World`, and leave the group on exit. ``device`` is ``--device`` ("cpu" or "cuda")."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo", init_method="env://")
    rank, local_rank = (dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))) if size > 1 else (0, 0)
    world = World(rank, local_rank, size, torch.device(f"cuda:{local_rank}" if device == "cuda" else "cpu"))
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield world
    finally:
        if world.ddp:
            dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """The number of ranks of the process group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


@functools.lru_cache(maxsize=1)
def _cpu_group() -> Any:
    # Created lazily, on every rank at the same point: the first vote or object gather of the run.
    return dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD


def all_ranks_agree(flag: bool, op: str = "all") -> bool:
    """Whether ``flag`` holds on all (``op="all"``) or any (``op="any"``) rank, through a CPU (gloo) group so that
    the per-step vote never waits for the GPU's queue (a CUDA tensor's .item() would sync every step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "all" else dist.ReduceOp.MAX, group=_cpu_group())
    return bool(t.item())


def all_gather(obj: Any) -> list:
    """``obj`` of every rank (picklable), index = rank, through the CPU group; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
    if not is_distributed():
        return obj
    message = [obj]
    dist.broadcast_object_list(message, src=0)
    return message[0]


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def mean(value: torch.Tensor) -> float:
    """The scalar ``value`` averaged over ranks (a collective: every rank calls it at the same point)."""
    if is_distributed():
        value = value.detach().clone().float()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def average_gradients(module: torch.nn.Module) -> None:
    """Average ``module``'s gradients over ranks, as DDP does for the model's (for parameters outside DDP)."""
    if not is_distributed():
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync`` (this backward keeps its gradients local) of ``model``: a DDP or a compiled DDP.
    Raises TypeError for a model with no DDP inside."""
    while not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        inner = getattr(model, "_orig_mod", None)  # torch.compile's wrapper
        if not isinstance(inner, torch.nn.Module):
            raise TypeError(f"gradient accumulation under DDP needs a DistributedDataParallel model, "
                            f"got {type(model).__name__}")
        model = inner
    return model.no_sync()


# ---- feature all-gathers of the losses (tensors on the device, through the default group) ----

def _sizes(local: torch.Tensor) -> list[int]:
    # Ranks may hold different batch sizes (the GPU-decode path drops images nvJPEG rejects).
    size = torch.tensor([local.shape[0]], device=local.device)  # (1,)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]  # world x (1,)
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _padded(local: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([local, local.new_zeros(rows - local.shape[0], *local.shape[1:])]) if rows > len(local) else local


def gather_without_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(b, D) on every rank -> ((N, D) global rows, offset of the local rows); the local rows keep their gradient."""
    if not is_distributed():
        return local, 0
    sizes, rank = _sizes(local), dist.get_rank()
    parts = [local.new_empty(max(sizes), *local.shape[1:]) for _ in sizes]  # world x (max b, D)
    dist.all_gather(parts, _padded(local.detach(), max(sizes)).contiguous())
    parts = [p[:n] for p, n in zip(parts, sizes, strict=True)]  # rank r: (b_r, D)
    parts[rank] = local
    return torch.cat(parts), sum(sizes[:rank])  # (N, D), N = sum of b_r


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """As gather_without_grad, but gradients flow back to the rank that owns each row."""
    if not is_distributed():
        return local, 0
    import torch.distributed.nn.functional as dist_fn

    sizes, rank = _sizes(local), dist.get_rank()
    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(_padded(local, max(sizes)).contiguous())  # world x (max b, D)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]), sum(sizes[:rank])  # (N, D)
