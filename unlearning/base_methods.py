"""Base unlearning methods that produce θ_p from θ_o (docs/algorithm.md §5), in an open registry.

A method is declared once, torch-free, in `config.py` (`declare_base_method`: name, defaults, description),
and its implementation, a function (model, data, config, context) -> model, registers here against that
name. The fields a method leaves `None` in its defaults are the ones it does not use, and setting them is a
config error. All methods use SGD with momentum 0.9, batch 128.

Defaults were tuned by a small lr × epochs grid (`python -m bench.tune`) on sklearn digits and MNIST-5k,
random and class-wise forgetting, `cnn-small` (the table is in docs/benchmarks.md), so that each method
forgets without collapsing: the least mean Avg. Gap to retrain among the settings that keep retain
accuracy ≥ 90% everywhere. The reference's values (docs/algorithm.md §5) left `ft` (lr 0.01) forgetting nothing. Forget
cross-entropy of `ga` and `neggrad_plus` is clamped at `forget_loss_cap` (its gradient vanishes beyond).
`ga` has a cliff: its step count grows with the forget set, and no single setting both forgets a digits
class (2 batches an epoch) and keeps MNIST-5k's retain accuracy (lr 0.003 for 3 epochs drops it to 63%);
the default keeps retain accuracy and forgets little on small forget sets. Tune it per model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.config import BaseMethodConfig, ConfigError, base_method_spec
from unlearning.data import Subset, UnlearningData, batches
from unlearning.distributed import batchnorm_synced
from unlearning.training import (
    Batch,
    BatchesFn,
    BatchPlan,
    DivergenceError,
    JobHooks,
    LossFn,
    forget_then_retain_batches,
    optimize,
    part_cross_entropy,
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
_RUNNERS: dict[str, MethodFn] = {}


def register_base_method(name: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator: `fn` implements base method `name`, which must be declared (config.declare_base_method)
    first: the declaration is what the API, CLI and benchmarks read, so a method they cannot see never runs."""
    spec = base_method_spec(name)  # ConfigError for an undeclared name

    def decorate(fn: MethodFn) -> MethodFn:
        if spec.name in _RUNNERS:
            raise ValueError(f"base method {name!r} has an implementation already")
        _RUNNERS[spec.name] = fn
        return fn

    return decorate


def run_base_method(
    name: str, model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext
) -> nn.Module:
    """θ_p from θ_o: runs on a copy, `model` itself is left untouched. Data-parallel (unlearning/distributed.py)
    when a process group is initialised, with BatchNorm's batch statistics over every rank's rows."""
    spec = base_method_spec(name)
    if name not in _RUNNERS:
        raise ConfigError("base_method", f"base method {name!r} is declared but not implemented in this process")
    working = copy.deepcopy(model)
    with batchnorm_synced(working):
        return _RUNNERS[name](working, data, spec.resolve(config), context)


def _sizes(config: BaseMethodConfig) -> tuple[int, int]:
    """A resolved config's epochs and batch size: the built-ins' defaults set both (config.py)."""
    assert config.epochs is not None and config.batch_size is not None
    return config.epochs, config.batch_size


def _optimizer(model: nn.Module, config: BaseMethodConfig) -> tuple[list[nn.Parameter], torch.optim.Optimizer]:
    params = [p for p in model.parameters() if p.requires_grad]
    assert config.lr is not None and config.momentum is not None  # every method's defaults set both
    return params, sgd(params, config.lr, config.momentum, config.weight_decay or 0.0)


def _train(
    model: nn.Module,
    config: BaseMethodConfig,
    context: MethodContext,
    make_batches: BatchesFn,
    loss_fn: LossFn,
    grad_masks: dict[int, Tensor] | None = None,
) -> nn.Module:
    """The base phase's loop for every method: `model` in train mode, SGD with `config`'s settings, its epochs."""
    model.train()
    params, optimizer = _optimizer(model, config)
    epochs = _sizes(config)[0]
    optimize(
        params,
        optimizer,
        epochs=epochs,
        seed=context.seed,
        hooks=context.hooks,
        phase="base",
        make_batches=make_batches,
        loss_fn=loss_fn,
        grad_masks=grad_masks,
    )
    # optimize checks the parameters; a BatchNorm statistic can still overflow (weights grown by many orders of
    # magnitude): such a θ_p is no base for a curve.
    broken = [name for name, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise DivergenceError(f"base: {', '.join(broken[:3])} became non-finite; lower lr", epochs - 1)
    return model


def _cross_entropy(model: nn.Module, batch: Batch) -> Tensor:
    return F.cross_entropy(model(batch.inputs), batch.labels)


def _random_wrong_labels(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


def _relabelled_rl(
    model: nn.Module,
    data: UnlearningData,
    config: BaseMethodConfig,
    context: MethodContext,
    grad_masks: dict[int, Tensor] | None,
) -> nn.Module:
    """CE over (a `retain_ratio` sample of retain, fresh each epoch) ∪ (forget with a random wrong label each
    epoch); optionally gradient-masked."""
    assert config.retain_ratio is not None
    batch_size = _sizes(config)[1]
    retain_rows = max(1, round(config.retain_ratio * len(data.retain)))

    def make_batches(_epoch: int, generator: torch.Generator) -> BatchPlan:
        relabelled = Subset(
            data.forget.inputs,
            _random_wrong_labels(data.forget.labels, data.num_classes, generator),
            data.forget.ids,
            data.forget.device,
        )
        retain = data.retain.sample(retain_rows, generator)
        return stratified_batches(retain, relabelled, batch_size, data.adapter, generator)

    return _train(model, config, context, make_batches, lambda b: _cross_entropy(model, b), grad_masks)


@register_base_method("ft")
def fine_tune(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    batch_size = _sizes(config)[1]
    return _train(
        model,
        config,
        context,
        lambda _, g: plain_batches(data.retain, batch_size, data.adapter, g),
        lambda b: _cross_entropy(model, b),
    )


@register_base_method("ga")
def gradient_ascent(
    model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext
) -> nn.Module:
    batch_size = _sizes(config)[1]
    return _train(
        model,
        config,
        context,
        lambda _, g: plain_batches(data.forget, batch_size, data.adapter, g, from_forget=True),
        lambda b: -F.cross_entropy(model(b.inputs), b.labels).clamp(max=config.forget_loss_cap),
    )


def _retain_minus_forget(logits: Tensor, batch: Batch, beta: float, forget_cap: float) -> Tensor:
    """CE(retain part) − β·min(CE(forget part), cap) of one mixed batch."""
    retain_loss = part_cross_entropy(logits, batch.labels, ~batch.is_forget)
    forget_loss = part_cross_entropy(logits, batch.labels, batch.is_forget)
    return retain_loss - beta * forget_loss.clamp(max=forget_cap)


@register_base_method("neggrad_plus")
def neggrad_plus(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    batch_size = _sizes(config)[1]
    beta, cap = config.beta, config.forget_loss_cap
    assert beta is not None and cap is not None
    return _train(
        model,
        config,
        context,
        lambda _, g: stratified_batches(data.retain, data.forget, batch_size, data.adapter, g),
        lambda b: _retain_minus_forget(model(b.inputs), b, beta, cap),
    )


@register_base_method("rl")
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


@register_base_method("salun")
def salun(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    assert config.mask_ratio is not None and config.batch_size is not None
    masks = saliency_masks(model, data, config.mask_ratio, config.batch_size)
    return _relabelled_rl(model, data, config, context, grad_masks=masks)


@register_base_method("l1_sparse")
def l1_sparse(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    """ℓ1-sparse unlearning (Jia et al., 2023, "Model sparsity can simplify machine unlearning"): fine-tuning on
    the retain set with γ·‖θ‖₁ added, γ = l1·(1 − epoch/epochs), so the weights are pushed towards a sparse model
    first and fine-tuned at the end."""
    assert config.l1 is not None
    epochs, batch_size = _sizes(config)
    l1, weight = config.l1, [config.l1]

    def make_batches(epoch: int, generator: torch.Generator) -> BatchPlan:
        weight[0] = l1 * (1 - epoch / epochs)  # the epoch's γ, read by loss_fn
        return plain_batches(data.retain, batch_size, data.adapter, generator)

    def loss_fn(batch: Batch) -> Tensor:
        return _cross_entropy(model, batch) + weight[0] * sum(p.abs().sum() for p in model.parameters())

    return _train(model, config, context, make_batches, loss_fn)


SCRUB_CE_WEIGHT = 0.99  # γ, the retain batches' cross-entropy weight, as published


def _distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher ‖ student) of the softened distributions, × T² (Hinton et al.), mean over the rows."""
    student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean") * temperature**2


@register_base_method("scrub")
def scrub(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    """SCRUB (Kurmanji et al., 2023, "Towards unbounded machine unlearning"): a student, initialised as θ_o, learns
    from θ_o as a teacher. Each of the first `max_epochs` epochs begins with a pass over the forget set that
    maximises KL(teacher ‖ student) (the max steps); every epoch then passes over the retain set minimising
    γ·CE + `kd_weight`·KL (the min steps), which keeps what the student should keep. Unlike the published code, a
    max step's KL is clamped at `forget_loss_cap` (its gradient vanishes beyond), as `ga`'s forget CE: the KL is
    unbounded, and without the cap 2 max epochs of Fashion-MNIST's 6,000 forget rows grew the weights to 1e14 and
    BatchNorm's running variance to inf (docs/benchmarks.md)."""
    cap = config.forget_loss_cap
    assert config.max_epochs is not None and config.kd_weight is not None and config.kd_temperature is not None
    assert cap is not None
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    batch_size = _sizes(config)[1]
    max_epochs, kd_weight, temperature = config.max_epochs, config.kd_weight, config.kd_temperature

    def make_batches(epoch: int, generator: torch.Generator) -> BatchPlan:
        forget = data.forget if epoch < max_epochs else None
        return forget_then_retain_batches(data.retain, forget, batch_size, data.adapter, generator)

    def loss_fn(batch: Batch) -> Tensor:
        logits = model(batch.inputs)
        with torch.no_grad():
            teacher_logits = teacher(batch.inputs)
        kl = _distillation_kl(logits, teacher_logits, temperature)
        if batch.is_forget.all():  # a max step: away from the teacher
            return -kl.clamp(max=cap)
        return SCRUB_CE_WEIGHT * F.cross_entropy(logits, batch.labels) + kd_weight * kl

    return _train(model, config, context, make_batches, loss_fn)


@register_base_method("retrain")
def retrain(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(context.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]  # nn.Module's __getattr__ is typed Tensor
    assert config.epochs is not None and config.lr is not None and config.batch_size is not None
    return train_classifier(
        model,
        data.retain,
        data.adapter,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        momentum=config.momentum or 0.0,
        weight_decay=config.weight_decay or 0.0,
        seed=context.seed,
        hooks=context.hooks,
        phase="base",
    )
