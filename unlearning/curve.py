"""The quadratic Bézier curve in weight space and BatchNorm recomputation on retain data (MCU.md §1).

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

    def __init__(self, model: nn.Module, theta_o: StateDict, theta_p: StateDict,
                 theta_c: StateDict | None = None) -> None:
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = [name for name, _ in self.model.named_parameters()]
        self.start = {n: theta_o[n].detach().clone() for n in self.names}
        self.end = {n: theta_p[n].detach().clone() for n in self.names}
        if theta_c is None:
            theta_c = {n: (self.start[n] + self.end[n]) / 2 for n in self.names}
        self.control = {n: theta_c[n].detach().clone() for n in self.names}

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
        return {n: a * self.start[n] + b * control[n] + c * self.end[n] for n in self.names}

    def forward(self, inputs: Tensor, t: float, control: dict[str, Tensor] | None = None) -> Tensor:
        return functional_call(self.model, self.weights_at(t, control), (inputs,))

    @torch.no_grad()
    def materialize(self, t: float, retain: Subset, adapter: InputAdapter,
                    batch_size: int = EVAL_BATCH_SIZE) -> StateDict:
        """The concrete weights φ(t) with BatchNorm statistics recomputed on `retain` only."""
        for name, value in self.weights_at(t).items():
            self.model.get_parameter(name).copy_(value)
        recompute_batchnorm(self.model, retain, adapter, batch_size)
        self.model.eval()
        # A copy in the default layout (the model may run channels_last), ready for safetensors.
        return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in self.model.state_dict().items()}


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: Subset, adapter: InputAdapter,
                        batch_size: int = EVAL_BATCH_SIZE) -> None:
    """Running mean/var as a cumulative average over one pass of `data` (retain rows only, by contract)."""
    update_bn(((x,) for x, _ in batches(data, batch_size, adapter)), model)
