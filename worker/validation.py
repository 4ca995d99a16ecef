"""A registered model's weights loaded into its architecture: `validating` → `ready` | `invalid`.

Building an architecture happens only here, in a worker, never in the API process.
"""

from __future__ import annotations

import logging
from typing import Any

from safetensors.torch import load_file
from sqlalchemy import select, update

from domain.catalog import ModelState
from domain.problems import problem_type
from models import Dataset, Model, ModelVersion
from storage import read_header
from unlearning.architectures import UnknownArchitecture, build_model
from worker.services import Services

log = logging.getLogger(__name__)
MAX_NAMED = 20


class WeightsMismatch(ValueError):
    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


def check_weights(path: str, architecture: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
    """Raise naming missing/unexpected keys or shape mismatches; return when the weights load strictly."""
    try:
        model = build_model(architecture, num_classes, input_shape)
    except (UnknownArchitecture, ValueError) as error:
        raise WeightsMismatch(str(error), [{"loc": ["architecture"], "msg": str(error)}]) from error
    header = read_header(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    errors = [{"loc": ["weights", k], "msg": "missing key"} for k in sorted(set(expected) - set(header))]
    errors += [{"loc": ["weights", k], "msg": "unexpected key"} for k in sorted(set(header) - set(expected))]
    errors += [{"loc": ["weights", k], "msg": f"shape {list(header[k].shape)}, expected {list(shape)}"}
               for k, shape in expected.items() if k in header and tuple(header[k].shape) != shape]
    if errors:
        shown = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors[:3])
        raise WeightsMismatch(f"weights do not fit {architecture} with {num_classes} classes ({len(errors)} problems: "
                              f"{shown}{' ...' if len(errors) > 3 else ''})", errors[:MAX_NAMED])
    try:
        model.load_state_dict(load_file(path, device="cpu"), strict=True)
    except (RuntimeError, ValueError) as error:
        raise WeightsMismatch(f"weights do not load into {architecture}: {error}",
                              [{"loc": ["weights"], "msg": str(error)}]) from error


def validate_model(services: Services, model_id: str) -> None:
    with services.factory() as session:
        model = session.get(Model, model_id)
        if model is None or model.state != ModelState.VALIDATING:
            return  # validated already: a duplicate delivery changes nothing
        version = session.scalar(select(ModelVersion).where(ModelVersion.model_id == model_id,
                                                            ModelVersion.version == 1))
        dataset = session.get(Dataset, model.dataset_id)
        assert version is not None and dataset is not None
    values: dict[str, Any] = {"state": ModelState.READY, "error": None}
    try:
        check_weights(str(services.cache.path(version.storage_key, version.sha256)), model.architecture,
                      model.num_classes, tuple(dataset.input_shape))
    except WeightsMismatch as error:
        log.info("model %s is invalid: %s", model_id, error)
        values = {"state": ModelState.INVALID,
                  "error": {"type": problem_type("invalid-weights"), "title": "Weights do not fit the architecture",
                            "detail": str(error), "errors": error.errors}}
    with services.factory() as session, session.begin():
        session.execute(update(Model).where(Model.id == model_id, Model.state == ModelState.VALIDATING)
                        .values(**values))
