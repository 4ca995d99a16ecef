"""The API's checks of uploaded weights, without torch: a well-formed safetensors file of floating-point
tensors. Whether they load into the architecture is checked by a worker (worker/validation.py)."""

from __future__ import annotations

from typing import BinaryIO

from domain.problems import invalid
from storage import InvalidSafetensors, read_header

MAX_NAMED = 20
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
# Integer buffers a state_dict may hold besides the weights (BatchNorm's batch counter).
INTEGER_BUFFERS = ("num_batches_tracked",)


def check_weights_header(source: BinaryIO) -> None:
    """422 for anything but safetensors (pickles included), or for non-float weights; the stream is rewound."""
    try:
        header = read_header(source)
    except InvalidSafetensors as error:
        raise invalid(f"weights: {error}", [{"loc": ["weights"], "msg": str(error)}]) from error
    if not header:
        raise invalid("weights: the file holds no tensors", [{"loc": ["weights"], "msg": "no tensors"}])
    wrong = [
        name for name, info in header.items() if info.dtype not in FLOAT_DTYPES and not name.endswith(INTEGER_BUFFERS)
    ]
    if wrong:
        raise invalid(
            f"weights must be floating point; {len(wrong)} tensors are not: {', '.join(wrong[:3])}",
            [{"loc": ["weights", name], "msg": f"dtype {header[name].dtype}"} for name in wrong[:MAX_NAMED]],
        )
