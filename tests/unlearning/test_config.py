import pytest
import torch

from unlearning import ConfigError, ForgetSetError, MCUConfig, make_unlearning_data, resolve_config


def test_defaults_are_those_of_the_algorithm_and_echoed_in_full() -> None:
    config = resolve_config(None, "rl")
    assert (config.epochs, config.lr, config.beta, config.retain_ratio, config.batch_size, config.grid_points) == (
        10,
        0.01,
        "adaptive",
        0.5,
        128,
        21,
    )
    assert config.grid_refine and config.mask.granularity == "auto" and config.guard.max_rollbacks == 2
    assert (config.mask.retain_filter, config.mask.forget_reserve) == (0.1, 0.5)
    echoed = config.to_dict()
    assert echoed["base"]["epochs"] is not None and echoed["base"]["lr"] is not None
    assert resolve_config(echoed, "rl") == config  # the echo is itself a valid, identical config


def test_values_are_overridden_and_base_defaults_filled_per_method() -> None:
    config = resolve_config({"epochs": 3, "beta": 0.2, "mask": {"forget_reserve": 0.3}, "base": {"lr": 0.02}}, "ga")
    assert config.epochs == 3 and config.beta == 0.2 and config.mask.forget_reserve == 0.3
    assert config.mask.retain_filter == 0.1
    assert config.base.lr == 0.02 and config.base.epochs is not None


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"epoch": 3}, "epoch"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"lr": -1}, "lr"),
        ({"beta": "fixed"}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"retain_ratio": 0}, "retain_ratio"),
        ({"grid_points": 1}, "grid_points"),
        ({"mask": {"retain_filter": 1.0}}, "mask.retain_filter"),
        ({"mask": {"forget_reserv": 0.5}}, "mask.forget_reserv"),
        ({"mask": {"granularity": "row"}}, "mask.granularity"),
        ({"mask": 3}, "mask"),
        ({"base": {"beta": 0.1}}, "base.beta"),  # beta belongs to neggrad_plus, not rl
        ({"targets": {"retain_accuracy": 1.5}}, "targets.retain_accuracy"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_invalid_configs_name_the_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config(config, "rl")
    assert error.value.key == key
    assert str(error.value).startswith(f"{key}:")


@pytest.mark.parametrize(
    ("method", "base", "key"),
    [
        ("scrub", {"max_epochs": -1}, "base.max_epochs"),
        ("scrub", {"max_epochs": 10**9}, "base.max_epochs"),
        ("scrub", {"max_epochs": 1.5}, "base.max_epochs"),
        ("scrub", {"kd_weight": float("inf")}, "base.kd_weight"),
        ("scrub", {"kd_weight": -1}, "base.kd_weight"),
        ("scrub", {"kd_temperature": 0}, "base.kd_temperature"),
        ("scrub", {"kd_temperature": "warm"}, "base.kd_temperature"),
        ("scrub", {"l1": 0.01}, "base.l1"),  # l1 belongs to l1_sparse
        ("l1_sparse", {"l1": -0.01}, "base.l1"),
        ("l1_sparse", {"l1": float("nan")}, "base.l1"),
        ("l1_sparse", {"l1": 10**300}, "base.l1"),
        ("l1_sparse", {"max_epochs": 1}, "base.max_epochs"),  # max_epochs belongs to scrub
    ],
)
def test_invalid_base_settings_of_scrub_and_l1_sparse_name_the_key(method: str, base: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_config({"base": base}, method)
    assert error.value.key == key


def test_unknown_base_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown base method 'finetune'"):
        resolve_config({}, "finetune")


def test_config_object_passes_through() -> None:
    assert resolve_config(MCUConfig(epochs=4), "ft").epochs == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forget_indices": []}, "empty"),
        ({"forget_classes": []}, "empty"),
        ({"forget_classes": [10]}, "unknown classes"),
        ({"forget_classes": [-1]}, "unknown classes"),
        ({"forget_indices": [0, 99999]}, "unknown sample indices"),
        ({"forget_classes": list(range(10))}, "whole training set"),
        ({}, "exactly one"),
        ({"forget_indices": [1], "forget_classes": [1]}, "exactly one"),
    ],
)
def test_invalid_forget_sets_are_named(digits, kwargs: dict, message: str) -> None:
    with pytest.raises(ForgetSetError, match=message):
        make_unlearning_data(digits, channels=1, **kwargs)


def test_forget_set_of_every_training_index_is_rejected(digits) -> None:
    with pytest.raises(ForgetSetError, match="whole training set"):
        make_unlearning_data(digits, channels=1, forget_indices=torch.arange(len(digits.train_labels)))
