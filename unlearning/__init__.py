"""Masked Mode Connectivity Unlearning as a plain PyTorch library (see docs/algorithm.md).

Usable on its own: build or load a classifier, split a dataset into retain/forget/test, and call
`run_unlearning`. Nothing here imports the service (FastAPI, Celery, SQLAlchemy, boto3).

Names are imported lazily, on first use: `unlearning.config` (validation, base-method names and
defaults) needs no torch, and the API process imports only it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "unlearning.architectures": ("build_model", "model_input_channels"),
    "unlearning.base_methods": ("register_base_method",),
    "unlearning.config": (
        "ConfigError",
        "MCUConfig",
        "Targets",
        "base_method_names",
        "base_method_spec",
        "declare_base_method",
        "resolve_config",
    ),
    "unlearning.curve": ("BezierCurve", "recompute_batchnorm"),
    "unlearning.data": (
        "ForgetSetError",
        "ImageDataset",
        "Normalization",
        "UnlearningData",
        "load_digits_dataset",
        "make_unlearning_data",
    ),
    "unlearning.mask": ("ParameterMask", "compute_mask"),
    "unlearning.mcu": ("Checkpoint", "adaptive_beta"),
    "unlearning.metrics": ("PointMetrics", "avg_gap"),
    "unlearning.pipeline": ("CurveResult", "materialize_point", "run_unlearning"),
    "unlearning.training": ("Cancelled", "DivergenceError", "JobHooks", "Progress", "train_classifier"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'unlearning' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
