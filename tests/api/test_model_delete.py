"""`DELETE /v1/models/{id}` (issue 26): a model that failed validation can be deleted, with its stored
weights; a ready one never (its versions and evidence stay), nor one still being validated. On both backends,
validation run in this process."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import create_api_key
from domain import catalog
from mcu_client import Client, Conflict, NotFound
from models import ModelVersion
from worker.services import Services, connect

from .conftest import BOOTSTRAP_KEY, Service, assert_problem, mlp_weights, upload_dataset, upload_model, validated


@pytest.fixture(scope="module")
def dataset_id(service: Service) -> str:
    response = upload_dataset(service.client, name="delete-tiny")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def services(service: Service) -> Services:
    return connect(service.settings)


def invalid_model(service: Service, dataset_id: str, weights: bytes, headers: dict[str, str] | None = None) -> dict:
    """A model whose weights do not load: 3-class mlp weights registered with 4 classes."""
    model = validated(service, upload_model(service.client, dataset_id, weights, num_classes=4, headers=headers))
    assert model["state"] == "invalid", model
    return model


def weights_key(services: Services, model_id: str) -> str:
    with services.factory() as session:
        key = session.scalar(select(ModelVersion.storage_key).where(ModelVersion.model_id == model_id))
    assert key is not None
    return key


def test_an_invalid_model_is_deleted_with_its_weights(service: Service, dataset_id: str, services: Services) -> None:
    model = invalid_model(service, dataset_id, mlp_weights(seed=101))  # bytes of its own: an object of its own
    key = weights_key(services, model["id"])
    assert services.store.exists(key)
    response = service.client.delete(f"/v1/models/{model['id']}")
    assert response.status_code == 204, response.text
    assert not services.store.exists(key)
    assert_problem(service.client.get(f"/v1/models/{model['id']}"), 404, model["id"])
    assert_problem(service.client.get(f"/v1/models/{model['id']}/versions"), 404)
    assert model["id"] not in [
        m["id"] for m in service.client.get("/v1/models", params={"page_size": 500}).json()["items"]
    ]
    assert_problem(service.client.delete(f"/v1/models/{model['id']}"), 404, model["id"])  # once


def test_weights_another_model_shares_stay(service: Service, dataset_id: str, services: Services) -> None:
    """Objects are content-addressed: the same bytes registered as a ready model keep their one object."""
    weights = mlp_weights(seed=102)
    ready = validated(service, upload_model(service.client, dataset_id, weights))
    assert ready["state"] == "ready", ready
    doomed = invalid_model(service, dataset_id, weights)
    key = weights_key(services, doomed["id"])
    assert key == weights_key(services, ready["id"])
    assert service.client.delete(f"/v1/models/{doomed['id']}").status_code == 204
    assert services.store.exists(key)
    download = service.client.get(f"/v1/models/{ready['id']}/versions/1/weights")
    assert download.status_code == 200 and download.content == weights


def test_weights_registered_again_while_an_invalid_model_is_deleted_stay(
    service: Service, dataset_id: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete has found that no other model names the weights; before it deletes them, a model with the
    same bytes is registered, its upload reusing the object. The delete and the registration's commit take
    the object's lock in turn, so the new model's weights are whole (stored again if the delete came first)."""
    weights = mlp_weights(seed=103)
    doomed = invalid_model(service, dataset_id, weights)
    unreferenced = catalog.unreferenced
    registrations: list[httpx.Response] = []
    threads: list[threading.Thread] = []

    def register_meanwhile(session: Session, keys: list[str]) -> list[str]:
        answer = unreferenced(session, keys)  # read before the registration commits
        register = lambda: registrations.append(upload_model(service.client, dataset_id, weights))  # noqa: E731
        threads.append(thread := threading.Thread(target=register))
        thread.start()
        thread.join(timeout=2)  # it reuses the object, then waits for the object's lock until the delete is done
        return answer

    monkeypatch.setattr(catalog, "unreferenced", register_meanwhile)
    assert service.client.delete(f"/v1/models/{doomed['id']}").status_code == 204
    threads[0].join(timeout=30)
    monkeypatch.undo()
    assert registrations[0].status_code == 201, registrations[0].text
    download = service.client.get(f"/v1/models/{registrations[0].json()['id']}/versions/1/weights")
    assert download.status_code == 200 and download.content == weights


def test_a_ready_model_is_never_deleted(service: Service, registered: dict[str, str]) -> None:
    model_id = registered["model_id"]
    versions = service.client.get(f"/v1/models/{model_id}/versions").json()["items"]
    body = assert_problem(service.client.delete(f"/v1/models/{model_id}"), 409, model_id, "ready", "evidence")
    assert body["type"].endswith("/model-not-deletable")
    assert service.client.get(f"/v1/models/{model_id}").json()["state"] == "ready"
    assert service.client.get(f"/v1/models/{model_id}/versions").json()["items"] == versions
    assert service.client.get(f"/v1/models/{model_id}/versions/1/weights").status_code == 200


def test_a_model_being_validated_is_not_deleted(service: Service, dataset_id: str) -> None:
    response = upload_model(service.client, dataset_id, mlp_weights(seed=103), num_classes=4)
    assert response.status_code == 201 and response.json()["state"] == "validating"  # no worker here
    model_id = response.json()["id"]
    assert_problem(service.client.delete(f"/v1/models/{model_id}"), 409, "validating", "wait for the verdict")
    assert service.client.get(f"/v1/models/{model_id}").status_code == 200


def test_unknown_model_and_missing_scope(service: Service, dataset_id: str) -> None:
    assert_problem(service.client.delete("/v1/models/mdl_nope"), 404, "mdl_nope")
    model = invalid_model(service, dataset_id, mlp_weights(seed=104))
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        _, secret = create_api_key(session, f"delete-reader-{secrets.token_hex(4)}", ["models:read"])
        session.commit()
    with service.with_key(secret) as reader:
        assert_problem(reader.delete(f"/v1/models/{model['id']}"), 403, "models:write")
    assert service.client.get(f"/v1/models/{model['id']}").status_code == 200


def test_the_idempotency_key_of_a_deleted_model_registers_it_again(service: Service, dataset_id: str) -> None:
    headers = {"Idempotency-Key": f"delete-again-{service.name}"}
    first = invalid_model(service, dataset_id, mlp_weights(seed=105), headers)
    assert service.client.delete(f"/v1/models/{first['id']}").status_code == 204
    again = upload_model(service.client, dataset_id, mlp_weights(seed=105), num_classes=4, headers=headers)
    assert again.status_code == 201 and again.json()["id"] != first["id"], again.text  # not a replay of a 404


def test_client_and_cli_delete(service: Service, dataset_id: str, registered: dict[str, str]) -> None:
    gone, kept = (invalid_model(service, dataset_id, mlp_weights(seed=s))["id"] for s in (106, 107))
    with Client(service.url, BOOTSTRAP_KEY) as client:
        client.delete_model(gone)
        with pytest.raises(NotFound):
            client.get_model(gone)
        with pytest.raises(Conflict, match="evidence"):
            client.delete_model(registered["model_id"])

    def mcu(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli", "models", "delete", *args, "--url", service.url]
        return subprocess.run(
            [*command, "--api-key", BOOTSTRAP_KEY], capture_output=True, text=True, timeout=120, check=False
        )

    done = mcu(kept, "--yes")
    assert done.returncode == 0 and f"model {kept} deleted" in done.stdout, done.stderr
    refused = mcu(registered["model_id"], "--yes")
    assert refused.returncode == 1 and "ready" in refused.stderr and "Traceback" not in refused.stderr
    asked = mcu(registered["model_id"])  # no --yes and nothing typed: nothing sent
    assert asked.returncode == 1 and "Aborted" in asked.stdout + asked.stderr
    assert httpx.get(f"{service.url}/v1/models/{registered['model_id']}", headers=service.client.headers).is_success
