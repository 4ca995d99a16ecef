"""Base unlearning methods that produce θ_p from θ_o (MCU.md §5), in an open registry.

A method is a function (model, data, config, context) -> model, registered under a name together with
its defaults; the fields a method leaves `None` in its defaults are the ones it does not use, and setting
them is a config error. All methods use SGD with momentum 0.9, batch 128.

Defaults were tuned by a small lr grid on sklearn digits, class-wise forgetting, `cnn-small` (the
numbers are in docs/benchmarks.md), so that each method forgets without collapsing: MCU.md's reference
values left `ft` (lr 0.01) and `ga` (lr 1e-3) forgetting nothing. The forget cross-entropy of `ga` and
`neggrad_plus` is clamped at `forget_loss_cap` (its gradient vanishes beyond): unclamped, `neggrad_plus`
at β 0.15 drove retain accuracy to chance; clamped it forgets the class and keeps 99.8%. `ga` still has a
cliff just above its default (lr 0.015 collapses): tune it per model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.config import BaseMethodConfig, ConfigError
from unlearning.data import Subset, UnlearningData, batches
from unlearning.training import (
    Batch,
    JobHooks,
    optimize,
    plain_batches,
    sgd,
    stratified_batches,
    train_classifier,
)


@dataclass(frozen=True)
class MethodContext:
    seed: int
    hooks: JobHooks


MethodFn = Callable[[nn.Module, UnlearningData, BaseMethodConfig, MethodContext], nn.Module]


@dataclass(frozen=True)
class BaseMethod:
    name: str
    run: MethodFn
    defaults: BaseMethodConfig
    description: str

    def resolve(self, given: BaseMethodConfig) -> BaseMethodConfig:
        """The method's defaults overridden by `given`; a setting the method does not use is an error."""
        overrides = {}
        for f in dataclasses.fields(BaseMethodConfig):
            value = getattr(given, f.name)
            if value is None:
                continue
            if getattr(self.defaults, f.name) is None:
                raise ConfigError(f"base.{f.name}", f"does not apply to base method {self.name!r}")
            overrides[f.name] = value
        return dataclasses.replace(self.defaults, **overrides)


_REGISTRY: dict[str, BaseMethod] = {}


def register_base_method(name: str, defaults: BaseMethodConfig, description: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator: make `fn` available as base method `name`."""

    def decorate(fn: MethodFn) -> MethodFn:
        _REGISTRY[name] = BaseMethod(name, fn, defaults, description)
        return fn

    return decorate


def get_base_method(name: str) -> BaseMethod:
    if name not in _REGISTRY:
        raise ConfigError("base_method", f"unknown base method {name!r} (known: {', '.join(base_method_names())})")
    return _REGISTRY[name]


def base_method_names() -> list[str]:
    return sorted(_REGISTRY)


def run_base_method(name: str, model: nn.Module, data: UnlearningData, config: BaseMethodConfig,
                    context: MethodContext) -> nn.Module:
    """θ_p from θ_o: runs on a copy, `model` itself is left untouched."""
    method = get_base_method(name)
    return method.run(copy.deepcopy(model), data, method.resolve(config), context)


def _optimizer(model: nn.Module, config: BaseMethodConfig) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    return params, sgd(params, config.lr, config.momentum, config.weight_decay or 0.0)


def _random_wrong_labels(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def _relabelled_rl(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext,
                   grad_masks: dict[int, Tensor] | None) -> nn.Module:
    """CE over retain ∪ (forget with a random wrong label each epoch); optionally gradient-masked."""
    model.train()
    params, optimizer = _optimizer(model, config)

    def make_batches(generator: torch.Generator):
        relabelled = Subset(data.forget.inputs, _random_wrong_labels(data.forget.labels, data.num_classes, generator),
                            data.forget.ids)
        return stratified_batches(data.retain, relabelled, config.batch_size, data.adapter, generator)

    optimize(params, optimizer, epochs=config.epochs, seed=context.seed, make_batches=make_batches,
             loss_fn=lambda b: F.cross_entropy(model(b.inputs), b.labels), hooks=context.hooks, phase="base",
             grad_masks=grad_masks)
    return model


_SGD = {"batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4}


@register_base_method("ft", BaseMethodConfig(epochs=10, lr=0.1, **_SGD), "fine-tune: CE on the retain set")
def fine_tune(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    model.train()
    params, optimizer = _optimizer(model, config)
    optimize(params, optimizer, epochs=config.epochs, seed=context.seed, hooks=context.hooks, phase="base",
             make_batches=lambda g: plain_batches(data.retain, config.batch_size, data.adapter, g),
             loss_fn=lambda b: F.cross_entropy(model(b.inputs), b.labels))
    return model


@register_base_method("ga", BaseMethodConfig(epochs=5, lr=0.01, batch_size=128, momentum=0.9, weight_decay=0.0,
                                                     forget_loss_cap=5.0),
                      "gradient ascent: −min(CE, cap) on the forget set")
def gradient_ascent(model: nn.Module, data: UnlearningData, config: BaseMethodConfig,
                    context: MethodContext) -> nn.Module:
    model.train()
    params, optimizer = _optimizer(model, config)
    optimize(params, optimizer, epochs=config.epochs, seed=context.seed, hooks=context.hooks, phase="base",
             make_batches=lambda g: plain_batches(data.forget, config.batch_size, data.adapter, g, from_forget=True),
             loss_fn=lambda b: -F.cross_entropy(model(b.inputs), b.labels).clamp(max=config.forget_loss_cap))
    return model


def _retain_minus_forget(logits: Tensor, batch: Batch, beta: float, forget_cap: float) -> Tensor:
    """CE(retain part) − β·min(CE(forget part), cap) of one mixed batch."""
    retain_loss = F.cross_entropy(logits[~batch.is_forget], batch.labels[~batch.is_forget])
    forget_loss = F.cross_entropy(logits[batch.is_forget], batch.labels[batch.is_forget])
    return retain_loss - beta * forget_loss.clamp(max=forget_cap)


@register_base_method("neggrad_plus", BaseMethodConfig(epochs=5, lr=0.01, beta=0.15, forget_loss_cap=5.0, **_SGD),
                      "NegGrad+: CE(retain part) − β·min(CE(forget part), cap) on mixed batches")
def neggrad_plus(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    model.train()
    params, optimizer = _optimizer(model, config)
    assert config.beta is not None and config.forget_loss_cap is not None
    optimize(params, optimizer, epochs=config.epochs, seed=context.seed, hooks=context.hooks, phase="base",
             make_batches=lambda g: stratified_batches(data.retain, data.forget, config.batch_size, data.adapter, g),
             loss_fn=lambda b: _retain_minus_forget(model(b.inputs), b, config.beta, config.forget_loss_cap))
    return model


@register_base_method("rl", BaseMethodConfig(epochs=10, lr=0.013, **_SGD),
                      "random label: CE on retain ∪ forget relabelled with a random wrong class")
def random_label(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    return _relabelled_rl(model, data, config, context, grad_masks=None)


def saliency_masks(model: nn.Module, data: UnlearningData, ratio: float, batch_size: int) -> dict[int, Tensor]:
    """SalUn: element masks keeping the top `ratio` of |∇(−CE on forget)| at the current weights, globally."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches(data.forget, batch_size, data.adapter):
        grads = torch.autograd.grad(-F.cross_entropy(model(x), y), params, allow_unused=True)
        for acc, g in zip(total, grads, strict=True):
            if g is not None:
                acc += g
    flat = torch.cat([g.abs().flatten() for g in total])
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, max(1, round(ratio * len(flat)))).indices] = 1.0
    return {id(p): part.view_as(p) for p, part in zip(params, keep.split([p.numel() for p in params]), strict=True)}


@register_base_method("salun", BaseMethodConfig(epochs=10, lr=0.013, mask_ratio=0.5, **_SGD),
                      "SalUn: random label with gradients masked to the most forget-salient weights")
def salun(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    assert config.mask_ratio is not None and config.batch_size is not None
    masks = saliency_masks(model, data, config.mask_ratio, config.batch_size)
    return _relabelled_rl(model, data, config, context, grad_masks=masks)


@register_base_method("retrain", BaseMethodConfig(epochs=20, lr=0.05, **_SGD),
                      "retrain from a fresh initialisation on the retain set (benchmarks' gold standard)")
def retrain(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(context.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    assert config.epochs is not None and config.lr is not None and config.batch_size is not None
    return train_classifier(model, data.retain, data.adapter, epochs=config.epochs, lr=config.lr,
                            batch_size=config.batch_size, momentum=config.momentum or 0.0,
                            weight_decay=config.weight_decay or 0.0, seed=context.seed, hooks=context.hooks,
                            phase="base")
