"""Data-parallel training over torch.distributed ranks (docs/scaling.md, "One big job on a multi-GPU host").

`optimize` (unlearning/training.py) turns data-parallel when a process group of more than one rank is
initialised (worker/rank.py starts one with torchrun): each rank takes its `tensor_split` share of every planned
batch, backpropagates its loss weighted by its share of the batch's rows, and the gradients are summed over
ranks before the mask, the clip and the step. Every rank then holds the same weights and momentum, so a
checkpoint written by rank 0 is the whole state and resumes on any number of ranks.

A loss that is a mean over a batch's rows gives exactly the one-process gradient this way, BatchNorm included:
`batchnorm_synced` all-reduces the batch statistics in train mode (torch's SyncBatchNorm refuses CPU tensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


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
    """`flat` summed over the ranks. Two gloo ranks swap their tensors and each adds the other's (the same sum, bit
    for bit, on both): one round trip where gloo's all-reduce takes several. A curve step of cnn-small on this
    project's 2-core host took 2.2 ms less that way (27.1 against 29.3 ms, interleaved blocks; docs/scaling.md)."""
    if dist.get_world_size() != 2 or dist.get_backend() != "gloo":
        dist.all_reduce(flat)
        return flat
    other, peer = torch.empty_like(flat), 1 - dist.get_rank()
    for work in dist.batch_isend_irecv([dist.P2POp(dist.isend, flat, peer), dist.P2POp(dist.irecv, other, peer)]):
        work.wait()
    return flat + other


def _synced_forward(self: _BatchNorm, x: Tensor) -> Tensor:
    """Train-mode BatchNorm with the batch's mean and variance over every rank's rows (differentiable through the
    all-reduce); eval mode is the module's own."""
    if not self.training:
        return super(type(self), self).forward(x)  # the BatchNorm class this one was made from
    channels, dims = x.shape[1], [0, *range(2, x.dim())]
    values = x.float()
    local = torch.cat([values.sum(dims), (values * values).sum(dims), values.new_full((1,), x.numel() / channels)])
    total = dist_nn.all_reduce(local)
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
