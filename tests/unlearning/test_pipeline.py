import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from unlearning import avg_gap, build_model, make_unlearning_data, run_unlearning
from unlearning.architectures import seeded_init
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, resolve_config
from unlearning.data import UnlearningData
from unlearning.metrics import EvalSets, PointMetrics, attack_spread, evaluate, predict
from unlearning.pipeline import MIA_TARGET_MAX_SPREAD, derive_targets, materialize_point
from unlearning.training import JobHooks, Progress


def test_mcu_on_rl_beats_rl_alone_on_classwise_digits(original: nn.Module, classwise: UnlearningData) -> None:
    # With its tuned defaults rl alone already matches retraining on digits (Avg. Gap 0.00), which
    # nothing can beat; a short rl run (2 epochs at lr 0.005) leaves the room MCU is meant to close.
    config = {"seed": 0, "base": {"epochs": 2, "lr": 0.005}}
    result = run_unlearning(original, classwise, "rl", config, device="cpu")
    context = MethodContext(0, JobHooks())
    retrained = run_base_method("retrain", original, classwise, resolve_config(None, "retrain").base, context)
    rl_alone = run_base_method("rl", original, classwise, result.config.base, context)
    reference = evaluate(retrained, result.sets, classwise.adapter, 1024)
    rl_gap = avg_gap(evaluate(rl_alone, result.sets, classwise.adapter, 1024), reference)
    best_gap = min(avg_gap(p, reference) for p in result.points)
    print(f"Avg. Gap to retrain: rl {100 * rl_gap:.2f}, best MCU(rl) point {100 * best_gap:.2f}")
    assert best_gap < rl_gap


def test_result_describes_the_whole_run(original: nn.Module, random_forget: UnlearningData) -> None:
    result = run_unlearning(
        original, random_forget, "ft", {"epochs": 2, "grid_points": 6, "base": {"epochs": 1}}, device="cpu"
    )
    summary = result.to_dict()
    assert [p["t"] for p in summary["points"]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert 0.0 <= summary["recommended_t"] <= 1.0
    assert 0.75 <= summary["recommended_t_reference_window"] <= 1.0
    assert set(summary["timings"]) == {"mask", "base", "curve", "evaluate", "total"}
    assert summary["config"]["epochs"] == 2 and summary["config"]["base"]["lr"] is not None
    assert summary["targets"]["forget_accuracy"] > 0.5  # random forgetting: θ_o's test accuracy
    assert summary["mask"]["kept_share"] > 0
    for point in summary["points"]:
        assert point["unlearning_accuracy"] == pytest.approx(1 - point["forget_accuracy"])
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"):
            assert 0.0 <= point[key] <= 1.0
    # t = 0 is θ_o (BN from retain data): it still knows the forget set.
    assert summary["points"][0]["forget_accuracy"] > 0.95


def test_random_forgetting_targets_are_the_original_on_test_rows_measured_as_a_point(
    original: nn.Module, random_forget: UnlearningData
) -> None:
    """To a retrained model the forget rows are as unseen as test rows: the targets are θ_o's metrics with the test
    rows in the forget rows' place, its MIA efficacy from the very attack every point uses (an attack trained on
    other rows decides otherwise: docs/benchmarks.md, "The MIA target")."""
    sets = EvalSets.draw(random_forget, EvalConfig(), seed=0)
    targets = derive_targets(original, random_forget, sets, 256)
    unseen = evaluate(original, replace(sets, forget=sets.test), random_forget.adapter, 256)
    assert targets.mia_efficacy == unseen.mia_efficacy
    assert targets.forget_accuracy == targets.test_accuracy == unseen.test_accuracy
    forget = evaluate(original, sets, random_forget.adapter, 256)
    assert forget.forget_accuracy > targets.forget_accuracy  # θ_o still knows its forget rows better


def test_no_mia_target_where_the_originals_attack_is_a_coin_flip(
    original: nn.Module, random_forget: UnlearningData, digits
) -> None:
    """An untrained θ_o shows members and non-members alike: SVCs trained on resamples of the attack's rows call its
    test rows non-member in shares that disagree, so it gets no MIA target (docs/algorithm.md §4), while the trained
    θ_o's attack agrees with itself and keeps its target. The recommended t then weighs the accuracies alone."""
    sets = EvalSets.draw(random_forget, EvalConfig(), seed=0)
    untrained = seeded_init("cnn-small", 10, digits.input_shape, seed=0).eval()
    spreads = {}
    for name, model in (("untrained", untrained), ("trained", original)):
        members, nonmembers = (predict(model, rows, random_forget.adapter, 256)[1] for rows in sets.attack_rows())
        spreads[name] = attack_spread(members, nonmembers)
    assert spreads["trained"] < MIA_TARGET_MAX_SPREAD < spreads["untrained"]
    assert derive_targets(untrained, random_forget, sets, 256).mia_efficacy is None
    assert derive_targets(original, random_forget, sets, 256).mia_efficacy is not None


def test_classwise_targets_and_forgotten_class_accuracy(original: nn.Module, classwise: UnlearningData) -> None:
    result = run_unlearning(
        original, classwise, "rl", {"epochs": 2, "grid_points": 3, "base": {"epochs": 3}}, device="cpu"
    )
    assert result.targets.forget_accuracy == 0.0
    assert result.points[0].forgotten_class_test_accuracy > 0.9
    assert result.points[-1].forgotten_class_test_accuracy < 0.2


def test_operator_targets_override_derived_ones(original: nn.Module, classwise: UnlearningData) -> None:
    targets = {"retain_accuracy": 0.9, "forget_accuracy": 0.1}
    result = run_unlearning(
        original,
        classwise,
        "rl",
        {"epochs": 1, "grid_points": 3, "targets": targets, "base": {"epochs": 1}},
        device="cpu",
    )
    assert (result.targets.retain_accuracy, result.targets.forget_accuracy) == (0.9, 0.1)


def test_torchvision_architecture_runs_on_grey_digits(digits) -> None:
    model = build_model("resnet18", 10, digits.input_shape)
    data = make_unlearning_data(digits, channels=3, forget_classes=[1])
    x = data.adapter(data.retain.inputs[:4])
    assert x.shape == (4, 3, 8, 8)
    assert model.eval()(x).shape == (4, 10)


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        build_model("resnet19", 10, (3, 32, 32))


@pytest.mark.parametrize(
    ("modules", "absent"),
    [
        (
            "unlearning.pipeline, unlearning.base_methods, unlearning.architectures",
            ("fastapi", "celery", "sqlalchemy", "boto3"),
        ),
        ("unlearning.config", ("torch", "torchvision", "numpy")),  # what the API process imports to validate
    ],
    ids=["library", "config"],
)
def test_imports_stay_within_their_layer(modules: str, absent: tuple[str, ...]) -> None:
    code = f"import sys, {modules}; bad = [m for m in {absent!r} if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _scalars(point: PointMetrics) -> dict:
    return {k: v for k, v in point.to_dict().items() if not isinstance(v, dict)}


def test_grid_points_are_measured_on_samples_and_the_recommended_and_published_points_on_every_row(
    original: nn.Module, classwise: UnlearningData
) -> None:
    eval_rows = {"retain_rows": 200, "test_rows": 100}
    result = run_unlearning(
        original,
        classwise,
        "rl",
        {"epochs": 1, "grid_points": 3, "base": {"epochs": 2}, "eval": eval_rows},
        device="cpu",
    )
    retained_test, forgotten_test = classwise.test_split_by_class()
    sampled = {"forget": len(classwise.forget), "retain": 200, "test": 100, "forgotten_class_test": len(forgotten_test)}
    every = sampled | {"retain": len(classwise.retain), "test": len(retained_test)}
    assert every["retain"] > 1000 and all(p.rows == sampled for p in result.points)
    recommended = result.recommended_point
    assert recommended.t == result.recommended_t and recommended.rows == every
    assert recommended.std_errors["retain_accuracy"] == pytest.approx(
        math.sqrt(recommended.retain_accuracy * (1 - recommended.retain_accuracy) / every["retain"])
    )
    assert result.to_dict()["recommended_point"] == recommended.to_dict()

    weights, again = result.materialize(result.recommended_t)
    assert again.rows == every and _scalars(again) == pytest.approx(_scalars(recommended), abs=1e-6)
    # The job runs channels_last; what it hands out is in the default layout, storable as it is.
    assert any(v.dim() == 4 for v in weights.values())
    assert all(v.is_contiguous() for v in weights.values())
    assert load(save(weights)).keys() == weights.keys()
    # Publishing (another process: from the stored tensors) measures on every row too.
    tensors = {"theta_o": original.state_dict(), "theta_c": result.curve.control, "theta_p": result.curve.end}
    _, published, evidence = materialize_point(
        original, classwise, tensors, result.config, "rl", result.recommended_t, device="cpu"
    )
    assert published.rows == every and _scalars(published) == pytest.approx(_scalars(recommended), abs=1e-6)
    # The published point comes with the default attacks, on itself, θ_p and θ_o (unlearning/attacks.py).
    assert set(evidence) == {"relearning", "feature_probe"}
    assert set(evidence["relearning"]) == {"protocol", "retain_only", "k_shot"}  # class-wise: k-shot too
    assert set(evidence["feature_probe"]) == {"published", "base", "original"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(original: nn.Module, classwise: UnlearningData) -> None:
    result = run_unlearning(
        original, classwise, "rl", {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}}, device="cuda"
    )
    assert result.training["device"].startswith("cuda")
    weights, _ = result.materialize(0.5)
    assert all(v.device.type == "cpu" for v in weights.values())


def test_a_set_sent_to_a_device_keeps_its_rows_where_they_are(random_forget: UnlearningData) -> None:
    """Only batches move: a set larger than the device's memory must not be copied onto it whole."""
    moved = random_forget.batches_on("meta")
    for before, after in zip(
        (random_forget.retain, random_forget.forget, random_forget.test),
        (moved.retain, moved.forget, moved.test),
        strict=True,
    ):
        assert after.inputs is before.inputs and after.labels is before.labels
        assert after.target == torch.device("meta")


def test_one_progress_fraction_spans_the_whole_job(original: nn.Module, random_forget: UnlearningData) -> None:
    """A bar fed `overall` never goes back, starts at 0 and ends at 1; each phase starts where the last ended."""
    reports: list[Progress] = []
    run_unlearning(
        original,
        random_forget,
        "rl",
        {"epochs": 2, "grid_points": 6, "base": {"epochs": 1}},
        device="cpu",
        hooks=JobHooks(on_progress=reports.append),
    )
    overall = [p.overall for p in reports]
    assert None not in overall and overall[0] == 0.0 and overall[-1] == 1.0
    assert overall == sorted(overall), "overall progress went back"
    firsts: dict[str, float | None] = {}
    for report in reports:
        firsts.setdefault(report.phase, report.overall)
    assert list(firsts) == ["mask", "base", "curve", "evaluate"]
    assert 0.0 == firsts["mask"] < firsts["base"] < firsts["curve"] < firsts["evaluate"] < 1.0  # type: ignore[operator]
    assert {p.phase for p in reports if p.fraction == 1.0} == set(firsts)  # every phase reported its end too
