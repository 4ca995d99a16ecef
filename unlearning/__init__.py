"""Masked Mode Connectivity Unlearning as a plain PyTorch library (see shared MCU.md).

Usable on its own: build or load a classifier, split a dataset into retain/forget/test, and call
`run_unlearning`. Nothing here imports the service (FastAPI, Celery, SQLAlchemy, boto3).
"""

from unlearning.architectures import build_model, is_known_architecture, model_input_channels
from unlearning.base_methods import base_method_names, get_base_method, register_base_method
from unlearning.config import ConfigError, MCUConfig, Targets, resolve_config
from unlearning.curve import BezierCurve, recompute_batchnorm
from unlearning.data import (
    ForgetSetError,
    ImageDataset,
    Normalization,
    UnlearningData,
    load_digits_dataset,
    make_unlearning_data,
)
from unlearning.mask import ParameterMask, compute_mask
from unlearning.mcu import Checkpoint, adaptive_beta
from unlearning.metrics import PointMetrics, avg_gap
from unlearning.pipeline import CurveResult, materialize_point, run_unlearning
from unlearning.training import Cancelled, JobHooks, Progress, train_classifier

__all__ = [
    "BezierCurve", "Cancelled", "Checkpoint", "ConfigError", "CurveResult", "ForgetSetError", "ImageDataset",
    "JobHooks", "MCUConfig", "Normalization", "ParameterMask", "PointMetrics", "Progress", "Targets",
    "UnlearningData", "adaptive_beta", "avg_gap", "base_method_names", "build_model", "compute_mask",
    "get_base_method", "is_known_architecture", "load_digits_dataset", "make_unlearning_data",
    "materialize_point", "model_input_channels", "recompute_batchnorm", "register_base_method", "resolve_config",
    "run_unlearning",
    "train_classifier",
]
