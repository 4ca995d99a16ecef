import pytest
import torch

from unlearning import compute_mask, run_unlearning
from unlearning.config import MaskConfig, resolve_config
from unlearning.curve import BezierCurve
from unlearning.data import UnlearningData
from unlearning.mask import compute_budgeted, tensor_mask
from unlearning.mcu import train_control_point

from .conftest import FAST


def _resnet_like_gradients(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Many tensors of varied sizes, so share budgets can be met to within one tensor."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [64, 9 * 64, 128, 3 * 3 * 64 * 64, 256, 5000, 77, 3000, 1200, 640, 4096, 10]
    retain = {f"p{i}": torch.randn(n, generator=generator) * (i + 1) for i, n in enumerate(sizes)}
    forget = {f"p{i}": torch.randn(n, generator=generator) * (len(sizes) - i) for i, n in enumerate(sizes)}
    return retain, forget


@pytest.mark.parametrize(("retain_filter", "forget_reserve"), [(0.1, 0.5), (0.2, 0.3), (0.0, 1.0), (0.3, 0.05)])
def test_tensor_mask_shares_match_budgets_within_one_tensor(retain_filter: float, forget_reserve: float) -> None:
    retain, forget = _resnet_like_gradients(0)
    mask = tensor_mask(retain, forget, MaskConfig(retain_filter=retain_filter, forget_reserve=forget_reserve))
    total, largest = mask.total, max(mask.sizes.values())
    assert abs(mask.excluded_elements - retain_filter * total) <= largest
    kept_budget = min(forget_reserve * total, total - mask.excluded_elements)
    assert abs(mask.kept_elements - kept_budget) <= largest
    # Stage 1 takes the highest retain scores; none of them may be trainable.
    report = mask.report()
    assert set(report["kept_tensors"]).isdisjoint(_top_by_score(retain, mask.sizes, mask.excluded_elements))


def _top_by_score(grads: dict[str, torch.Tensor], sizes: dict[str, int], count: int) -> set[str]:
    order = sorted(grads, key=lambda n: -float(grads[n].norm()) / sizes[n])
    taken, total = set(), 0
    for name in order:
        if total >= count:
            break
        taken.add(name)
        total += sizes[name]
    return taken


def test_element_mask_shares_are_exact(original: torch.nn.Module, classwise: UnlearningData) -> None:
    config = MaskConfig(retain_filter=0.1, forget_reserve=0.5, granularity="element")
    mask = compute_mask(original, classwise.retain, classwise.forget, classwise.adapter, config, 256)
    assert mask.excluded_elements / mask.total == pytest.approx(0.1, abs=1e-4)
    assert mask.kept_share == pytest.approx(0.5, abs=1e-4)
    assert 0 < len(mask.trainable) <= len(mask.sizes)


def test_frozen_tensors_get_no_gradient_and_do_not_move(original: torch.nn.Module, classwise: UnlearningData) -> None:
    config = resolve_config(FAST | {"mask": {"retain_filter": 0.0, "forget_reserve": 0.05}}, "rl")
    mask = compute_mask(original, classwise.retain, classwise.forget, classwise.adapter, config.mask, 256)
    assert 0 < len(mask.trainable) < len(mask.sizes)
    theta_p = {
        k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in original.state_dict().items()
    }
    curve = BezierCurve(original, original.state_dict(), theta_p)
    before = {n: t.clone() for n, t in curve.control.items()}
    gradients_seen: dict[str, bool] = {}
    original_forward = curve.forward

    def forward_recording_gradients(inputs, t, control=None):
        for name, tensor in (control or {}).items():
            gradients_seen[name] = gradients_seen.get(name, False) or tensor.requires_grad
        return original_forward(inputs, t, control)

    curve.forward = forward_recording_gradients  # type: ignore[method-assign]
    train_control_point(curve, classwise, mask, config, resolve_config(None, "rl").targets or _targets())
    for name in curve.names:
        if name in mask.trainable:
            assert gradients_seen[name], name
            # A conv bias right before BatchNorm has an exactly zero gradient, so only weights must move.
            if name.endswith("weight"):
                assert not torch.equal(curve.control[name], before[name]), f"{name} should have moved"
        else:
            assert not gradients_seen[name], f"{name} must not require a gradient"
            assert torch.equal(curve.control[name], before[name]), f"{name} must stay at the midpoint"


def _targets():
    from unlearning import Targets

    return Targets(retain_accuracy=1.0, forget_accuracy=0.0)


def test_element_mask_freezes_elements_inside_a_tensor(original: torch.nn.Module, classwise: UnlearningData) -> None:
    config = FAST | {"mask": {"granularity": "element", "retain_filter": 0.1, "forget_reserve": 0.2}}
    result = run_unlearning(original, classwise, "rl", config | {"base": {"epochs": 1}}, device="cpu")
    curve = result.curve
    midpoint = {n: (curve.start[n] + curve.end[n]) / 2 for n in curve.names}
    moved = sum(int((~torch.isclose(curve.control[n], midpoint[n], atol=0, rtol=0)).sum()) for n in curve.names)
    total = sum(t.numel() for t in midpoint.values())
    assert 0 < moved <= 0.2 * total + 1
    assert result.mask["granularity"] == "element"
    assert result.mask["kept_share"] == pytest.approx(0.2, abs=1e-3)


def test_mask_report_names_kept_and_frozen_tensors(original: torch.nn.Module, classwise: UnlearningData) -> None:
    mask = compute_mask(original, classwise.retain, classwise.forget, classwise.adapter, MaskConfig(), 256)
    report = mask.report()
    assert set(report["kept_tensors"]) | set(report["frozen_tensors"]) == set(mask.sizes)
    assert report["kept_share"] == pytest.approx(mask.kept_share, abs=1e-6)


def test_default_mask_meets_its_budget_on_cnn_small(original: torch.nn.Module, classwise: UnlearningData) -> None:
    """Per tensor, cnn-small's fc1 (91% of the weights) makes a 50% budget impossible; auto goes per element."""
    per_tensor = compute_mask(
        original, classwise.retain, classwise.forget, classwise.adapter, MaskConfig(granularity="tensor"), 256
    )
    assert abs(per_tensor.kept_share - 0.5) > 0.3  # the degenerate mask the audit found
    mask = compute_mask(original, classwise.retain, classwise.forget, classwise.adapter, MaskConfig(), 256)
    report = mask.report()
    assert report["granularity"] == "element"
    assert report["kept_share"] == pytest.approx(0.5, abs=0.01)
    assert report["excluded_share"] == pytest.approx(0.1, abs=0.01)
    assert 1 < report["tensors_touched"] <= report["tensors_total"]


def test_auto_keeps_per_tensor_masks_that_meet_the_budget() -> None:
    from unlearning.mask import meets_budget

    generator = torch.Generator().manual_seed(0)
    retain = {f"p{i}": torch.randn(100 + i, generator=generator) for i in range(20)}  # no dominant tensor
    forget = {f"p{i}": torch.randn(100 + i, generator=generator) for i in range(20)}
    config = MaskConfig(retain_filter=0.1, forget_reserve=0.5)
    mask = tensor_mask(retain, forget, config)
    assert meets_budget(mask, config)
    assert compute_budgeted(retain, forget, config).granularity == "tensor"
    dominant = {"big": torch.randn(5000, generator=generator)} | retain
    dominant_forget = {"big": torch.randn(5000, generator=generator)} | forget
    assert compute_budgeted(dominant, dominant_forget, config).granularity == "element"
