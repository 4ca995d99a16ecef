"""Datasets, models and model versions as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool

from api.schemas.base import Out, ProblemOut, Strict
from domain.catalog import ModelState


class DatasetOut(Out):
    id: str
    name: str
    description: str | None
    num_train: int
    num_test: int
    num_classes: int
    input_shape: list[int | None] = Field(description="[C, H, W]; encoded images: [C, null, null] (any size)")
    input_encoding: Literal["tensor", "encoded"] = Field(description="encoded: PNG / JPEG bytes (docs/datasets.md)")
    created_at: datetime


class PreprocessingOut(Out):
    preset: Literal["unit", "imagenet", "dataset"] | None
    mean: list[float] | None = Field(description="null only until a worker computed a 'dataset' preset's values")
    std: list[float] | None


# {"resize": int | [h, w], "center_crop": int | [h, w]}, as declared (docs/inputs.md)
InputTransform = dict[str, int | list[int]]
# Steps applied to training batches only, in order; NULL (rows from before the field): none.
Augmentation = Annotated[list[str], BeforeValidator(lambda steps: steps or [])]


class ModelOut(Out):
    id: str
    name: str
    architecture: str
    architecture_kwargs: dict[str, Any]
    num_classes: int
    dataset_id: str
    preprocessing: PreprocessingOut
    input_transform: InputTransform | None = Field(description="resize / center crop before the preprocessing")
    augmentation: Augmentation
    input_adapter: str | None = Field(description="how stored images become model input, once validated")
    current_version: int
    state: ModelState
    error: ProblemOut | None
    warnings: list[str]
    require_approval: bool = Field(
        description="its deletion requests wait in awaiting_approval for a key with requests:approve (not the "
        "submitter's); MCU_REQUIRE_APPROVAL requires it on every model"
    )
    created_at: datetime


class ModelUpdateIn(Strict):
    require_approval: StrictBool = Field(description="whether its deletion requests wait for approval")


class VersionOut(Out):
    version: int
    sha256: str
    parent_version: int | None
    deletion_request_id: str | None
    t: float | None
    metrics: dict[str, Any] | None
    preprocessing: PreprocessingOut | None
    input_transform: InputTransform | None = Field(description="the model's, when this version was made")
    augmentation: Augmentation
    weights_deleted_at: datetime | None = Field(
        description="set when the retention policy deleted the weights (GET .../weights then answers 410)"
    )
    created_at: datetime
