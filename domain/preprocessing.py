"""A model's declared preprocessing: how the user turns stored images into model input.

The input transform (resize / center crop, unlearning/transforms.py) comes first, on the decoded pixels. Then
inputs are scaled to [0, 1] (uint8 divided by 255; float32 inputs are taken as already scaled), grey
images are repeated to 3 channels when the architecture takes 3, and then `(x - mean) / std` per channel.
The worker uses exactly this for everything it does with the model, so the metrics it reports are the
ones the user measures in their own pipeline.
"""

from __future__ import annotations

from typing import Any

from domain.inputs import parse_json
from domain.problems import invalid
from unlearning.transforms import AUGMENTATION_PRESETS, AUGMENTATION_STEPS, MAX_SIDE, InputTransform, model_input_shape

PRESETS: dict[str, tuple[list[float], list[float]] | None] = {
    "unit": ([0.0], [1.0]),  # [0, 1] inputs, nothing else
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "dataset": None,  # the dataset's own per-channel mean/std over its train split, computed by the worker
}
# Inputs are in [0, 1]: a mean or std outside these ranges is a mistake (a 0-255 scale), and a tiny std
# (5e-324) would turn every input into infinity.
MEAN_RANGE, STD_RANGE = (-1000.0, 1000.0), (1e-6, 1000.0)
OPTIONS = (
    'a preset ("unit", "imagenet" or "dataset") or a JSON object {"mean": [...], "std": [...]} '
    "with one value per input channel"
)


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
        value = parse_json(text)
    except ValueError as error:
        raise _bad(f"unknown preset {text[:40]!r}" if text[:1] not in "{[" else str(error)) from None
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise _bad("an object needs exactly the keys mean and std")
    allowed = {data_channels, 3} if data_channels == 1 else {data_channels}
    for key, (low, high) in (("mean", MEAN_RANGE), ("std", STD_RANGE)):
        numbers = value[key]
        if (
            not isinstance(numbers, list)
            or len(numbers) not in allowed
            or not all(isinstance(n, int | float) and not isinstance(n, bool) and low <= n <= high for n in numbers)
        ):
            raise _bad(
                f"{key} must be a list of {' or '.join(map(str, sorted(allowed)))} numbers in [{low:g}, "
                f"{high:g}] (the dataset's images have {data_channels} channels)"
            )
    if len(value["mean"]) != len(value["std"]):
        raise _bad("mean and std need the same length")
    return {"preset": None, "mean": [float(m) for m in value["mean"]], "std": [float(s) for s in value["std"]]}


def parse_architecture_kwargs(raw: str | None) -> dict[str, Any]:
    """The form field's JSON object; its values are checked by domain/inputs.py (text, finite numbers, depth),
    what the architecture makes of them by a worker."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = parse_json(raw) if len(raw) <= 10_000 else None
        problem = "not a JSON object"
    except ValueError as error:
        value, problem = None, str(error)
    if not isinstance(value, dict):
        raise invalid(
            f'architecture_kwargs must be a JSON object of constructor arguments, e.g. {{"img_size": 32}}: {problem}',
            [{"loc": ["architecture_kwargs"], "msg": problem}],
        )
    return value


TRANSFORM_OPTIONS = (
    'a JSON object {"resize": int | [height, width], "center_crop": int | [height, width]} '
    f"with at least one of the two, sides 1..{MAX_SIDE}"
)
AUGMENTATION_OPTIONS = f'"none", "crop_flip" or a JSON list of steps from {sorted(AUGMENTATION_STEPS)}'


def _side(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIDE


def parse_input_transform(raw: str | None, stored_shape: list[int | None]) -> dict[str, Any] | None:
    """The declared resize / center crop (unlearning/transforms.py), checked against the dataset's stored
    [C, H, W] (H, W null: encoded images of any size, which need a transform that fixes one). None: none."""

    def bad(message: str) -> Exception:
        return invalid(
            f"input_transform: {message}; give {TRANSFORM_OPTIONS}", [{"loc": ["input_transform"], "msg": message}]
        )

    value: Any = None
    if raw is not None and raw.strip():
        try:
            value = parse_json(raw) if len(raw) <= 2_000 else None
        except ValueError as error:
            raise bad(str(error)) from None
        if not isinstance(value, dict) or not value or set(value) - {"resize", "center_crop"}:
            raise bad("an object needs resize, center_crop or both, and no other key")
        for key, size in value.items():
            if not (_side(size) or (isinstance(size, list) and len(size) == 2 and all(map(_side, size)))):
                raise bad(f"{key} must be an integer or [height, width], each in 1..{MAX_SIDE}")
    transform = InputTransform.from_dict(value)
    try:
        model_input_shape(stored_shape, transform)
    except ValueError as error:
        raise bad(str(error)) from None
    return None if transform is None else transform.to_dict()


def parse_augmentation(raw: str | None) -> list[str]:
    """The declared training-only augmentation as its list of steps ([] for none)."""
    text = (raw or "").strip() or "none"
    if text in AUGMENTATION_PRESETS:
        return list(AUGMENTATION_PRESETS[text])
    problem = f"unknown preset {text[:40]!r}"
    if text[:1] == "[":
        try:
            steps = parse_json(text) if len(text) <= 2_000 else None
            problem = f"a list of distinct steps from {sorted(AUGMENTATION_STEPS)}"
        except ValueError as error:
            steps, problem = None, str(error)
        if (
            isinstance(steps, list)
            and all(isinstance(s, str) and s in AUGMENTATION_STEPS for s in steps)
            and len(set(steps)) == len(steps)
        ):
            return steps
    raise invalid(f"augmentation: {problem}; give {AUGMENTATION_OPTIONS}", [{"loc": ["augmentation"], "msg": problem}])
