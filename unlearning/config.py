"""Validated configuration for an MCU job, with the defaults of docs/algorithm.md.

A config is built from a plain dict (the API's JSON) by `resolve_config`. Unknown keys, wrong types and
out-of-range values raise `ConfigError` naming the dotted key, so a typo never silently falls back to a
default. `MCUConfig.to_dict()` echoes every value actually used, defaults included.

The registry of base methods is here too (`declare_base_method`, `BASE_METHODS`): this module needs no torch,
so the API process validates and serves the methods the workers run.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range. `key` is the dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


# Upper bounds that no real job reaches, so a hostile number is a clear error, not a job that never ends.
MAX_EPOCHS, MAX_BATCH, MAX_ROWS = 10_000, 65_536, 10_000_000
MAX_LR, MAX_COEFFICIENT = 10.0, 1000.0  # lr; loss weights, caps and clips (config.lr 1e308 is a 422)


def _bounds(
    ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> dict[str, float | None]:
    return {"ge": ge, "gt": gt, "le": le, "lt": lt}


def _check_range(key: str, value: float, spec: dict[str, Any]) -> None:
    if isinstance(value, float) and not math.isfinite(value):  # an int is compared exactly, however large
        raise ConfigError(key, "must be a finite number")
    checks = (
        ("ge", lambda b: value >= b, ">="),
        ("gt", lambda b: value > b, ">"),
        ("le", lambda b: value <= b, "<="),
        ("lt", lambda b: value < b, "<"),
    )
    for name, ok, symbol in checks:
        bound = spec.get(name)
        if bound is not None and not ok(bound):
            raise ConfigError(key, f"must be {symbol} {bound}, got {str(value)[:40]}")


def _parse_value(key: str, value: Any, annotation: Any, spec: dict[str, Any]) -> Any:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return parse_dataclass(annotation, value, key)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin is not None:  # a union such as `float | Literal["adaptive"]` or `int | None`
        options = get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(key, "must not be null")
        candidates = [option for option in options if option is not type(None)]
        if len(candidates) == 1:  # `X | None`: X's own error names the deepest key
            return _parse_value(key, value, candidates[0], spec)
        errors = []
        for option in candidates:
            try:
                return _parse_value(key, value, option, spec)
            except ConfigError as error:
                errors.append(error.message)
        raise ConfigError(key, " or ".join(errors))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        _check_range(key, value, spec)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float, e.g. 10**400
            raise ConfigError(key, "must be a finite number") from None
        _check_range(key, number, spec)
        return float(value)
    raise TypeError(f"unsupported config annotation {annotation!r} at {key}")


def parse_dataclass(cls: Any, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and bad values (dotted key in errors)."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"must be an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(where, f"unknown key (allowed: {', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _parse_value(key, value, hints[name], dict(names[name].metadata))
    return cls(**values)


@dataclass(frozen=True)
class MaskConfig:
    """The two-stage parameter mask of docs/algorithm.md §2 (and §10: the budget must mean what it says).

    `granularity`: "tensor" selects whole tensors, "element" single weights (score |G| per element, the
    per-element form of the tensors' RMS gradient, so scores compare across tensors), "auto" takes the
    per-tensor mask when both its shares land within `share_tolerance` of their budgets, else the
    per-element one (on `cnn-small` one linear layer is 91% of the weights: per tensor cannot meet 50%).
    """

    retain_filter: float = field(default=0.1, metadata=_bounds(ge=0.0, lt=1.0))
    forget_reserve: float = field(default=0.5, metadata=_bounds(gt=0.0, le=1.0))
    granularity: Literal["auto", "tensor", "element"] = "auto"
    share_tolerance: float = field(default=0.05, metadata=_bounds(ge=0.0, le=1.0))
    # The retain pass scores on a seeded sample of at most this many rows (every row of a smaller set): a sum
    # of gradients over 10,000 rows ranks tensors as one over 54,000 does, at a fifth of the cost.
    retain_rows: int = field(default=10_000, metadata=_bounds(ge=1, le=MAX_ROWS))


@dataclass(frozen=True)
class GuardConfig:
    """Divergence guard for the unbounded −β·CE(forget) term (docs/algorithm.md §3).

    The forget cross-entropy of a batch is clamped at `forget_loss_cap` (its gradient vanishes beyond,
    so the control point stops being pushed once a batch is forgotten that hard), and the gradient norm
    of θ_c is clipped at `grad_clip`. A batch whose loss is still non-finite is skipped and counted.
    If the weights still become non-finite, training rolls back to the last good epoch and goes on at
    half the lr, at most `max_rollbacks` times; then the job fails with `DivergenceError`.
    """

    forget_loss_cap: float = field(default=5.0, metadata=_bounds(gt=0.0, le=MAX_COEFFICIENT))
    grad_clip: float = field(default=5.0, metadata=_bounds(gt=0.0, le=MAX_COEFFICIENT))
    max_rollbacks: int = field(default=2, metadata=_bounds(ge=0))


# Rows per forward pass when measuring and when recomputing BatchNorm. On one CPU thread a 1,024-row batch
# of cnn-small at 3×32×32 runs 2.4× slower per row than 256 rows (the activations leave the cache), and
# 128 gains little more; the means and variances BatchNorm averages over batches are unbiased either way.
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class EvalConfig:
    """How points are measured (docs/algorithm.md §4, §6, §11; docs/evaluation.md).

    Grid points: every forget row, and seeded, class-stratified samples of `retain_rows` retain and
    `test_rows` test rows (the whole set when it is smaller); each metric carries its binomial standard
    error. The recommended point and a published version are measured on every row.

    BatchNorm statistics of a point come from every retain row, streamed in batches of `batch_size`,
    while the retain set has at most `bn_samples` rows; above that, from a seeded `bn_samples`-row
    subset (the relative sampling error of a mean over 5,000 rows is about 1.4%, and the pass costs one
    forward per row at every grid point).
    """

    bn_samples: int = field(default=5000, metadata=_bounds(ge=1, le=MAX_ROWS))
    retain_rows: int = field(default=1000, metadata=_bounds(ge=1, le=MAX_ROWS))
    test_rows: int = field(default=1000, metadata=_bounds(ge=1, le=MAX_ROWS))
    batch_size: int = field(default=EVAL_BATCH_SIZE, metadata=_bounds(ge=1, le=MAX_BATCH))


@dataclass(frozen=True)
class EvidenceConfig:
    """Checks of a published version against an auditor's attacks (docs/evidence.md, docs/algorithm.md §12).

    Relearning: a copy is fine-tuned with SGD (momentum 0.9, no weight decay, no augmentation) for
    `relearn_steps` steps of `relearn_batch_size` rows drawn from a seeded `relearn_retain_rows`-row sample of
    the retain set, and its forget accuracy measured at 0, ¼, ½ and all of the steps; class-wise, a second run
    adds `relearn_shots` forget rows per forgotten class (k-shot) and measures the other forget rows. The probe:
    a logistic regression on the penultimate features (the input of the last linear layer), fit on test rows.
    Each measures at most `eval_rows` forget and test rows (seeded samples). `shadow_models` > 0 adds per-sample
    membership scores (unlearning/membership.py): that many models trained from scratch on halves of the retain
    set, `shadow_epochs` epochs each — the costliest check, off by default. `relearn_steps` 0 turns relearning off.
    """

    relearn_steps: int = field(default=100, metadata=_bounds(ge=0, le=100_000))
    relearn_lr: float = field(default=0.01, metadata=_bounds(gt=0.0, le=MAX_LR))
    relearn_batch_size: int = field(default=64, metadata=_bounds(ge=2, le=MAX_BATCH))
    relearn_retain_rows: int = field(default=2000, metadata=_bounds(ge=1, le=MAX_ROWS))
    relearn_shots: int = field(default=5, metadata=_bounds(ge=0, le=10_000))
    probe: bool = True
    eval_rows: int = field(default=1000, metadata=_bounds(ge=2, le=MAX_ROWS))
    shadow_models: int = field(default=0, metadata=_bounds(ge=0, le=64))
    shadow_epochs: int = field(default=10, metadata=_bounds(ge=1, le=MAX_EPOCHS))

    def __post_init__(self) -> None:
        if self.shadow_models == 1:  # one shadow has no spread to measure a score against
            raise ConfigError("evidence.shadow_models", "must be 0 (off) or at least 2")


@dataclass(frozen=True)
class Targets:
    """What a model that never saw the forget set would show (fractions), estimated without retraining.

    `retain_accuracy` and `forget_accuracy` drive adaptive β (docs/algorithm.md §3); all four given ones drive the
    recommended t. Operator-supplied, or derived from θ_o (see `pipeline.derive_targets`).
    """

    retain_accuracy: float = field(default=1.0, metadata=_bounds(ge=0.0, le=1.0))
    forget_accuracy: float = field(default=0.0, metadata=_bounds(ge=0.0, le=1.0))
    test_accuracy: float | None = field(default=None, metadata=_bounds(ge=0.0, le=1.0))
    mia_efficacy: float | None = field(default=None, metadata=_bounds(ge=0.0, le=1.0))


@dataclass(frozen=True)
class BaseMethodConfig:
    """Settings of a base unlearning method. `None` means the method's own default (see base_methods)."""

    epochs: int | None = field(default=None, metadata=_bounds(ge=0, le=MAX_EPOCHS))
    lr: float | None = field(default=None, metadata=_bounds(gt=0.0, le=MAX_LR))
    batch_size: int | None = field(default=None, metadata=_bounds(ge=2, le=MAX_BATCH))
    momentum: float | None = field(default=None, metadata=_bounds(ge=0.0, lt=1.0))
    weight_decay: float | None = field(default=None, metadata=_bounds(ge=0.0, le=MAX_COEFFICIENT))
    beta: float | None = field(default=None, metadata=_bounds(ge=0.0, le=MAX_COEFFICIENT))  # neggrad_plus only
    # forget_loss_cap: ga, neggrad_plus (a batch's forget CE) and scrub (a max step's KL)
    forget_loss_cap: float | None = field(default=None, metadata=_bounds(gt=0.0, le=MAX_COEFFICIENT))
    mask_ratio: float | None = field(default=None, metadata=_bounds(gt=0.0, le=1.0))  # salun only
    # rl and salun: the share of retain rows each epoch trains on (a fresh seeded sample per epoch), as the
    # curve's retain_ratio; every forget row is in every epoch.
    retain_ratio: float | None = field(default=None, metadata=_bounds(gt=0.0, le=1.0))
    # l1_sparse only: the weight of the ‖θ‖₁ penalty in the first epoch; it falls linearly over the epochs.
    l1: float | None = field(default=None, metadata=_bounds(ge=0.0, le=MAX_COEFFICIENT))
    # scrub only: the first epochs that begin with a pass over the forget set away from θ_o (SCRUB's msteps), the
    # weight of the KL divergence from θ_o on retain batches (its α) and the distillation temperature.
    max_epochs: int | None = field(default=None, metadata=_bounds(ge=0, le=MAX_EPOCHS))
    kd_weight: float | None = field(default=None, metadata=_bounds(ge=0.0, le=MAX_COEFFICIENT))
    kd_temperature: float | None = field(default=None, metadata=_bounds(gt=0.0, le=MAX_COEFFICIENT))


@dataclass(frozen=True)
class MCUConfig:
    """Every knob of one unlearning job. Defaults: docs/algorithm.md, "Configuration"; `base` is filled per method."""

    epochs: int = field(default=10, metadata=_bounds(ge=1, le=MAX_EPOCHS))
    lr: float = field(default=0.01, metadata=_bounds(gt=0.0, le=MAX_LR))
    momentum: float = field(default=0.9, metadata=_bounds(ge=0.0, lt=1.0))
    beta: float | Literal["adaptive"] = field(default="adaptive", metadata=_bounds(ge=0.0, le=MAX_COEFFICIENT))
    retain_ratio: float = field(default=0.5, metadata=_bounds(gt=0.0, le=1.0))
    batch_size: int = field(default=128, metadata=_bounds(ge=2, le=MAX_BATCH))
    grid_points: int = field(default=21, metadata=_bounds(ge=2, le=1001))
    # Coarse-to-fine: measure about every fifth grid point first, then only the grid points within half
    # a coarse step of the coarse pass's recommended t (see spectrum.coarse_to_fine). False: every point.
    grid_refine: bool = True
    seed: int = field(default=0, metadata=_bounds(ge=0, le=2**32 - 1))
    mask: MaskConfig = field(default_factory=MaskConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    targets: Targets | None = None
    base: BaseMethodConfig = field(default_factory=BaseMethodConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_JSON_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _json_schema(annotation: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one config value as `_parse_value` reads it (scalars and choices)."""
    if get_origin(annotation) is Literal:
        return {"enum": list(get_args(annotation))}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation in (int, float):
        kind = "integer" if annotation is int else "number"
        return {"type": kind} | {_JSON_BOUNDS[name]: bound for name, bound in spec.items() if bound is not None}
    raise TypeError(f"no JSON Schema for config annotation {annotation!r}")


@dataclass(frozen=True)
class BaseMethodSpec:
    """A declared base method: name, defaults and one-line description, all readable without torch.

    The fields a method leaves `None` in its defaults are the ones it does not use; setting them is an error.
    `offered`: whether the service accepts it in a deletion request (retrain, the benchmarks' reference, is not).
    """

    name: str
    defaults: BaseMethodConfig
    description: str
    offered: bool = True
    trains_on: tuple[str, ...] = ("retain", "forget")  # the sets an epoch passes over (progress estimates)

    def resolve(self, given: BaseMethodConfig) -> BaseMethodConfig:
        """The defaults overridden by `given`; a setting the method does not use is an error."""
        overrides = {}
        for f in dataclasses.fields(BaseMethodConfig):
            value = getattr(given, f.name)
            if value is None:
                continue
            if getattr(self.defaults, f.name) is None:
                raise ConfigError(f"base.{f.name}", f"does not apply to base method {self.name!r}")
            overrides[f.name] = value
        return dataclasses.replace(self.defaults, **overrides)

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of a request's `config.base` for this method: the settings it uses, their bounds and
        its defaults (GET /v1/meta serves it)."""
        hints = get_type_hints(BaseMethodConfig)
        properties = {}
        for f in dataclasses.fields(BaseMethodConfig):
            default = getattr(self.defaults, f.name)
            if default is not None:
                (used,) = [a for a in get_args(hints[f.name]) if a is not type(None)]  # `X | None`: the method's X
                properties[f.name] = _json_schema(used, dict(f.metadata)) | {"default": default}
        return {"type": "object", "properties": properties, "additionalProperties": False}


# The registry of base methods. A method is declared here, torch-free, by `declare_base_method`: the API
# validates requests against it and serves it (GET /v1/meta, which the CLI and console read), and the
# benchmarks run what it offers. Its implementation registers against the declared name
# (base_methods.register_base_method, which refuses an undeclared one).
BASE_METHODS: dict[str, BaseMethodSpec] = {}
DEFAULT_BASE_METHOD = "rl"  # a deletion request's when it names none
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # fits the API's base_method field (40 characters)


def declare_base_method(
    name: str,
    defaults: BaseMethodConfig,
    description: str,
    *,
    offered: bool = True,
    trains_on: tuple[str, ...] = ("retain", "forget"),
) -> BaseMethodSpec:
    """Add base method `name` with its defaults (the settings it uses; see BaseMethodSpec), description and the
    sets its epochs pass over ("retain", "forget")."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"base method name {name!r}: lower-case letters, digits and _, at most 40")
    if name in BASE_METHODS:
        raise ValueError(f"base method {name!r} is declared already")
    if not description or defaults.epochs is None or defaults.lr is None:
        raise ValueError(f"base method {name!r} needs a description and default epochs and lr")
    if not trains_on or set(trains_on) - {"retain", "forget"}:
        raise ValueError(f"base method {name!r}: trains_on names 'retain' and/or 'forget'")
    spec = BASE_METHODS[name] = BaseMethodSpec(name, defaults, description, offered, trains_on)
    return spec


# Defaults tuned by `python -m bench.tune` (lr × epochs grid, on digits and MNIST-5k, random and class-wise
# forgetting, held-out seed 3; table in docs/benchmarks.md): per method the least mean Avg. Gap to retrain
# among settings that keep retain accuracy ≥ 90% in every cell. The implementations are in base_methods.py.
_SGD: dict[str, Any] = {"batch_size": 128, "momentum": 0.9, "weight_decay": 5e-4}
declare_base_method(
    "ft", BaseMethodConfig(epochs=10, lr=0.1, **_SGD), "fine-tune: CE on the retain set", trains_on=("retain",)
)
declare_base_method(
    "ga",
    BaseMethodConfig(epochs=2, lr=0.003, batch_size=128, momentum=0.9, weight_decay=0.0, forget_loss_cap=5.0),
    "gradient ascent: −min(CE, cap) on the forget set",
    trains_on=("forget",),
)
declare_base_method(
    "neggrad_plus",
    BaseMethodConfig(epochs=5, lr=0.05, beta=0.15, forget_loss_cap=5.0, **_SGD),
    "NegGrad+: CE(retain part) − β·min(CE(forget part), cap) on mixed batches",
)
declare_base_method(
    "rl",
    BaseMethodConfig(epochs=5, lr=0.013, retain_ratio=0.5, **_SGD),
    "random label: CE on retain ∪ forget relabelled with a random wrong class",
)
declare_base_method(
    "salun",
    BaseMethodConfig(epochs=5, lr=0.03, mask_ratio=0.5, retain_ratio=0.5, **_SGD),
    "SalUn: random label with gradients masked to the most forget-salient weights",
)
declare_base_method(
    "l1_sparse",
    BaseMethodConfig(epochs=15, lr=0.2, l1=5e-4, **_SGD),
    "l1-sparse: CE on the retain set + γ·‖θ‖₁, γ falling linearly from `l1` to 0 over the epochs",
    trains_on=("retain",),
)
declare_base_method(
    "scrub",
    BaseMethodConfig(
        epochs=10, lr=0.001, max_epochs=2, kd_weight=0.001, kd_temperature=4.0, forget_loss_cap=20.0, **_SGD
    ),
    "SCRUB: a student of θ_o pushed away from it on the forget set (first max_epochs), kept close on the retain set",
)
declare_base_method(
    "retrain",
    BaseMethodConfig(epochs=20, lr=0.05, **_SGD),
    "retrain from a fresh initialisation on the retain set (benchmarks' gold standard)",
    offered=False,  # a retrain, not an unlearning method: the reference the benchmarks compare with
    trains_on=("retain",),
)


def base_method_names() -> list[str]:
    return sorted(BASE_METHODS)


def offered_base_methods() -> list[BaseMethodSpec]:
    """The methods a deletion request may name, by name."""
    return [BASE_METHODS[name] for name in sorted(BASE_METHODS) if BASE_METHODS[name].offered]


def base_method_spec(name: str) -> BaseMethodSpec:
    if name not in BASE_METHODS:
        raise ConfigError("base_method", f"unknown base method {name!r} (known: {', '.join(base_method_names())})")
    return BASE_METHODS[name]


def resolve_config(data: dict[str, Any] | MCUConfig | None, base_method: str) -> MCUConfig:
    """Validate `data` and fill every default, the base method's included, so the result is complete."""
    config = parse_dataclass(MCUConfig, data)
    return dataclasses.replace(config, base=base_method_spec(base_method).resolve(config.base))
