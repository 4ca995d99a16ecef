"""What a model's `architecture_kwargs` may ask of a constructor: shape and size settings, never I/O.

torch-free, so the API refuses a bad argument with a 422 at registration and the worker checks the same
before any constructor runs. Constructors of timm and torchvision read files and download when asked
(timm's `checkpoint_path`, `pretrained`, `pretrained_cfg*`, `cache_dir`; torchvision's `weights`), can be
told to allocate on a real device (`device`), or to return something that is not a classifier
(`features_only`). Keys of that kind are refused by name; values are scalars and short lists of them,
bounded, and text is a plain identifier (no path, no URL). What a constructor then does with valid-looking
values (a depth of 20,000, a zero divisor) is bounded by the worker's sandbox (worker/sandbox.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

from domain.problems import invalid

MAX_KEYS = 32
MAX_LIST = 16
MAX_INT = 1 << 16  # no layer count, width or image size a CPU/GPU classifier needs is larger
MAX_FLOAT = 1e6
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
TEXT = re.compile(r"[A-Za-z0-9_-]{1,64}")  # "gelu", "avg", "layernorm": never a file name, path or URL
# Arguments set by the service (num_classes), or that make a constructor load, download, place or reshape.
REFUSED_KEYS = frozenset(
    {
        "num_classes",
        "progress",
        "features_only",
        "out_indices",
        "feature_cls",
        "feature_cfg",
        "model_cfg",
        "kwargs_filter",
        "device",
        "dtype",
        "scriptable",
        "exportable",
        "no_jit",
    }
)
# Any key naming a file, folder, URL, checkpoint, cache, hub or pretrained/stored weights, e.g. checkpoint_path,
# pretrained_cfg_overlay, weights_backbone, cache_dir, hf_hub_id, state_dict_url.
REFUSED_WORDS = re.compile(
    r"(^|_)(pretrained|checkpoint|ckpt|weights|state_dict|path|file|files|filename|dir|"
    r"url|uri|cache|hub|hf|download|load|root)(_|$)"
)
SAFE_KEYS = frozenset({"drop_path_rate", "drop_path"})  # stochastic depth: "path" is not a file there


def check_architecture_kwargs(kwargs: dict[str, Any]) -> None:
    """Raise a 422 problem naming every argument a constructor may not be given; return when all are fine."""
    errors = [
        {"loc": ["architecture_kwargs", key], "msg": problem}
        for key, value in list(kwargs.items())[:MAX_KEYS]
        if (problem := _problem(key, value))
    ]
    if len(kwargs) > MAX_KEYS:
        errors.append({"loc": ["architecture_kwargs"], "msg": f"more than {MAX_KEYS} arguments"})
    if errors:
        shown = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors[:3])
        raise invalid(f"architecture_kwargs refused ({shown}{' ...' if len(errors) > 3 else ''})", errors)


def _problem(key: str, value: Any) -> str | None:
    if not KEY.fullmatch(key):
        return "a name of letters, digits and _ (at most 64)"
    if key in REFUSED_KEYS or (key not in SAFE_KEYS and REFUSED_WORDS.search(key.lower())):
        return (
            "not allowed: the service builds freshly initialised classifiers from the uploaded weights only "
            "(no files, downloads, pretrained weights, devices or feature extractors)"
        )
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            return f"a list of at most {MAX_LIST} values"
        return next(filter(None, map(_scalar_problem, value)), None)
    return _scalar_problem(value)


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -MAX_INT <= value <= MAX_INT else f"integers are at most {MAX_INT} in magnitude"
    if isinstance(value, float):
        finite = math.isfinite(value) and abs(value) <= MAX_FLOAT
        return None if finite else f"numbers are finite, at most {MAX_FLOAT:g} in magnitude"
    if isinstance(value, str):
        return None if TEXT.fullmatch(value) else "text is a plain name of letters, digits, _ and - (at most 64)"
    return "a number, true/false, null, a plain name, or a short list of these (no objects)"
