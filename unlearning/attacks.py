"""An auditor's attacks on an unlearned model (docs/evidence.md; docs/algorithm.md §12): evidence beyond the
population metrics of a curve point.

- Relearning: fine-tune a copy on retain rows only (and, class-wise, with k forget rows per forgotten class) for a
  small fixed budget and track forget accuracy. A model that regains it quickly hid the forget set rather than
  erased it; points linearly connected to the original, as MCU's path is, are the known risk.
- Feature probe: a logistic regression on the penultimate features (the input of the last linear layer), fit
  on test rows with their true labels, scored on forget rows: high probe accuracy on rows the model itself
  gets wrong means only the head forgot.
- Per-sample membership scores (unlearning/membership.py): the worst-exposed forget rows, which a population
  average hides.

Each check runs on the published version and, for contrast, θ_p and the original; all draws are seeded by the
job's seed, so a check repeats exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from unlearning.config import EvidenceConfig
from unlearning.data import InputAdapter, Subset, UnlearningData, batches, seeded_generator
from unlearning.membership import membership_scores, train_shadow_models
from unlearning.metrics import accuracy, stratified_sample
from unlearning.training import BatchPlan, JobHooks, Progress, autocast

# Seed streams of the checks' draws (the job's seed first), apart from the job's own streams.
_RELEARN_ROWS, _RELEARN_SHOTS, _RELEARN_ORDER, _EVAL_ROWS, _PROBE_SPLIT = 101, 102, 103, 104, 105


def measured_rows(rows: Subset, config: EvidenceConfig, seed: int, count: int | None = None) -> Subset:
    """The seeded, class-stratified sample of `rows` a check measures (at most `config.eval_rows`, or `count`)."""
    return stratified_sample(rows, count or config.eval_rows, seeded_generator(seed, _EVAL_ROWS))


def relearn_curve(
    model: nn.Module,
    retain: Subset,
    shots: Subset,
    measure_on: Subset,
    adapter: InputAdapter,
    config: EvidenceConfig,
    seed: int,
    hooks: JobHooks | None = None,
) -> dict[str, Any]:
    """Forget accuracy (on `measure_on`) of a copy of `model` fine-tuned on `retain` ∪ `shots`, at 0, ¼, ½ and
    all of `config.relearn_steps` SGD steps. `model` itself is not changed."""
    model = copy.deepcopy(model)
    params = [p.requires_grad_(True) for p in model.parameters()]  # a curve's working model has them frozen
    optimizer = torch.optim.SGD(params, lr=config.relearn_lr, momentum=0.9)
    total = config.relearn_steps
    checkpoints = sorted({0, total // 4, total // 2, total})
    measured = {0: accuracy(model, measure_on, adapter)}
    step, epoch = 0, 0
    while step < total:
        for batch in _mixed_batches(retain, shots, adapter, config.relearn_batch_size, seed, epoch):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast(batch.inputs.device):
                loss = F.cross_entropy(model(batch.inputs), batch.labels)
            loss.backward()
            optimizer.step()
            step += 1
            if hooks is not None:
                hooks.check_cancel()
            if step in checkpoints:
                measured[step] = accuracy(model, measure_on, adapter)
            if step == total:
                break
        epoch += 1
    return {"steps": checkpoints, "forget_accuracy": [round(measured[s], 4) for s in checkpoints]}


def _mixed_batches(
    retain: Subset, shots: Subset, adapter: InputAdapter, batch_size: int, seed: int, epoch: int
) -> BatchPlan:
    """One epoch of shuffled batches over retain ∪ shots (each batch takes whichever rows the order gives)."""
    order = torch.randperm(len(retain) + len(shots), generator=seeded_generator(seed, _RELEARN_ORDER, epoch))
    rows = [
        (chunk[chunk < len(retain)], chunk[chunk >= len(retain)] - len(retain)) for chunk in order.split(batch_size)
    ]
    return BatchPlan(retain, shots, adapter, rows)


def relearning(
    models: dict[str, nn.Module], data: UnlearningData, config: EvidenceConfig, seed: int, hooks: JobHooks | None = None
) -> dict[str, Any]:
    """The relearning check of each of `models` (name → model): retain-only, and k-shot for class-wise forgetting."""
    retain = data.retain.sample(config.relearn_retain_rows, seeded_generator(seed, _RELEARN_ROWS))
    no_rows = data.forget.take(torch.zeros(0, dtype=torch.int64))
    forget = measured_rows(data.forget, config, seed)
    runs = {"retain_only": (no_rows, forget)}
    if data.scenario == "classwise" and config.relearn_shots:
        shots, rest = _shots(data.forget, config.relearn_shots, seed)
        runs["k_shot"] = (shots, measured_rows(rest, config, seed))
    result: dict[str, Any] = {
        "protocol": {
            "steps": config.relearn_steps,
            "lr": config.relearn_lr,
            "momentum": 0.9,
            "batch_size": config.relearn_batch_size,
            "retain_rows": len(retain),
            "shots_per_class": config.relearn_shots if "k_shot" in runs else 0,
            "forget_rows_measured": {name: len(measure_on) for name, (_, measure_on) in runs.items()},
        }
    }
    for name, (shots, measure_on) in runs.items():
        result[name] = {
            label: relearn_curve(model, retain, shots, measure_on, data.adapter, config, seed, hooks)
            for label, model in models.items()
        }
    return result


def _shots(forget: Subset, per_class: int, seed: int) -> tuple[Subset, Subset]:
    """(per_class seeded forget rows of each class, the other forget rows)."""
    order = torch.randperm(len(forget), generator=seeded_generator(seed, _RELEARN_SHOTS))
    labels = forget.labels.cpu()[order]
    chosen = torch.cat([order[labels == c][:per_class] for c in torch.unique(labels)])
    rest = torch.ones(len(forget), dtype=torch.bool)
    rest[chosen] = False
    return forget.take(chosen), forget.take(torch.nonzero(rest).flatten())


@torch.no_grad()
def penultimate_features(model: nn.Module, rows: Subset, adapter: InputAdapter, batch_size: int = 256) -> Tensor:
    """The input of the model's last linear layer (its head) for each row, batch by batch, as float32 on the CPU."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().float().flatten(1).cpu()))
    try:
        model.eval()
        for x, _ in batches(rows, batch_size, adapter):
            with autocast(x.device):
                model(x)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.zeros(0, head.in_features)


def feature_probe(model: nn.Module, data: UnlearningData, config: EvidenceConfig, seed: int) -> dict[str, Any]:
    """Probe accuracy on forget rows, next to the model's own forget accuracy and the probe's accuracy on held-out
    test rows of the forget rows' classes. The probe is fit on half of the sampled test rows (every class,
    forgotten ones included), never on a forget row."""
    test = measured_rows(data.test, config, seed, 2 * config.eval_rows)
    halves = torch.randperm(len(test), generator=seeded_generator(seed, _PROBE_SPLIT))
    fit, held_out = test.take(halves[: len(test) // 2]), test.take(halves[len(test) // 2 :])
    forget = measured_rows(data.forget, config, seed)
    forget_classes = torch.unique(forget.labels.cpu())
    same_classes = held_out.take(torch.nonzero(torch.isin(held_out.labels.cpu(), forget_classes)).flatten())
    features = penultimate_features(model, fit, data.adapter).numpy()
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(max_iter=1000).fit(scaler.transform(features), fit.labels.cpu().numpy())

    def probe_accuracy(rows: Subset) -> float | None:
        if not len(rows):
            return None
        predicted = probe.predict(scaler.transform(penultimate_features(model, rows, data.adapter).numpy()))
        return round(float(np.mean(predicted == rows.labels.cpu().numpy())), 4)

    return {
        "forget_accuracy": probe_accuracy(forget),
        "model_forget_accuracy": round(accuracy(model, forget, data.adapter), 4),
        "test_accuracy": probe_accuracy(same_classes),
        "rows": {"fit": len(fit), "forget": len(forget), "test": len(same_classes)},
    }


def per_sample_membership(
    models: dict[str, nn.Module], data: UnlearningData, config: EvidenceConfig, seed: int, hooks: JobHooks | None = None
) -> dict[str, Any]:
    """Per-sample membership scores of each of `models` against `config.shadow_models` shadow models. The
    non-members come from the forget rows' distribution: test rows of the forgotten classes, class-wise."""
    shadows = train_shadow_models(
        next(iter(models.values())),
        data.retain,
        data.adapter,
        count=config.shadow_models,
        epochs=config.shadow_epochs,
        seed=seed,
        hooks=hooks,
    )
    test = data.test_split_by_class()[1] if data.scenario == "classwise" else data.test
    forget = measured_rows(data.forget, config, seed)
    test = measured_rows(test, config, seed)
    return {
        label: membership_scores(model, shadows, forget, test, data.adapter).summary()
        for label, model in models.items()
    }


def run_attacks(
    models: dict[str, nn.Module], data: UnlearningData, config: EvidenceConfig, seed: int, hooks: JobHooks | None = None
) -> dict[str, Any]:
    """Every check `config` turns on, for each of `models` (its first is the one judged: the published version)."""
    hooks = hooks or JobHooks()
    evidence: dict[str, Any] = {}
    if config.relearn_steps:
        hooks.report(Progress("evidence", 0.0))
        evidence["relearning"] = relearning(models, data, config, seed, hooks)
    if config.probe:
        hooks.report(Progress("evidence", 0.5))
        evidence["feature_probe"] = {label: feature_probe(m, data, config, seed) for label, m in models.items()}
    if config.shadow_models:
        evidence["membership"] = per_sample_membership(models, data, config, seed, hooks)
    hooks.report(Progress("evidence", 1.0))
    return evidence
