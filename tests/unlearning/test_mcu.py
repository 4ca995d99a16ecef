import copy

import pytest
import torch

from unlearning import Checkpoint, Targets, adaptive_beta, make_unlearning_data, resolve_config, run_unlearning
from unlearning.data import UnlearningData, seeded_generator
from unlearning.training import Cancelled, JobHooks, stratified_batches

from .conftest import FAST


@pytest.mark.parametrize(
    ("a_r", "a_f", "c_r", "c_f", "expected"),
    [
        (0.99, 0.80, 0.99, 0.85, 0.0),  # forget accuracy already at/below its target
        (0.99, 0.85, 0.99, 0.85, 0.0),  # exactly at the target counts as reached
        (1.00, 0.86, 0.98, 0.85, 0.01),  # forget relatively closer (1.2%) than retain (2.0%)
        (0.985, 0.95, 0.98, 0.85, 0.5),  # forget far above its target (11.8% vs 0.5%)
        (0.90, 0.86, 0.98, 0.85, 0.01),  # retain 8.2% below its target, forget only 1.2% above: gently
        (0.97, 0.95, 0.98, 0.85, 0.5),  # retain 1.0% below, forget 11.8% above: push
        (0.99, 0.30, 0.98, 0.0, 0.5),  # class-wise: c_f = 0 makes the forget excess infinite
        (0.99, 0.0, 0.98, 0.0, 0.0),  # class-wise, forgotten
    ],
)
def test_adaptive_beta_rule(a_r: float, a_f: float, c_r: float, c_f: float, expected: float) -> None:
    assert adaptive_beta(a_r, a_f, Targets(retain_accuracy=c_r, forget_accuracy=c_f)) == expected


def test_adaptive_beta_is_scale_free() -> None:
    """The paper states accuracies in percent; the rule must give the same β for fractions."""
    targets = Targets(retain_accuracy=0.98, forget_accuracy=0.85)
    assert adaptive_beta(1.00, 0.86, targets) == 0.01


@pytest.mark.parametrize("share", [0.01, 0.1])
def test_every_training_batch_holds_forget_samples(digits, share: float) -> None:
    n = len(digits.train_labels)
    forget = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: max(1, int(share * n))]
    data = make_unlearning_data(digits, channels=1, forget_indices=forget)
    for epoch in range(3):
        plan = stratified_batches(data.retain, data.forget, 32, data.adapter, seeded_generator(0, epoch))
        seen_retain = 0
        for batch in plan:
            assert int(batch.is_forget.sum()) >= 1
            seen_retain += int((~batch.is_forget).sum())
        assert seen_retain == len(data.retain)  # every retain row once per epoch
        assert len(plan) == -(-(len(data.retain) + len(data.forget)) // 32)


def test_interrupted_and_resumed_training_equals_uninterrupted(original, classwise: UnlearningData) -> None:
    config = FAST | {"epochs": 3, "base": {"epochs": 1}}
    full = run_unlearning(copy.deepcopy(original), classwise, "rl", config, device="cpu")

    saved: list[bytes] = []
    stored_theta_p: list[dict] = []
    interrupted = JobHooks(should_cancel=lambda: len(saved) >= 1)  # "crash" right after epoch 1
    with pytest.raises(Cancelled):
        run_unlearning(
            copy.deepcopy(original),
            classwise,
            "rl",
            config,
            device="cpu",
            hooks=interrupted,
            on_checkpoint=lambda c: saved.append(c.to_bytes()),
            on_theta_p=stored_theta_p.append,
        )
    checkpoint = Checkpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == 1 and checkpoint.momentum

    resumed = run_unlearning(
        copy.deepcopy(original), classwise, "rl", config, device="cpu", theta_p=stored_theta_p[0], resume=checkpoint
    )
    for name in full.curve.names:
        assert torch.allclose(resumed.curve.control[name], full.curve.control[name], rtol=0, atol=1e-6), name
    assert [p.retain_accuracy for p in resumed.points] == [p.retain_accuracy for p in full.points]


def test_cancel_stops_within_one_batch(original, classwise: UnlearningData) -> None:
    batches_seen = []
    hooks = JobHooks(
        on_progress=lambda p: batches_seen.append(p) if p.phase == "curve" else None,
        should_cancel=lambda: len(batches_seen) >= 2,
    )
    with pytest.raises(Cancelled):
        run_unlearning(original, classwise, "rl", FAST | {"base": {"epochs": 1}}, device="cpu", hooks=hooks)
    assert len(batches_seen) == 2


def test_large_fixed_beta_never_yields_non_finite_points(original, classwise: UnlearningData) -> None:
    """Fixed β diverged in the reference on class-wise forgetting; the guard keeps every point finite."""
    config = {
        "epochs": 5,
        "grid_points": 5,
        "beta": 5.0,
        "lr": 0.5,
        "base": {"epochs": 1},
        "mask": {"forget_reserve": 1.0, "retain_filter": 0.0},
    }
    result = run_unlearning(original, classwise, "ga", config, device="cpu")
    assert result.points and all(p.is_finite() for p in result.points)
    assert all(torch.isfinite(v).all() for v in result.curve.control.values())
    assert result.config.guard.forget_loss_cap == 5.0  # the guard in use is echoed with the result


def test_checkpoint_round_trip_uses_no_pickle() -> None:
    checkpoint = Checkpoint(2, {"w": torch.arange(6.0).view(2, 3)}, {"w": torch.ones(2, 3)}, 1)
    blob = checkpoint.to_bytes()
    assert blob[8:9] == b"{"  # a safetensors header, not a pickle stream
    again = Checkpoint.from_bytes(blob)
    assert again.epoch == 2 and again.skipped_nonfinite == 1
    assert torch.equal(again.control["w"], checkpoint.control["w"])
    assert torch.equal(again.momentum["w"], checkpoint.momentum["w"])


def test_checkpoint_carries_beta_counts_lr_and_rollbacks() -> None:
    checkpoint = Checkpoint(
        3, {"w": torch.zeros(2)}, beta_counts={"0.5": 7, "0.0": 2}, lr=0.005, rollbacks=[{"epoch": 2, "lr": 0.005}]
    )
    again = Checkpoint.from_bytes(checkpoint.to_bytes())
    assert again.beta_counts == {"0.5": 7, "0.0": 2} and again.lr == 0.005 and again.rollbacks[0]["epoch"] == 2


def test_checkpoint_without_new_fields_still_loads() -> None:
    from safetensors.torch import save

    blob = save({"control/w": torch.ones(2)}, metadata={"mcu_checkpoint": '{"epoch": "1", "skipped_nonfinite": "0"}'})
    old = Checkpoint.from_bytes(blob)
    assert old.epoch == 1 and old.beta_counts == {} and old.lr is None and old.rollbacks == []
    with pytest.raises(ValueError, match="not an MCU checkpoint"):
        Checkpoint.from_bytes(save({"w": torch.ones(2)}))


def test_beta_counts_survive_a_resume(original, classwise: UnlearningData) -> None:
    config = FAST | {"epochs": 3, "grid_points": 3, "base": {"epochs": 1}}
    full = run_unlearning(copy.deepcopy(original), classwise, "rl", config, device="cpu")
    saved: list[bytes] = []
    stored_theta_p: list[dict] = []
    with pytest.raises(Cancelled):
        run_unlearning(
            copy.deepcopy(original),
            classwise,
            "rl",
            config,
            device="cpu",
            hooks=JobHooks(should_cancel=lambda: len(saved) >= 2),
            on_checkpoint=lambda c: saved.append(c.to_bytes()),
            on_theta_p=stored_theta_p.append,
        )
    checkpoint = Checkpoint.from_bytes(saved[-1])
    assert sum(checkpoint.beta_counts.values()) == full.training["batches"] * 2 // 3
    resumed = run_unlearning(
        copy.deepcopy(original), classwise, "rl", config, device="cpu", theta_p=stored_theta_p[0], resume=checkpoint
    )
    assert resumed.training["beta_counts"] == full.training["beta_counts"]
    assert sum(resumed.training["beta_counts"].values()) == full.training["batches"]


def _poison_once(curve, epoch_batches: int, at_batch: int, times: int):
    """Make θ_c non-finite inside the forward of batch `at_batch`, on the first `times` attempts only."""
    calls = {"n": 0, "poisoned": 0}
    forward = curve.forward

    def poisoning_forward(inputs, t, control=None):
        calls["n"] += 1
        if calls["n"] % epoch_batches == at_batch and calls["poisoned"] < times and control:
            calls["poisoned"] += 1
            name = next(n for n, v in control.items() if v.requires_grad)
            with torch.no_grad():
                control[name].fill_(float("nan"))
        return forward(inputs, t, control)

    curve.forward = poisoning_forward
    return calls


def _curve_setup(original, data):
    from unlearning import BezierCurve, compute_mask, resolve_config

    config = resolve_config({"epochs": 3}, "rl")
    mask = compute_mask(original, data.retain, data.forget, data.adapter, config.mask, 256)
    theta_p = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in original.state_dict().items()
    }
    return BezierCurve(original, original.state_dict(), theta_p), mask, config


def test_divergence_rolls_back_to_the_last_good_epoch_with_half_the_lr(original, classwise) -> None:
    from unlearning.mcu import train_control_point
    from unlearning.training import stratified_batches

    curve, mask, config = _curve_setup(original, classwise)
    retain_part = round(config.retain_ratio * len(classwise.retain))
    n_batches = len(
        stratified_batches(
            classwise.retain.take(torch.arange(retain_part)),
            classwise.forget,
            config.batch_size,
            classwise.adapter,
            seeded_generator(0, 0),
        )
    )
    calls = _poison_once(curve, n_batches, at_batch=3, times=1)  # NaN inside epoch 1 (0-based), once
    saved: list[Checkpoint] = []
    stats = train_control_point(curve, classwise, mask, config, Targets(1.0, 0.0), on_checkpoint=saved.append)
    assert calls["poisoned"] == 1
    assert stats.rollbacks == [{"epoch": 1, "lr": config.lr / 2}] and stats.final_lr == config.lr / 2
    assert all(torch.isfinite(v).all() for v in curve.control.values())
    assert [c.epoch for c in saved] == [1, 2, 3] and saved[-1].lr == config.lr / 2


def test_divergence_fails_clearly_after_bounded_rollbacks(original, classwise) -> None:
    from unlearning.mcu import train_control_point
    from unlearning.training import DivergenceError

    curve, mask, config = _curve_setup(original, classwise)
    _poison_once(curve, 1, at_batch=0, times=10**9)  # every batch: nothing can recover
    with pytest.raises(DivergenceError, match=r"after 2 rollback\(s\)"):
        train_control_point(curve, classwise, mask, config, Targets(1.0, 0.0))


def test_curve_training_applies_the_adaptive_beta(original, classwise) -> None:
    """Class-wise (c_f = 0) the rule gives β = 0.5 while the forget set is still known; training must use it,
    so θ_c ends elsewhere than a run with β fixed at 0."""
    from unlearning.mcu import train_control_point

    def trained(beta: float | str):
        curve, mask, _ = _curve_setup(original, classwise)
        config = resolve_config({"epochs": 1, "beta": beta}, "rl")
        stats = train_control_point(curve, classwise, mask, config, Targets(1.0, 0.0))
        return curve.control, stats.beta_counts

    adaptive, counts = trained("adaptive")
    fixed_zero, zero_counts = trained(0.0)
    assert counts.get("0.5", 0) > 0 and sum(counts.values()) == sum(zero_counts.values())
    assert zero_counts == {"0.0": sum(zero_counts.values())}
    assert any(not torch.equal(adaptive[n], fixed_zero[n]) for n in adaptive)
