"""A model declared with an input transform and an augmentation, through the worker's code in-process: validation
builds the network for the transformed shape and measures what the user's own pipeline measures; a job trains
with the augmentation; every version and the report carry both.

An mlp (its first layer fixes the input size) trained by this test on digits resized 8 → 14 and center-cropped
to 12, with its own torchvision calls: the weights fit the transformed shape only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from torchvision.transforms import v2

from api.app import create_app
from cli.digits import DigitsUpload
from models import DeletionRequest
from settings import Settings
from tests.support import QUICK_EVIDENCE
from unlearning import load_digits_dataset, train_classifier
from unlearning.architectures import seeded_init
from unlearning.data import InputAdapter, Normalization, Subset
from worker import jobs
from worker.inputs import load_inputs
from worker.services import Services, connect
from worker.validation import validate_model

TRANSFORM = {"resize": 14, "center_crop": 12}
CROP_FLIP = ["random_crop", "horizontal_flip"]
FORGETS = {"epochs": 2, "grid_points": 3, "base": {"epochs": 2}, "evidence": QUICK_EVIDENCE}


def users_pipeline(uint8_images: torch.Tensor) -> torch.Tensor:
    """What the user does to a batch of stored images [N, 1, 8, 8] (docs/inputs.md), preprocessing "unit"."""
    resized = v2.CenterCrop(12)(
        v2.Resize(14, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)(uint8_images)
    )
    return v2.ToDtype(torch.float32, scale=True)(resized)


@dataclass
class Env:
    client: TestClient
    services: Services
    dataset_id: str
    weights: bytes
    test_accuracy: float  # the user's own measurement of the weights on the whole test split

    def register(self, **form: str) -> dict:
        data = {
            "name": "digits-mlp",
            "architecture": "mlp",
            "num_classes": "10",
            "dataset_id": self.dataset_id,
            "preprocessing": "unit",
        } | form
        response = self.client.post("/v1/models", data=data, files={"weights": ("w.safetensors", self.weights)})
        assert response.status_code == 201, response.text
        validate_model(self.services, response.json()["id"])
        return self.client.get(f"/v1/models/{response.json()['id']}").json()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, digits_upload: DigitsUpload) -> Iterator[Env]:
    digits = load_digits_dataset()  # the split the upload uses
    model = seeded_init("mlp", 10, (1, 12, 12), seed=0)
    unit = InputAdapter(Normalization((0.0,), (1.0,)), channels=1)
    train = users_pipeline(digits.train_inputs)  # float32 in [0, 1]: the adapter leaves it as is
    train_classifier(model, Subset(train, digits.train_labels, torch.arange(len(train))), unit, epochs=15, lr=0.05)
    with torch.no_grad():
        predicted = model.eval()(users_pipeline(digits.test_inputs)).argmax(1)
    accuracy = float((predicted == digits.test_labels).float().mean())
    assert accuracy > 0.8
    settings = Settings(data_dir=tmp_path_factory.mktemp("inputs"), bootstrap_api_key="k")
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    dataset = client.post("/v1/datasets", data={"name": "digits"}, files=digits_upload.files())
    assert dataset.status_code == 201, dataset.text
    yield Env(client, connect(settings), dataset.json()["id"], save(model.state_dict()), accuracy)


def test_validation_builds_for_the_transformed_shape_and_measures_what_the_user_measures(env: Env) -> None:
    model = env.register(input_transform=str(TRANSFORM).replace("'", '"'))
    assert model["state"] == "ready", model["error"]
    assert "12x12" in model["input_adapter"]
    version = env.client.get(f"/v1/models/{model['id']}/versions").json()["items"][0]
    assert version["metrics"]["test_accuracy"] == pytest.approx(env.test_accuracy, abs=1e-9)  # every test row
    undeclared = env.register()  # the same weights on the stored 8x8 images: they do not fit
    assert undeclared["state"] == "invalid" and "expected [256, 64]" in undeclared["error"]["detail"]


def test_a_job_trains_with_the_augmentation_and_every_version_and_the_report_carry_both(env: Env) -> None:
    model = env.register(input_transform='{"resize": 14, "center_crop": 12}', augmentation="crop_flip")
    assert model["state"] == "ready" and model["augmentation"] == CROP_FLIP
    response = env.client.post(
        "/v1/deletion-requests", json={"model_id": model["id"], "forget": {"classes": [3]}, "config": FORGETS}
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    with env.services.factory() as session:
        request = session.get(DeletionRequest, request_id)
    inputs = load_inputs(env.services, request)
    assert inputs.data.adapter.augmentation is not None and list(inputs.data.adapter.augmentation.steps) == CROP_FLIP
    assert inputs.data.test.inputs.shape[1:] == (1, 12, 12)

    jobs.run_request(env.services, request_id)
    # What is published is under test here, not how well it forgets (pad-4 crops of 12x12 digits cost an mlp).
    selected = env.client.post(
        f"/v1/deletion-requests/{request_id}/selection",
        json={"t": 1.0, "acknowledge": "erasure criterion not met: accepted, the test checks the declarations"},
    )
    assert selected.status_code == 202, selected.text
    jobs.materialize_selection(env.services, request_id)
    assert env.client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "succeeded"
    declared = {"input_transform": TRANSFORM, "augmentation": CROP_FLIP}
    versions = env.client.get(f"/v1/models/{model['id']}/versions").json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert all({k: v[k] for k in declared} == declared for v in versions), versions
    report = env.client.get(f"/v1/deletion-requests/{request_id}/report").json()["report"]
    for part in (report["model"], report["model"]["before"], report["model"]["after"]):
        assert {k: part[k] for k in declared} == declared
