import copy

import pytest
import torch

from unlearning import Checkpoint, Targets, adaptive_beta, make_unlearning_data, run_unlearning
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
        (0.90, 0.86, 0.98, 0.85, 0.5),  # a_r < c_r: retain excess negative, forget excess positive
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
        run_unlearning(copy.deepcopy(original), classwise, "rl", config, device="cpu", hooks=interrupted,
                       on_checkpoint=lambda c: saved.append(c.to_bytes()), on_theta_p=stored_theta_p.append)
    checkpoint = Checkpoint.from_bytes(saved[-1])
    assert checkpoint.epoch == 1 and checkpoint.momentum

    resumed = run_unlearning(copy.deepcopy(original), classwise, "rl", config, device="cpu",
                             theta_p=stored_theta_p[0], resume=checkpoint)
    for name in full.curve.names:
        assert torch.allclose(resumed.curve.control[name], full.curve.control[name], rtol=0, atol=1e-6), name
    assert [p.retain_accuracy for p in resumed.points] == [p.retain_accuracy for p in full.points]


def test_cancel_stops_within_one_batch(original, classwise: UnlearningData) -> None:
    batches_seen = []
    hooks = JobHooks(on_progress=lambda p: batches_seen.append(p) if p.phase == "curve" else None,
                     should_cancel=lambda: len(batches_seen) >= 2)
    with pytest.raises(Cancelled):
        run_unlearning(original, classwise, "rl", FAST | {"base": {"epochs": 1}}, device="cpu", hooks=hooks)
    assert len(batches_seen) == 2


def test_large_fixed_beta_never_yields_non_finite_points(original, classwise: UnlearningData) -> None:
    """Fixed β diverged in the reference on class-wise forgetting; the guard keeps every point finite."""
    config = {"epochs": 5, "grid_points": 5, "beta": 5.0, "lr": 0.5, "base": {"epochs": 1},
              "mask": {"forget_reserve": 1.0, "retain_filter": 0.0}}
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
