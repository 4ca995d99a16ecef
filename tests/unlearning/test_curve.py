import copy

import pytest
import torch

from unlearning import BezierCurve, build_model, recompute_batchnorm, run_unlearning
from unlearning.data import Subset, UnlearningData
from unlearning.training import JobHooks, Progress, prepare_model

from .conftest import FAST


def _perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: v + torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


def test_endpoints_are_the_original_and_the_base_model(original: torch.nn.Module) -> None:
    theta_o = original.state_dict()
    theta_p = _perturbed(original, 0)
    theta_c = _perturbed(original, 1)
    curve = BezierCurve(original, theta_o, theta_p, theta_c)
    start, end = curve.weights_at(0.0), curve.weights_at(1.0)
    for name, _ in original.named_parameters():
        assert torch.equal(start[name], theta_o[name]), name
        assert torch.allclose(end[name], theta_p[name], rtol=0, atol=1e-6), name
    middle = curve.weights_at(0.5)
    name = curve.names[0]
    assert not torch.allclose(middle[name], theta_o[name])


@pytest.mark.parametrize(("t", "coefficients"), [(0.5, (0.25, 0.5, 0.25)), (0.3, (0.49, 0.42, 0.09))])
def test_interior_points_follow_the_bezier_formula(
    original: torch.nn.Module, t: float, coefficients: tuple[float, float, float]
) -> None:
    """φ(t) = (1−t)²·θ_o + 2t(1−t)·θ_c + t²·θ_p, with a θ_c away from the midpoint so its weight shows."""
    theta_o, theta_p, theta_c = original.state_dict(), _perturbed(original, 0), _perturbed(original, 1)
    curve = BezierCurve(original, theta_o, theta_p, theta_c)
    a, b, c = coefficients
    for name, value in curve.weights_at(t).items():
        assert torch.allclose(value, a * theta_o[name] + b * theta_c[name] + c * theta_p[name], atol=1e-6), name


def test_control_point_starts_at_the_midpoint(original: torch.nn.Module) -> None:
    theta_p = _perturbed(original, 0)
    curve = BezierCurve(original, original.state_dict(), theta_p)
    for name in curve.names:
        assert torch.allclose(curve.control[name], (original.state_dict()[name] + theta_p[name]) / 2)


def test_curve_forward_matches_a_model_holding_phi_t(original: torch.nn.Module, classwise: UnlearningData) -> None:
    curve = BezierCurve(original, original.state_dict(), _perturbed(original, 0))
    x = classwise.adapter(classwise.retain.inputs[:16])
    reference = copy.deepcopy(original).eval()
    reference.load_state_dict(curve.weights_at(0.3), strict=False)
    curve.model.eval()
    assert torch.allclose(curve.forward(x, 0.3), reference(x), atol=1e-5)


def test_batchnorm_statistics_come_from_retain_data_only(original: torch.nn.Module, classwise: UnlearningData) -> None:
    # Forget rows from a shifted distribution: if they leaked into the BN pass, the means would move a lot.
    shifted = Subset(classwise.forget.inputs.float() + 200.0, classwise.forget.labels, classwise.forget.ids)
    data = UnlearningData(
        classwise.retain, shifted, classwise.test, classwise.num_classes, classwise.adapter, classwise.forget_classes
    )
    config = FAST | {"eval": {"bn_samples": len(data.retain)}}
    result = run_unlearning(original, data, "ft", config | {"base": {"epochs": 1}}, device="cpu")
    published, _ = result.materialize(0.5)

    expected = copy.deepcopy(original)
    expected.load_state_dict(published)
    recompute_batchnorm(expected, data.retain, data.adapter)
    polluted = copy.deepcopy(expected)
    both = Subset(
        torch.cat([data.retain.inputs.float(), shifted.inputs]),
        torch.cat([data.retain.labels, shifted.labels]),
        torch.cat([data.retain.ids, shifted.ids]),
    )
    recompute_batchnorm(polluted, both, data.adapter)
    for key in ("1.running_mean", "1.running_var", "5.running_mean", "5.running_var"):
        assert torch.allclose(published[key], expected.state_dict()[key], atol=1e-5), key
        assert not torch.allclose(published[key], polluted.state_dict()[key], atol=1e-2), key


def test_materialize_any_t_including_off_grid(original: torch.nn.Module, classwise: UnlearningData) -> None:
    result = run_unlearning(original, classwise, "rl", FAST | {"base": {"epochs": 2}}, device="cpu")
    weights, metrics = result.materialize(0.37)
    assert metrics.t == 0.37
    fresh = build_model("cnn-small", 10, (1, 8, 8))
    fresh.load_state_dict(weights)  # a plain, complete state_dict
    assert all(v.device.type == "cpu" for v in weights.values())
    with pytest.raises(ValueError, match="t must lie in"):
        result.materialize(1.5)


def test_progress_covers_every_phase_in_order(original: torch.nn.Module, classwise: UnlearningData) -> None:
    seen: list[Progress] = []
    run_unlearning(
        original, classwise, "rl", FAST | {"base": {"epochs": 1}}, device="cpu", hooks=JobHooks(on_progress=seen.append)
    )
    phases = list(dict.fromkeys(p.phase for p in seen))
    assert phases == ["mask", "base", "curve", "evaluate"]
    curve_progress = [p for p in seen if p.phase == "curve"]
    assert curve_progress[-1].fraction == pytest.approx(1.0)
    assert curve_progress[-1].epoch == curve_progress[-1].epochs == FAST["epochs"]
    assert all(0.0 <= p.fraction <= 1.0 for p in seen)


def _point(t: float, fa: float, ra: float = 1.0):
    from unlearning.metrics import PointMetrics

    return PointMetrics(t, fa, 1 - fa, ra, 0.98, 0.05)


def test_recommended_t_prefers_theta_p_within_noise() -> None:
    from unlearning import Targets
    from unlearning.spectrum import recommend_t

    # The gap is least at t = 0.5 (FA 0.975 against a 0.975 target) and θ_p (t = 1) is 0.005 away.
    points = [_point(t, fa) for t, fa in ((0.0, 1.0), (0.25, 0.99), (0.5, 0.975), (0.75, 0.972), (1.0, 0.97))]
    targets = Targets(retain_accuracy=1.0, forget_accuracy=0.975)
    assert recommend_t(points, targets, noise=0.0) == pytest.approx(0.5, abs=0.05)
    assert recommend_t(points, targets, noise=0.01) == 1.0  # 0.005 points is within the noise: keep θ_p
    # A gap difference larger than the noise still moves the recommendation away from θ_p.
    far = [_point(t, fa) for t, fa in ((0.0, 1.0), (0.25, 0.99), (0.5, 0.975), (0.75, 0.95), (1.0, 0.9))]
    assert recommend_t(far, targets, noise=0.01) < 0.75


@pytest.mark.parametrize("best", [0.3, 0.62, 0.88])
def test_recommended_t_is_the_known_minimum_and_the_window_its_nearest_point(best: float) -> None:
    from unlearning import Targets
    from unlearning.spectrum import REFERENCE_WINDOW, recommend_t

    # FA(t) = 0.2 + (t − best)²: the gap ½·|FA − 0.2| is least at `best` (a cubic spline holds a parabola exactly).
    points = [_point(t / 10, 0.2 + (t / 10 - best) ** 2) for t in range(11)]
    targets = Targets(retain_accuracy=1.0, forget_accuracy=0.2)
    assert recommend_t(points, targets) == pytest.approx(best)
    assert REFERENCE_WINDOW == (0.75, 1.0)
    assert recommend_t(points, targets, REFERENCE_WINDOW) == pytest.approx(max(best, 0.75))


def test_forget_noise_is_the_binomial_standard_error() -> None:
    from unlearning import Targets
    from unlearning.spectrum import forget_noise

    points = [_point(0.0, 1.0), _point(1.0, 0.9)]
    # Two targeted terms (RA, FA): FA's error moves their mean by half of it.
    assert forget_noise(points, Targets(forget_accuracy=0.9), 400) == pytest.approx((0.9 * 0.1 / 400) ** 0.5 / 2)
    assert forget_noise(points, Targets(forget_accuracy=1.0), 400) == 0.0


def test_coarse_to_fine_measures_fewer_points_near_the_choice() -> None:
    from unlearning.spectrum import coarse_to_fine, planned_points

    passes: list[list[float]] = []

    def measure(ts: list[float]):
        passes.append(ts)
        return {t: _point(t, 1.0 - t) for t in ts}

    points = coarse_to_fine(21, measure, lambda pts: 0.62)
    assert passes[0] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # the coarse pass first
    assert sorted(passes[1]) == [0.55, 0.65, 0.7]  # then the fine grid points within 0.1 of 0.62
    assert len(points) == len(passes[0]) + len(passes[1]) <= planned_points(21)
    passes.clear()
    assert len(coarse_to_fine(21, measure, lambda pts: 0.62, refine=False)) == 21 and len(passes) == 1


def test_phi_t_keeps_the_model_layout_and_its_gradient_reaches_theta_c() -> None:
    """A channels_last weight with a size-1 dimension (a grey image's first convolution) stays in the model's
    strides along the curve: arithmetic alone gives strides convolution reads as contiguous (a slower step)."""
    model = prepare_model(build_model("cnn-small", 10, (1, 28, 28)), torch.device("cpu"))
    theta_o, theta_p = model.state_dict(), _perturbed(model, 0)
    curve = BezierCurve(model, theta_o, theta_p, _perturbed(model, 1))
    control = {n: curve.control[n].clone().requires_grad_(True) for n in curve.names}
    phi = curve.weights_at(0.3, control)
    for name in curve.names:
        assert phi[name].stride() == model.get_parameter(name).stride(), name
    x = torch.randn(4, 1, 28, 28)
    assert torch.nn.functional.conv2d(x, phi["0.weight"], phi["0.bias"], padding=1).is_contiguous(
        memory_format=torch.channels_last
    )
    curve.forward(x, 0.3, control).sum().backward()
    plain = {n: value.detach().contiguous().requires_grad_(True) for n, value in phi.items()}
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    torch.func.functional_call(reference, plain, (x,)).sum().backward()
    for name in curve.names:  # dL/dθ_c = 2t(1−t) · dL/dφ(t)
        assert torch.allclose(control[name].grad, 0.42 * plain[name].grad, atol=1e-4), name
