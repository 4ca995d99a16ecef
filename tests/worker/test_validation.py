"""A registered model validated by the worker's code, in-process, on the embedded default: the declared
preprocessing decides what the model scores, a wrong one is flagged, and no architecture is built blind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli.digits import DigitsUpload
from settings import Settings
from worker.services import Services, connect
from worker.validation import NEAR_CHANCE, validate_model


@dataclass
class Service:
    client: TestClient
    worker: Services
    dataset_id: str

    def register(self, upload: DigitsUpload, preprocessing: str, **form: str) -> dict:
        data = upload.model_form(self.dataset_id) | {"preprocessing": preprocessing} | form
        response = self.client.post("/v1/models", data=data, files={"weights": ("w.safetensors", upload.weights)})
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "validating"
        validate_model(self.worker, response.json()["id"])
        return self.client.get(f"/v1/models/{response.json()['id']}").json()

    def version_1(self, model: dict) -> dict:
        return self.client.get(f"/v1/models/{model['id']}/versions").json()["items"][0]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, digits_upload: DigitsUpload) -> Iterator[Service]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("validation"), bootstrap_api_key="k")
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    dataset = client.post("/v1/datasets", data={"name": "digits"}, files=digits_upload.files())
    assert dataset.status_code == 201, dataset.text
    yield Service(client, connect(settings), dataset.json()["id"])


def test_the_declared_preprocessing_is_what_the_model_is_measured_under(service: Service,
                                                                        digits_upload: DigitsUpload) -> None:
    model = service.register(digits_upload, "unit")
    assert model["state"] == "ready" and model["warnings"] == [] and model["error"] is None
    assert model["preprocessing"] == {"preset": "unit", "mean": [0.0], "std": [1.0]}
    assert "scaled to [0, 1]" in model["input_adapter"]
    version = service.version_1(model)
    assert version["metrics"]["test_accuracy"] > 0.9 and version["metrics"]["retain_accuracy"] > 0.9
    assert version["preprocessing"] == model["preprocessing"]


def test_a_mismatched_preprocessing_is_flagged(service: Service, digits_upload: DigitsUpload) -> None:
    model = service.register(digits_upload, json.dumps({"mean": [5.0], "std": [1.0]}))  # every pixel far off
    assert model["state"] == "ready" and model["warnings"] == [NEAR_CHANCE]
    assert service.version_1(model)["metrics"]["test_accuracy"] <= 0.2


def test_the_dataset_preset_is_resolved_by_the_worker(service: Service, digits_upload: DigitsUpload) -> None:
    model = service.register(digits_upload, "dataset")
    assert model["state"] == "ready" and model["preprocessing"]["preset"] == "dataset"
    (mean,), (std,) = model["preprocessing"]["mean"], model["preprocessing"]["std"]
    assert 0.1 < mean < 0.5 and 0.1 < std < 0.5  # digits: mostly dark pixels


def test_statistics_for_other_channels_make_the_model_invalid(service: Service, digits_upload: DigitsUpload) -> None:
    model = service.register(digits_upload, "imagenet")  # 3 values; cnn-small on grey digits takes 1 channel
    assert model["state"] == "invalid" and "3 values per statistic" in model["error"]["detail"]


def test_a_huge_architecture_is_refused_before_it_is_built(service: Service, digits_upload: DigitsUpload) -> None:
    started = time.perf_counter()
    model = service.register(digits_upload, "imagenet", architecture="vgg11", num_classes="100000")
    assert model["state"] == "invalid" and "MCU_MAX_MODEL_PARAMETERS" in model["error"]["detail"]
    assert time.perf_counter() - started < 60  # counted on the meta device (in a child process): nothing allocated


def test_deletion_requests_wait_for_a_ready_model(service: Service, digits_upload: DigitsUpload,
                                                  tmp_path: Path) -> None:
    data = digits_upload.model_form(service.dataset_id)
    response = service.client.post("/v1/models", data=data, files={"weights": ("w.safetensors", digits_upload.weights)})
    body = {"model_id": response.json()["id"], "forget": {"classes": [1]}}
    refused = service.client.post("/v1/deletion-requests", json=body)
    assert refused.status_code == 409 and "validating" in refused.json()["detail"]
    validate_model(service.worker, response.json()["id"])
    assert service.client.post("/v1/deletion-requests", json=body).status_code == 202
