"""Data-parallel training over torch.distributed ranks (docs/scaling.md, "One big job on a multi-GPU host").

`optimize` (unlearning/training.py) turns data-parallel when a process group of more than one rank is
initialised (worker/data_parallel.py starts one with torchrun): each rank takes its `tensor_split` share of every
planned batch, backpropagates its loss weighted by its share of the batch's rows, and the gradients are summed over
ranks before the mask, the clip and the step. Every rank then holds the same weights and momentum, so a
checkpoint written by rank 0 is the whole state and resumes on any number of ranks.

A loss that is a mean over a batch's rows gives exactly the one-process gradient this way, BatchNorm included:
`batchnorm_synced` all-reduces the batch statistics in train mode (torch's SyncBatchNorm refuses CPU tensors).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import platform
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @classmethod
    def current(cls) -> Ranks | None:
        """The initialised process group's ranks; None without one, or with a single rank."""
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    def share(self, rows: Tensor) -> Tensor:
        """This rank's contiguous part of `rows` (sizes differ by at most one over the ranks)."""
        return rows.tensor_split(self.world)[self.rank]


def sum_gradients(params: Sequence[Tensor], skip: bool) -> bool:
    """Sum every rank's gradients of `params` in one all-reduce; True when any rank asked to `skip` the step (its
    loss was not finite), in which case no rank steps. A rank that skips contributes zeros."""
    grads = [p.grad if p.grad is not None and not skip else torch.zeros_like(p) for p in params]
    flat = _summed(
        torch.cat([g.reshape(-1).float() for g in grads] + [torch.full((1,), float(skip), device=grads[0].device)])
    )
    if flat[-1] > 0:
        return True
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = g.copy_(flat[offset : offset + g.numel()].view(g.shape))
        offset += g.numel()
    return False


def _summed(flat: Tensor) -> Tensor:
    """`flat` summed over the ranks: through shared memory where every rank is a CPU process of this host
    (`SharedSum`), else gloo's or nccl's all-reduce, which sums into `flat` itself."""
    exchange = SharedSum.of(flat) if flat.device.type == "cpu" else None
    if exchange is None:
        dist.all_reduce(flat)
        return flat
    return exchange.sum(flat)


class SharedSum:
    """Sums one size of CPU tensor over the ranks of this host through a shared-memory file, as DeepSpeed's and
    gloo's newer shm all-reduces do (torch's gloo has none). Each call writes this rank's tensor into its slot of
    one of two buffers and raises its counter to the call's number; once every counter has reached it, each rank
    adds the slots in rank order, so every rank gets the same sum, bit for bit. Two buffers alternating: a rank can
    only write the buffer again after every rank has raised its counter for the call in between, so after all of
    them have finished reading it.

    Against gloo's TCP exchange (two cnn-small curve ranks on 2 cores, 72k floats a step): 0.4-0.6 ms a step in the
    sum instead of 2.2-2.9 ms (median), a curve epoch 0.63 of one process's instead of 0.73 (docs/scaling.md).
    Waiting spins (yielding the core) for `SPIN_SECONDS`, about a step's usual imbalance, then sleeps between looks,
    so a rank waiting longer leaves its core to others (10 ms of spinning was no faster and is costlier on a busy
    host); after `TIMEOUT_SECONDS` (gloo's default) without the other ranks it raises, as a collective would.

    Only on x86-64, whose stores other cores see in program order (a slot is written before its counter); on other
    CPUs the ranks use the all-reduce. The file is unlinked as soon as every rank has mapped it, so nothing is left
    in /dev/shm when a rank dies."""

    DIRECTORY = Path("/dev/shm")
    SPIN_SECONDS = 0.002
    SLEEP_SECONDS = 0.0002
    TIMEOUT_SECONDS = 1800.0
    _LINE = 8  # int64 counters one cache line (64 bytes) apart
    _open: ClassVar[dict[tuple[object, int, torch.dtype], SharedSum | None]] = {}  # (group, numel, dtype) -> exchange

    def __init__(self, memory: mmap.mmap, numel: int, rank: int, world: int) -> None:
        self.rank, self.world, self.calls = rank, world, 0
        # Both views hold the mapping open; it goes with them.
        self.counters = np.frombuffer(memory, dtype=np.int64, count=self._LINE * world)
        self.buffers = torch.frombuffer(memory, dtype=torch.float32, offset=self.counters.nbytes).view(2, world, numel)

    @classmethod
    def of(cls, flat: Tensor) -> SharedSum | None:
        """The exchange for tensors like `flat` in the current process group; None where the ranks cannot share
        memory (another host, another backend, no room in /dev/shm). Every rank must ask, in the same order."""
        key = (dist.group.WORLD, flat.numel(), flat.dtype)
        if key not in cls._open:
            usable = dist.get_backend() == "gloo" and flat.dtype == torch.float32 and platform.machine() == "x86_64"
            cls._open[key] = cls._connect(flat.numel()) if usable else None
        return cls._open[key]

    @classmethod
    def _connect(cls, numel: int) -> SharedSum | None:
        """Rank 0 creates the file and sends its name; every rank maps it; all keep it only if all could."""
        rank, world = dist.get_rank(), dist.get_world_size()
        size = 8 * cls._LINE * world + 2 * world * numel * 4
        name = torch.zeros(32, dtype=torch.uint8)
        path = None
        if rank == 0:
            path = cls.DIRECTORY / f"mcu-sum-{secrets.token_hex(8)}"
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                try:
                    os.posix_fallocate(fd, 0, size)  # no room: OSError now, not SIGBUS at the first write
                    name[: len(path.name)] = torch.tensor(list(path.name.encode()), dtype=torch.uint8)
                finally:
                    os.close(fd)
        dist.broadcast(name, 0)
        sent = bytes(name[name > 0].tolist()).decode()
        memory = None
        if sent:
            with contextlib.suppress(OSError):
                fd = os.open(cls.DIRECTORY / sent, os.O_RDWR)
                try:
                    memory = mmap.mmap(fd, size)
                finally:
                    os.close(fd)
        mapped = torch.tensor([int(memory is not None)])
        dist.all_reduce(mapped, op=dist.ReduceOp.MIN)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if memory is None or not mapped.item():
            if memory is not None:
                memory.close()
            if rank == 0:
                log.warning("gradients are summed by gloo's all-reduce: not every rank could map %s", cls.DIRECTORY)
            return None
        return cls(memory, numel, rank, world)

    def sum(self, flat: Tensor) -> Tensor:
        self.calls += 1
        buffer = self.buffers[self.calls % 2]
        buffer[self.rank].copy_(flat)
        self.counters[self.rank * self._LINE] = self.calls
        started = time.monotonic()
        for other in range(self.world):
            while self.counters[other * self._LINE] < self.calls:
                waited = time.monotonic() - started
                if waited > self.TIMEOUT_SECONDS:
                    raise TimeoutError(f"rank {other} did not add its part of the sum in {self.TIMEOUT_SECONDS:g} s")
                if waited < self.SPIN_SECONDS:
                    os.sched_yield()
                else:
                    time.sleep(self.SLEEP_SECONDS)
        return buffer.sum(0)


class _SummedOverRanks(torch.autograd.Function):
    """`_summed`, differentiable: the gradient with respect to each rank's input is the ranks' output gradients
    summed (as torch.distributed.nn's all_reduce, but through `SharedSum` where the ranks share memory)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        return _summed(tensor.clone())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _summed(grad.contiguous().clone())


def _synced_forward(self: _BatchNorm, x: Tensor) -> Tensor:
    """Train-mode BatchNorm with the batch's mean and variance over every rank's rows (differentiable through the
    all-reduce); eval mode is the module's own."""
    if not self.training:
        return super(type(self), self).forward(x)  # the BatchNorm class this one was made from
    channels, dims = x.shape[1], [0, *range(2, x.dim())]
    values = x.float()
    local = torch.cat([values.sum(dims), (values * values).sum(dims), values.new_full((1,), x.numel() / channels)])
    total = _SummedOverRanks.apply(local)
    count = total[-1]
    mean = total[:channels] / count
    var = (total[channels : 2 * channels] / count - mean * mean).clamp(min=0)
    if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
        with torch.no_grad():
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
    shape = [1, channels] + [1] * (x.dim() - 2)
    out = (values - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out.to(x.dtype)


_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"Synced{cls.__name__}", (cls,), {"forward": _synced_forward})
    return _SYNCED[cls]


@contextlib.contextmanager
def batchnorm_synced(model: nn.Module) -> Iterator[None]:
    """Inside, `model`'s BatchNorm layers normalise a train-mode batch with statistics over all ranks (the module
    keeps its parameters, buffers and state_dict keys); nothing changes without a process group."""
    if Ranks.current() is None:
        yield
        return
    swapped = [(m, type(m)) for m in model.modules() if isinstance(m, _BatchNorm)]
    for module, cls in swapped:
        module.__class__ = _synced_class(cls)
    try:
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls
