"""Checking uploaded weights: safetensors only, and they must load into the named architecture on the CPU."""

from __future__ import annotations

from pathlib import Path

from domain.problems import invalid
from storage import InvalidSafetensors, read_header

MAX_NAMED = 20


def check_weights(path: Path, architecture: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
    """Raise a 422 naming missing/unexpected keys or shape mismatches; return when the weights load."""
    from safetensors.torch import load_file  # torch stays out of API start-up until a model is uploaded

    from unlearning.architectures import UnknownArchitecture, build_model

    try:
        header = read_header(path)
    except InvalidSafetensors as error:
        raise invalid(f"weights: {error}", [{"loc": ["weights"], "msg": str(error)}]) from error
    try:
        model = build_model(architecture, num_classes, input_shape)
    except (UnknownArchitecture, ValueError) as error:
        raise invalid(str(error), [{"loc": ["architecture"], "msg": str(error)}]) from error
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    errors = [{"loc": ["weights", k], "msg": "missing key"} for k in sorted(set(expected) - set(header))]
    errors += [{"loc": ["weights", k], "msg": "unexpected key"} for k in sorted(set(header) - set(expected))]
    errors += [{"loc": ["weights", k], "msg": f"shape {list(header[k].shape)}, expected {list(shape)}"}
               for k, shape in expected.items() if k in header and tuple(header[k].shape) != shape]
    if errors:
        shown = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors[:3])
        raise invalid(f"weights do not fit {architecture} with {num_classes} classes ({len(errors)} problems: "
                      f"{shown}{' ...' if len(errors) > 3 else ''})", errors[:MAX_NAMED])
    try:
        model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except (RuntimeError, ValueError) as error:
        raise invalid(f"weights do not load into {architecture}: {error}", [{"loc": ["weights"], "msg": str(error)}]) \
            from error
