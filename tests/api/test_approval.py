"""The approval gate (issue 27 part 3): a request on a model that requires approval waits in `awaiting_approval`,
with nothing sent to the broker, until a key with `requests:approve` other than the submitter's approves it
(→ queued, its job sent) or denies it (→ cancelled with the reason, nothing run). Both decisions are in the
audit trail, on GET and in the signed report.

Requests go through the API with keys of their own; the broker is read directly (Redis, or the embedded
broker's SQLite file); jobs run in this process on the same backend.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from alembic import command
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from api.auth import create_api_key
from cli.client_commands import requests_app
from domain import approval, requests
from domain.lifecycle import State
from domain.tasks import CONTROL_QUEUE, GPU_QUEUE, RUN_REQUEST
from mcu_client import Client
from migrations.runner import alembic_config, upgrade
from models import DeletionRequest, Model
from settings import Settings
from tests.support import QUICK_EVIDENCE, postgres_schema
from worker import jobs
from worker.services import Services, connect

from .conftest import (
    BOOTSTRAP_KEY,
    REDIS_URL,
    Service,
    assert_problem,
    mlp_weights,
    upload_dataset,
    upload_model,
    validated,
)
from .test_meta import browser  # noqa: F401  (the console's fixture: Debian's chromium, headless)

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}


@pytest.fixture(scope="module")
def services(service: Service) -> Services:
    return connect(service.settings)


@pytest.fixture(scope="module")
def keys(service: Service) -> dict[str, httpx.Client]:
    """Clients with keys of their own: a submitter that also holds requests:approve, an approver, and a writer
    without the approval scope."""
    tag = secrets.token_hex(4)
    wanted = {
        "submitter": ["requests:write", "requests:read", "requests:approve"],
        "approver": ["requests:approve", "requests:read"],
        "writer": ["requests:write", "requests:read", "models:write"],
    }
    made = {}
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for role, scopes in wanted.items():
            _, secret = create_api_key(session, f"approval-{tag}-{role}", scopes)
            made[role] = service.with_key(secret)
        session.commit()
    return made


def name_of(client: httpx.Client) -> str:
    return str(client.get("/v1/keys/me").json()["name"])


@pytest.fixture(scope="module")
def gated(service: Service) -> str:
    """A ready model whose deletion requests wait for approval (set at registration)."""
    dataset = upload_dataset(service.client, name="approval")
    assert dataset.status_code == 201, dataset.text
    response = service.client.post(
        "/v1/models",
        data={
            "name": "gated-mlp",
            "architecture": "mlp",
            "num_classes": "3",
            "dataset_id": dataset.json()["id"],
            "preprocessing": "unit",
            "require_approval": "true",
        },
        files={"weights": ("w.safetensors", mlp_weights())},
    )
    model = validated(service, response)
    assert model["state"] == "ready" and model["require_approval"] is True
    return str(model["id"])


def sent(service: Service, request_id: str) -> list[str]:
    """The tasks sent to the broker for this request, on either backend (no worker consumes them here)."""
    headers = []
    if service.name == "postgres":
        broker = redis.Redis.from_url(REDIS_URL)
        for queue in (GPU_QUEUE, CONTROL_QUEUE):
            headers += [json.loads(m)["headers"] for m in broker.lrange(queue, 0, -1)]
        broker.close()
    else:
        path = service.settings.resolved_broker_url.removeprefix("sqla+sqlite:///")
        with sqlite3.connect(path) as connection:
            headers = [json.loads(p)["headers"] for (p,) in connection.execute("SELECT payload FROM kombu_message")]
    return [h["task"] for h in headers if request_id in h["argsrepr"]]


def submit(client: httpx.Client, model_id: str, sample: str, **body: object) -> dict:
    response = client.post(
        "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": [sample]}, "config": FAST} | body
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def decide(client: httpx.Client, request_id: str, decision: str, reason: str) -> httpx.Response:
    return client.post(f"/v1/deletion-requests/{request_id}/approval", json={"decision": decision, "reason": reason})


def events(service: Service, request_id: str) -> list[dict]:
    return list(service.client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"])


def test_meta_serves_the_state_and_its_transitions(service: Service) -> None:
    meta = service.client.get("/v1/meta").json()
    assert meta["states"][:2] == ["awaiting_approval", "queued"]  # in the order of a request's life
    assert meta["transitions"]["awaiting_approval"] == ["queued", "cancelled"]
    assert "awaiting_approval" in meta["open_states"]


def test_a_request_on_a_gated_model_waits_and_nothing_is_sent(
    service: Service, gated: str, keys: dict[str, httpx.Client], services: Services
) -> None:
    request = submit(keys["submitter"], gated, "s1")
    assert request["state"] == "awaiting_approval" and request["approval"] is None
    assert request["progress"]["phase"] == "awaiting_approval"
    first = events(service, request["id"])
    assert [(e["type"], e["state"]) for e in first] == [("state_changed", "awaiting_approval")]
    assert sent(service, request["id"]) == []
    # A stray run task cannot start it: no worker claims a request awaiting approval.
    jobs.run_request(services, request["id"])
    assert keys["submitter"].get(f"/v1/deletion-requests/{request['id']}").json()["state"] == "awaiting_approval"
    assert [e["type"] for e in events(service, request["id"])] == ["state_changed"]
    listed = service.client.get("/v1/deletion-requests", params={"model_id": gated, "state": "awaiting_approval"})
    assert request["id"] in [r["id"] for r in listed.json()["items"]]
    # Its submitter may still withdraw it (cancel), like a queued one.
    cancelled = keys["submitter"].post(f"/v1/deletion-requests/{request['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert RUN_REQUEST not in sent(service, request["id"])


def test_the_submitters_own_key_cannot_decide_even_with_the_scope(
    service: Service, gated: str, keys: dict[str, httpx.Client]
) -> None:
    request = submit(keys["submitter"], gated, "s2")
    for decision in ("approve", "deny"):
        refused = assert_problem(decide(keys["submitter"], request["id"], decision, "my own"), 403, "submitted")
        assert refused["type"].endswith("/own-request")
    # The bootstrap key holds every scope, and is still not a second pair of eyes on its own requests.
    own = submit(service.client, gated, "s3")
    assert_problem(decide(service.client, own["id"], "approve", "mine"), 403, "submitted")
    # A key without requests:approve is refused before anything else.
    assert_problem(decide(keys["writer"], request["id"], "approve", "why not"), 403, "requests:approve")
    for row in (request, own):
        shown = service.client.get(f"/v1/deletion-requests/{row['id']}").json()
        assert shown["state"] == "awaiting_approval" and shown["approval"] is None
        assert sent(service, row["id"]) == []
        service.client.post(f"/v1/deletion-requests/{row['id']}/cancel")


def test_the_decision_needs_a_reason_and_a_request_awaiting_it(
    service: Service, gated: str, keys: dict[str, httpx.Client]
) -> None:
    request = submit(keys["submitter"], gated, "s4")
    path = f"/v1/deletion-requests/{request['id']}/approval"
    for body in (
        {"decision": "approve"},
        {"decision": "approve", "reason": ""},
        {"decision": "approve", "reason": "  \n "},
        {"decision": "approve", "reason": "a\x00b"},
        {"decision": "maybe", "reason": "r"},
        {"decision": "approve", "reason": "r", "by": "someone"},
    ):
        assert_problem(keys["approver"].post(path, json=body), 422)
    assert_problem(decide(keys["approver"], "req_nonexistent", "approve", "r"), 404)
    service.client.post(f"/v1/deletion-requests/{request['id']}/cancel")
    assert_problem(decide(keys["approver"], request["id"], "approve", "too late"), 409, "cancelled")


def test_another_key_approves_the_job_is_sent_and_the_report_carries_the_approval(
    service: Service, gated: str, keys: dict[str, httpx.Client], services: Services
) -> None:
    request = submit(keys["submitter"], gated, "s5", selection="auto")
    approver = Client(http=keys["approver"])
    approved = approver.approve(request["id"], "checked against ticket DPO-17")
    assert approved.state == "queued" and approved.progress.phase == "queued"
    assert approved.approval is not None
    assert (approved.approval.decision, approved.approval.by) == ("approved", name_of(keys["approver"]))
    assert approved.approval.reason == "checked against ticket DPO-17"
    assert sent(service, request["id"]) == [RUN_REQUEST]  # the job goes out once approved
    last = events(service, request["id"])[-1]
    assert (last["type"], last["state"], last["actor"]) == ("state_changed", "queued", name_of(keys["approver"]))
    assert last["detail"] == {"approval": "approved", "reason": "checked against ticket DPO-17"}
    assert_problem(decide(keys["approver"], request["id"], "deny", "again"), 409, "queued")

    jobs.run_request(services, request["id"])
    jobs.materialize_selection(services, request["id"])
    shown = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert shown["state"] == "succeeded", shown
    document = service.client.get(f"/v1/deletion-requests/{request['id']}/report").json()
    section = document["report"]["request"]
    assert section["approval"] == shown["approval"] | {"at": section["approval"]["at"]}
    assert section["approval"]["by"] == name_of(keys["approver"]) != section["created_by"]
    assert Client(http=service.client).verify_report(document).ok
    assert (
        "checked against ticket DPO-17"
        in service.client.get(f"/v1/deletion-requests/{request['id']}/report", params={"format": "html"}).text
    )


def test_deny_cancels_with_the_reason_and_leaves_nothing_behind(
    service: Service, gated: str, keys: dict[str, httpx.Client], services: Services
) -> None:
    request = submit(keys["submitter"], gated, "s6")
    version = service.client.get(f"/v1/models/{gated}").json()["current_version"]
    result = CliRunner().invoke(
        requests_app,
        ["deny", request["id"], "--reason", "no legal basis: the subject withdrew", "--json"],
        env={"MCU_URL": service.url, "MCU_API_KEY": secret(keys["approver"])},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "cancelled"
    shown = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert shown["state"] == "cancelled" and shown["finished_at"] is not None
    assert shown["approval"]["decision"] == "denied" and shown["approval"]["by"] == name_of(keys["approver"])
    assert shown["approval"]["reason"] == "no legal basis: the subject withdrew"
    last = events(service, request["id"])[-1]
    assert (last["state"], last["actor"]) == ("cancelled", name_of(keys["approver"]))
    assert last["detail"] == {"approval": "denied", "reason": "no legal basis: the subject withdrew"}
    # Nothing ran and nothing will: no run task, no job, no curve, no version.
    assert RUN_REQUEST not in sent(service, request["id"])
    jobs.run_request(services, request["id"])
    after = service.client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert after["state"] == "cancelled" and after["started_at"] is None and after["curve"] is None
    assert "claimed" not in [e["type"] for e in events(service, request["id"])]
    assert service.client.get(f"/v1/models/{gated}").json()["current_version"] == version
    assert_problem(decide(keys["approver"], request["id"], "approve", "changed my mind"), 409, "cancelled")


def test_coalescing_never_pulls_a_request_awaiting_approval_into_a_job(
    service: Service, gated: str, keys: dict[str, httpx.Client]
) -> None:
    leader = submit(keys["submitter"], gated, "s7")
    assert decide(keys["approver"], leader["id"], "approve", "fine").json()["state"] == "queued"  # a queued job
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        joining = requests.create(
            session,
            model_id=gated,
            selector=("sample_ids", ["s8"]),
            base_method=leader["base_method"],
            config=leader["config"],
            erasure_criterion=leader["erasure_criterion"],
            selection_mode=leader["selection_mode"],
            external_id=None,
            callback_url=None,
            received_at=requests.received_when(None),
            response_days=30,
            actor="coalescing-test",
            coalescing=True,
        )
        session.commit()
    shown = service.client.get(f"/v1/deletion-requests/{joining}").json()
    assert shown["state"] == "awaiting_approval" and shown["job_id"] is None
    assert "member_joined" not in [e["type"] for e in events(service, leader["id"])]
    for request_id in (leader["id"], joining):
        service.client.post(f"/v1/deletion-requests/{request_id}/cancel")


def test_the_model_flag_is_changed_by_an_approver_only(
    service: Service, keys: dict[str, httpx.Client], registered: dict[str, str]
) -> None:
    model_id = registered["model_id"]
    path = f"/v1/models/{model_id}"
    assert service.client.get(path).json()["require_approval"] is False
    assert_problem(keys["writer"].patch(path, json={"require_approval": False}), 403, "requests:approve")
    for body in ({"require_approval": "yes"}, {"require_approval": 1}, {}, {"name": "x"}):
        assert_problem(service.client.patch(path, json=body), 422)
    assert_problem(service.client.patch("/v1/models/mdl_nonexistent", json={"require_approval": True}), 404)
    try:
        updated = Client(http=keys["approver"]).update_model(model_id, require_approval=True)
        assert updated.require_approval is True
        request = submit(keys["writer"], model_id, "s9")
        assert request["state"] == "awaiting_approval"
        service.client.post(f"/v1/deletion-requests/{request['id']}/cancel")
    finally:
        assert service.client.patch(path, json={"require_approval": False}).json()["require_approval"] is False
    request = submit(keys["writer"], model_id, "s10")
    assert request["state"] == "queued" and request["approval"] is None
    service.client.post(f"/v1/deletion-requests/{request['id']}/cancel")


def test_the_deployment_wide_setting_gates_every_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MCU_REQUIRE_APPROVAL: a model that requires nothing itself, and a subject-wide erasure, wait too."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from worker.validation import validate_model

    monkeypatch.setenv("MCU_REQUIRE_APPROVAL", "true")
    settings = Settings(data_dir=tmp_path, bootstrap_api_key=BOOTSTRAP_KEY)
    assert settings.require_approval is True
    app = create_app(settings)
    client = TestClient(app, headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(connect(settings), model_id)
    assert client.get(f"/v1/models/{model_id}").json()["require_approval"] is False
    request = client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": ["s1"]}})
    assert request.status_code == 202 and request.json()["state"] == "awaiting_approval"
    erasure = client.post("/v1/erasures", json={"subject_ids": ["subject3"]})
    assert erasure.status_code == 202, erasure.text
    with app.state.session_factory() as session:
        filed = session.query(DeletionRequest).filter(DeletionRequest.id != request.json()["id"]).all()
        assert filed and {row.state for row in filed} == {State.AWAITING_APPROVAL}
        assert session.get(Model, model_id) is not None and approval.required(session, model_id)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite'}"
    else:
        with postgres_schema("mcu_migrate") as url:
            yield url


def test_migration_0013_adds_the_columns_on_both_backends(fresh_database: str) -> None:
    url = fresh_database
    upgrade(url, "0012")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO datasets (id,name,num_train,num_test,num_classes,input_shape,input_dtype,shards,"
                "manifest_sha256,created_at) VALUES ('ds_1','d',1,1,2,'[1]','uint8','[]','x','2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO models (id,name,architecture,architecture_kwargs,num_classes,dataset_id,preprocessing,"
                "current_version,state,warnings,created_at) "
                "VALUES ('mdl_1','m','mlp','{}',2,'ds_1','{}',1,'ready','[]','2026-01-01 00:00:00')"
            )
        )
        connection.execute(  # a request on the model: its foreign key must survive the migration
            text(
                "INSERT INTO deletion_requests (id,model_id,model_version,state,base_method,config,selection_mode,"
                "forget,forget_positions,forget_count,forget_fingerprint,progress,cancel_requested,created_at,"
                "received_at,due_at,erasure_criterion) VALUES ('req_1','mdl_1',1,'queued','rl','{}','manual','{}',"
                "'[0]',1,'f','{}',false,'2026-01-01 00:00:00','2026-01-01 00:00:00','2026-01-31 00:00:00','{}')"
            )
        )
    upgrade(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT require_approval FROM models")).scalar_one() in (False, 0)
        assert connection.execute(text("SELECT approval FROM deletion_requests")).scalar_one() is None
    columns = {c["name"]: c for c in inspect(engine).get_columns("deletion_requests")}
    assert columns["approval"]["nullable"]
    command.downgrade(alembic_config(url), "0012")
    engine.dispose()
    engine = create_engine(url)
    assert "require_approval" not in {c["name"] for c in inspect(engine).get_columns("models")}
    assert "approval" not in {c["name"] for c in inspect(engine).get_columns("deletion_requests")}
    with engine.connect() as connection:  # the rows stay
        assert connection.execute(text("SELECT model_id FROM deletion_requests")).scalar_one() == "mdl_1"
    engine.dispose()


def test_the_console_offers_approve_and_deny_to_a_key_with_the_scope(
    service: Service,
    gated: str,
    keys: dict[str, httpx.Client],
    browser: object,  # noqa: F811  (the fixture imported above)
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver: Any = browser
    wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    request = submit(keys["submitter"], gated, "s11")

    def open_as(role: str) -> None:
        driver.get(f"{service.url}/console#/requests/{request['id']}")
        driver.execute_script("sessionStorage.clear()")
        driver.refresh()
        wait.until(lambda d: d.find_elements(By.ID, "api-key"))[0].send_keys(secret(keys[role]))
        driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state]"))

    def decide_in_dialog(button: str, reason: str) -> None:
        wait.until(lambda d: d.find_element(By.ID, button).click() or True)
        wait.until(lambda d: d.find_element(By.ID, "approval-reason")).send_keys(reason)
        driver.find_element(By.ID, "confirm-yes").click()

    open_as("writer")  # no requests:approve: no buttons
    assert wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=awaiting_approval]"))
    assert not driver.find_elements(By.ID, "approve") and not driver.find_elements(By.ID, "deny")
    open_as("submitter")  # the scope, but its own request: the dialog shows the API's refusal
    decide_in_dialog("approve", "my own")
    assert "submitted" in wait.until(lambda d: d.find_element(By.ID, "confirm-error").text)
    open_as("approver")
    decide_in_dialog("approve", "checked in the console")
    assert wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=queued]"))
    assert "checked in the console" in wait.until(lambda d: d.find_element(By.ID, "approval").text)
    service.client.post(f"/v1/deletion-requests/{request['id']}/cancel")


def secret(client: httpx.Client) -> str:
    return str(client.headers["Authorization"]).split()[1]
