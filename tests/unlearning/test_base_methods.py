import dataclasses

import pytest
import torch
from torch import nn

from unlearning import base_method_names, base_method_spec, register_base_method, run_unlearning
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import BaseMethodConfig, ConfigError, EvalConfig, resolve_config
from unlearning.data import UnlearningData
from unlearning.metrics import EvalSets, evaluate
from unlearning.training import JobHooks

from .conftest import FAST

# Retain accuracy each method must keep on digits class-wise forgetting with its defaults.
RETAIN_FLOOR = 0.9


@pytest.mark.parametrize("method", ["ft", "ga", "neggrad_plus", "rl", "salun", "retrain"])
def test_base_method_forgets_the_class_and_keeps_the_rest(method: str, original: nn.Module,
                                                         classwise: UnlearningData) -> None:
    sets = EvalSets.draw(classwise, EvalConfig(), seed=0)
    before = evaluate(original, sets, classwise.adapter, 1024)
    # ga's defaults are tuned not to collapse on MNIST-5k; on digits' two forget batches per epoch they
    # forget little (docs/benchmarks.md), so here it gets the steps a forget set this small needs.
    config = resolve_config({"base": {"lr": 0.01, "epochs": 5}} if method == "ga" else None, method).base
    after_model = run_base_method(method, original, classwise, config, MethodContext(0, JobHooks()))
    after = evaluate(after_model, sets, classwise.adapter, 1024)
    assert before.forget_accuracy > 0.95
    assert after.forget_accuracy < before.forget_accuracy - 0.2, f"{method} did not forget: {after}"
    assert after.retain_accuracy >= RETAIN_FLOOR, f"{method} collapsed: {after}"
    # θ_o itself is untouched.
    assert evaluate(original, sets, classwise.adapter, 1024).forget_accuracy == before.forget_accuracy


def test_a_new_method_joins_the_registry_by_name(original: nn.Module, classwise: UnlearningData) -> None:
    calls = []

    @register_base_method("test_shrink", BaseMethodConfig(epochs=1, lr=0.5), "scales every weight")
    def shrink(model: nn.Module, data: UnlearningData, config: BaseMethodConfig, context: MethodContext) -> nn.Module:
        calls.append(config)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(config.lr)
        return model

    assert "test_shrink" in base_method_names()
    result = run_unlearning(original, classwise, "test_shrink", FAST | {"base": {"lr": 0.9}}, device="cpu")
    assert calls[0].lr == 0.9 and calls[0].epochs == 1
    assert result.config.base.lr == 0.9
    with pytest.raises(ConfigError, match=r"base\.momentum"):
        resolve_config({"base": {"momentum": 0.5}}, "test_shrink")


def test_every_method_documents_its_defaults() -> None:
    for name in base_method_names():
        method = base_method_spec(name)
        assert method.description
        assert method.defaults.epochs is not None and method.defaults.lr is not None
        assert dataclasses.asdict(method.resolve(BaseMethodConfig())) == dataclasses.asdict(method.defaults)
