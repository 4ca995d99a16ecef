"""In-process service for the worker tests: the real API app (TestClient) and the functions the Celery tasks
call, on the embedded default (or the settings given)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from cli.digits import DigitsUpload
from settings import Settings
from worker.services import Services, connect
from worker.validation import validate_model


def digits_service(settings: Settings, upload: DigitsUpload) -> tuple[TestClient, Services, str]:
    """(API client with the bootstrap key "k", worker services, id of a validated digits cnn-small)."""
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    dataset = client.post("/v1/datasets", data={"name": "digits"}, files=upload.files())
    model = client.post(
        "/v1/models", data=upload.model_form(dataset.json()["id"]), files={"weights": ("w.safetensors", upload.weights)}
    )
    validate_model(services, model.json()["id"])
    return client, services, model.json()["id"]
