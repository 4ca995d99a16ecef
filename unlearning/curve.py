"""The quadratic Bézier curve in weight space and BatchNorm recomputation on retain data (docs/algorithm.md §1).

φ(t) = (1−t)²·θ_o + 2t(1−t)·θ_c + t²·θ_p over every learnable parameter. One network module is evaluated
with `torch.func.functional_call` on the composed tensors, so θ_c is a plain dict of tensors. BatchNorm
running statistics are not on the curve: a point is published only after they are recomputed from
retain data.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim.swa_utils import update_bn

from unlearning.config import EVAL_BATCH_SIZE
from unlearning.data import InputAdapter, Subset, batches

StateDict = dict[str, Tensor]


def bezier_coefficients(t: float) -> tuple[float, float, float]:
    return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t**2


class BezierCurve:
    """A curve between θ_o (t=0) and θ_p (t=1) through the control point θ_c.

    `model` is a working copy of the architecture: its parameters are overwritten when a point is
    materialised and its BatchNorm buffers are used (and updated) in train-mode forward passes.
    """

    def __init__(
        self, model: nn.Module, theta_o: StateDict, theta_p: StateDict, theta_c: StateDict | None = None
    ) -> None:
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = [name for name, _ in self.model.named_parameters()]
        # Copies in the working model's layout: θ_p or a resumed θ_c may come contiguous while the model runs
        # channels_last, and φ(t) mixing the two layouts costs 1.6× per step.
        like = {n: self.model.get_parameter(n) for n in self.names}
        self.start = {n: in_layout_of(like[n], theta_o[n]) for n in self.names}
        self.end = {n: in_layout_of(like[n], theta_p[n]) for n in self.names}
        if theta_c is None:
            theta_c = {n: (self.start[n] + self.end[n]) / 2 for n in self.names}
        self.control = {n: in_layout_of(like[n], theta_c[n]) for n in self.names}

    def to(self, device: torch.device) -> BezierCurve:
        self.model.to(device)
        for tensors in (self.start, self.end, self.control):
            for n in self.names:
                tensors[n] = tensors[n].to(device)
        return self

    def weights_at(self, t: float, control: dict[str, Tensor] | None = None) -> StateDict:
        """φ(t) for every parameter; differentiable with respect to tensors of `control`."""
        a, b, c = bezier_coefficients(t)
        control = control or self.control
        return {n: _in_layout(self.start[n], a * self.start[n] + b * control[n] + c * self.end[n]) for n in self.names}

    def forward(self, inputs: Tensor, t: float, control: dict[str, Tensor] | None = None) -> Tensor:
        return functional_call(self.model, self.weights_at(t, control), (inputs,))

    @torch.no_grad()
    def set_point(self, t: float, retain: Subset, adapter: InputAdapter, batch_size: int = EVAL_BATCH_SIZE) -> None:
        """Put φ(t) into the working model, with BatchNorm statistics recomputed on `retain` only."""
        for name, value in self.weights_at(t).items():
            self.model.get_parameter(name).copy_(value)
        recompute_batchnorm(self.model, retain, adapter, batch_size)
        self.model.eval()

    def weights(self) -> StateDict:
        """A copy of the working model's weights in the default layout (it may run channels_last), ready
        for safetensors."""
        return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in self.model.state_dict().items()}


def _in_layout(reference: Tensor, value: Tensor) -> Tensor:
    """`value` (differentiably) with `reference`'s strides; `in_layout_of` is the detached copy for stored weights.
    Arithmetic re-derives the strides of size-1 dimensions: a channels_last [16, 1, 3, 3] weight (a grey image's
    first convolution, a depthwise one) comes out as (9, 9, 3, 1), which convolution reads as contiguous, so its
    layer ran in the slow layout with a conversion before the next (cnn-small on Fashion-MNIST, 64 rows, one
    thread: 53 against 35 ms a training step)."""
    if value.stride() == reference.stride():
        return value
    return torch.empty_like(reference).copy_(value)


def in_layout_of(reference: Tensor, value: Tensor) -> Tensor:
    """A copy of `value` with `reference`'s device, dtype and memory layout."""
    return torch.empty_like(reference).copy_(value.detach())


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, data: Subset, adapter: InputAdapter, batch_size: int = EVAL_BATCH_SIZE
) -> None:
    """Running mean/var as a cumulative average over one pass of `data` (retain rows only, by contract)."""
    update_bn(((x,) for x, _ in batches(data, batch_size, adapter)), model)
