"""A model's declared preprocessing: how the user turns stored images into model input.

Inputs are scaled to [0, 1] (uint8 divided by 255; float32 inputs are taken as already scaled), grey
images are repeated to 3 channels when the architecture takes 3, and then `(x - mean) / std` per channel.
The worker uses exactly this for everything it does with the model, so the metrics it reports are the
ones the user measures in their own pipeline.
"""

from __future__ import annotations

import json
import math
from typing import Any

from domain.problems import invalid

PRESETS: dict[str, tuple[list[float], list[float]] | None] = {
    "unit": ([0.0], [1.0]),  # [0, 1] inputs, nothing else
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "dataset": None,  # the dataset's own per-channel mean/std over its train split, computed by the worker
}
OPTIONS = ('a preset ("unit", "imagenet" or "dataset") or a JSON object {"mean": [...], "std": [...]} '
           "with one value per input channel")


def _bad(message: str) -> Exception:
    return invalid(f"preprocessing: {message}; give {OPTIONS}", [{"loc": ["preprocessing"], "msg": message}])


def parse_preprocessing(raw: str, data_channels: int) -> dict[str, Any]:
    """`{"preset", "mean", "std"}` from the form field; mean/std stay None for "dataset" until a worker
    computes them. 422 naming the options for anything else."""
    text = raw.strip()
    if len(text) > 2_000:
        raise _bad("too long")
    if text in PRESETS:
        stats = PRESETS[text]
        mean, std = stats if stats is not None else (None, None)
        return {"preset": text, "mean": mean, "std": std}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad(f"unknown preset {text[:40]!r}") from None
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise _bad("an object needs exactly the keys mean and std")
    allowed = {data_channels, 3} if data_channels == 1 else {data_channels}
    for key in ("mean", "std"):
        numbers = value[key]
        if not isinstance(numbers, list) or len(numbers) not in allowed or not all(
                isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) for n in numbers):
            raise _bad(f"{key} must be a list of {' or '.join(map(str, sorted(allowed)))} finite numbers "
                       f"(the dataset's images have {data_channels} channels)")
    if len(value["mean"]) != len(value["std"]) or any(s <= 0 for s in value["std"]):
        raise _bad("mean and std need the same length, and every std must be > 0")
    return {"preset": None, "mean": [float(m) for m in value["mean"]], "std": [float(s) for s in value["std"]]}


def parse_architecture_kwargs(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw) if len(raw) <= 10_000 else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise invalid("architecture_kwargs must be a JSON object of constructor arguments, e.g. {\"img_size\": 32}",
                      [{"loc": ["architecture_kwargs"], "msg": "not a JSON object"}])
    return value
