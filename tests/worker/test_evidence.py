"""Compliance evidence on real jobs: the erasure guard, the signed report, the audit chain, deadlines.

Digits and a trained cnn-small on the embedded default; the jobs run in-process (the functions the Celery
tasks call) and every call goes through the real API app.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from cli.digits import DigitsUpload
from domain.signing import SigningKeys, verify
from models import DeletionRequest, Event, record_event
from models.audit import verify_chains
from settings import Settings
from worker import jobs
from worker.artifacts import delete_artifacts
from worker.callbacks import OVERDUE, event_body
from worker.reconciler import notify_overdue
from worker.services import Services

from ..api.conftest import serve
from .conftest import digits_service

FORGET_CLASS = 3
# A curve that forgets the class: rl moves the labels away, and the curve keeps that.
FORGETS = {"epochs": 2, "grid_points": 5, "base": {"epochs": 2}}
# A curve that never forgets: θ_p is θ_o after one step of a vanishing learning rate, and the control point
# barely moves, so every point is θ_o.
NEVER_FORGETS = {"epochs": 1, "lr": 1e-9, "grid_points": 3, "base": {"epochs": 1, "lr": 1e-9}}


@dataclass
class Env:
    client: TestClient
    services: Services
    model_id: str
    settings: Settings

    def submit(self, config: dict, forget_class: int = FORGET_CLASS, **body: object) -> str:
        """A class-wise request, run up to its curve. Tests that publish use classes of their own: a class
        erased once answers 409 `already-erased` afterwards."""
        response = self.client.post(
            "/v1/deletion-requests",
            json={
                "model_id": self.model_id,
                "forget": {"classes": [forget_class]},
                "base_method": "ft" if config is NEVER_FORGETS else "rl",
                "config": config,
                **body,
            },
        )
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        jobs.run_request(self.services, request_id)
        return request_id

    def get(self, request_id: str) -> dict:
        return self.client.get(f"/v1/deletion-requests/{request_id}").json()

    def seal_key(self) -> Ed25519PublicKey:
        return SigningKeys(self.services.factory, self.settings).verifying_key()

    def events(self, request_id: str) -> list[dict]:
        return self.client.get(f"/v1/deletion-requests/{request_id}/events", params={"page_size": 500}).json()["items"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, digits_upload: DigitsUpload) -> Iterator[Env]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("evidence"), bootstrap_api_key="k")
    client, services, model_id = digits_service(settings, digits_upload)
    yield Env(client, services, model_id, settings)


def test_auto_selection_withholds_a_curve_that_never_forgets(env: Env) -> None:
    request_id = env.submit(NEVER_FORGETS, selection="auto")
    request = env.get(request_id)
    assert request["state"] == "awaiting_selection" and request["selection"] is None
    withheld = [e for e in env.events(request_id) if e["type"] == "erasure_criterion_not_met"]
    assert len(withheld) == 1 and "forget accuracy" in withheld[0]["detail"]["reasons"][0]
    assert all(p["forget_accuracy"] > 0.9 for p in request["curve"]["points"])  # it really never forgot


def test_a_failing_point_needs_an_acknowledgement_and_the_report_says_so(env: Env) -> None:
    request_id = env.submit(NEVER_FORGETS, forget_class=5)
    refused = env.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 1.0})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/erasure-criterion-not-met")
    assert "erasure criterion not met: forget accuracy" in refused.json()["detail"]
    (needed,) = refused.json()["errors"]
    assert needed["loc"] == ["acknowledge"] and needed["acknowledge"].startswith("erasure criterion not met: ")
    # The CLI says it with its own flag, not the API's field.
    server, _, url = serve(env.client.app)
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "requests", "select", request_id, "--t", "1", "--url", url, "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    server.should_exit = True
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert f"mcu requests select {request_id} --t 1.00 --acknowledge 'erasure criterion not met: " in cli.stderr
    assert env.get(request_id)["state"] == "awaiting_selection"

    acknowledgement = "erasure criterion not met: accepted by the DPO, ticket 42"
    accepted = env.client.post(
        f"/v1/deletion-requests/{request_id}/selection", json={"t": 1.0, "acknowledge": acknowledgement}
    )
    assert accepted.status_code == 202 and accepted.json()["selection"]["acknowledgement"] == acknowledgement
    jobs.materialize_selection(env.services, request_id)
    assert env.get(request_id)["state"] == "succeeded"
    criterion = env.client.get(f"/v1/deletion-requests/{request_id}/report").json()["report"]["erasure_criterion"]
    assert criterion["met"] is False and criterion["acknowledgement"] == acknowledgement
    page = env.client.get(f"/v1/deletion-requests/{request_id}/report", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html") and "ERASURE CRITERION NOT MET" in page.text


def test_a_forgetting_request_succeeds_with_a_signed_report_that_detects_any_change(
    env: Env, digits_upload: DigitsUpload
) -> None:
    request_id = env.submit(FORGETS, selection="auto", external_id="ticket-7")
    assert env.get(request_id)["state"] == "materializing"
    jobs.materialize_selection(env.services, request_id)
    request = env.get(request_id)
    assert request["state"] == "succeeded"
    delete_artifacts(env.services, request_id)  # what the clean-up task does (no worker consumes it here)

    response = env.client.get(f"/v1/deletion-requests/{request_id}/report")
    assert response.status_code == 200
    document = response.json()
    report = document["report"]
    assert report["erasure_criterion"]["met"] is True and report["erasure_criterion"]["acknowledgement"] is None
    assert report["request"]["external_id"] == "ticket-7" and report["request"]["answered_in_time"] is True
    current = env.client.get(f"/v1/models/{env.model_id}").json()["current_version"]
    assert (report["model"]["before"]["version"], report["model"]["after"]["version"]) == (current - 1, current)
    assert report["model"]["after"]["sha256"] == env.client.get(
        f"/v1/models/{env.model_id}/versions/{current}/weights"
    ).headers["etag"].strip('"')
    assert report["metrics"]["published"]["forget_accuracy"] <= 0.05
    assert report["metrics"]["original"]["forget_accuracy"] > 0.9
    # Grid points on a 1,000-row retain sample, the recommended point and the published version on every row;
    # each metric with its binomial standard error over those rows.
    curve = env.client.get(f"/v1/deletion-requests/{request_id}/curve").json()
    every = report["metrics"]["rows"]["published"]
    assert every["retain"] > 1000 and every["forget"] == report["forget_set"]["job_rows"]
    assert curve["recommended_point"]["rows"] == every == request["curve"]["recommended_point"]["rows"]
    assert all(p["rows"] == every | {"retain": 1000} for p in curve["points"])
    assert report["metrics"]["rows"]["original"] == every | {"retain": 1000}
    published, errors = report["metrics"]["published"], report["metrics"]["std_errors"]["published"]
    assert errors["retain_accuracy"] == pytest.approx(
        math.sqrt(published["retain_accuracy"] * (1 - published["retain_accuracy"]) / every["retain"])
    )
    point = curve["points"][0]
    assert point["std_errors"]["test_accuracy"] == pytest.approx(
        math.sqrt(point["test_accuracy"] * (1 - point["test_accuracy"]) / every["test"])
    )
    page = env.client.get(f"/v1/deletion-requests/{request_id}/report", params={"format": "html"}).text
    assert "rows measured" in page and f"± {errors['retain_accuracy']:.4f}" in page
    # A whole class is enough rows to decide: the original model fails the criterion.
    assert report["erasure_criterion"]["power"]["decidable"] is True
    # A class request's test accuracy leaves the forgotten class out, and the report says so.
    assert report["metrics"]["test_accuracy_on"] == "retained classes" and "test accuracy (retained classes)" in page
    assert report["forget_set"]["rows"] == digits_upload.train_labels.count(FORGET_CLASS)
    assert report["audit"]["head_hash"] == env.events(request_id)[-1]["hash"]
    assert report["method"]["batchnorm_statistics"]
    assert report["artifacts_deleted"]["artifacts"] == ["theta_p", "theta_c", "checkpoint"]
    # No sample id of the forget set appears anywhere in the report (d<row>: the digits' ids).
    forgotten = {f"d{row}" for row, label in enumerate(digits_upload.train_labels) if label == FORGET_CLASS}
    assert not forgotten & set(json.dumps(report).replace('"', " ").split())

    keys = env.client.get("/v1/signing-key").json()  # public: no key needed
    assert env.client.get("/v1/signing-key", headers={"Authorization": ""}).status_code == 200
    trusted = {k["key_id"]: k["public_key"] for k in keys["keys"]}
    assert verify(document, trusted).ok
    tampered = copy.deepcopy(document)
    tampered["report"]["metrics"]["published"]["forget_accuracy"] = (
        0.0 if report["metrics"]["published"]["forget_accuracy"] else 0.01
    )
    assert not verify(tampered, trusted).ok
    forged = copy.deepcopy(document)
    forged["signature"]["value"] = base64.b64encode(bytes(64)).decode()
    assert not verify(forged, trusted).ok
    # The auditor's attacks ran on the published version, θ_p and the original, and are signed with the rest.
    evidence = report["evidence"]
    assert set(evidence) == {"relearning", "feature_probe"}  # per-sample membership is off by default
    for run in ("retain_only", "k_shot"):  # class-wise: k-shot too
        assert set(evidence["relearning"][run]) == {"published", "base", "original"}
    relearned = evidence["relearning"]["retain_only"]["published"]["forget_accuracy"]
    assert relearned[0] == pytest.approx(published["forget_accuracy"], abs=0.02)  # a sample of the same rows
    assert "Evidence against attacks" in page and "k shot" in page
    altered = copy.deepcopy(document)
    altered["report"]["evidence"]["relearning"]["retain_only"]["published"]["forget_accuracy"][-1] += 0.5
    assert not verify(altered, trusted).ok

    # A rotation: new reports are signed by the new key, the old report still verifies with the published keys.
    old_key = document["signature"]["key_id"]
    new_key = SigningKeys(env.services.factory, env.settings).rotate().key_id
    keys = env.client.get("/v1/signing-key").json()
    assert keys["current"]["key_id"] == new_key != old_key
    assert [k["retired_at"] is not None for k in keys["keys"] if k["key_id"] == old_key] == [True]
    trusted = {k["key_id"]: k["public_key"] for k in keys["keys"]}
    assert verify(document, trusted).ok
    assert env.client.get(f"/v1/deletion-requests/{request_id}/report").json()["signature"]["key_id"] == new_key


def test_a_forget_set_too_small_to_decide_is_named_in_the_audit_trail(env: Env, digits_upload: DigitsUpload) -> None:
    """Five random rows: the original model itself passes the criterion, so "met" would show nothing; the trail
    says so when the curve is measured (its detail is what the console and `mcu requests events` show)."""
    rows = [row for row, label in enumerate(digits_upload.train_labels) if label not in (FORGET_CLASS, 5)][:5]
    response = env.client.post(
        "/v1/deletion-requests",
        json={"model_id": env.model_id, "forget": {"sample_ids": [f"d{row}" for row in rows]}, "config": FORGETS},
    )
    assert response.status_code == 202, response.text
    jobs.run_request(env.services, response.json()["id"])
    (said,) = [e for e in env.events(response.json()["id"]) if e["type"] == "erasure_criterion_undecidable"]
    assert said["detail"]["detail"].startswith("undecidable at 5 forget rows")
    assert said["detail"]["checks"]["forget_accuracy"]["decidable"] is False


def test_under_the_withhold_policy_an_undecidable_criterion_is_not_met(env: Env, digits_upload: DigitsUpload) -> None:
    rows = [row for row, label in enumerate(digits_upload.train_labels) if label not in (FORGET_CLASS, 5)][5:10]
    config = FORGETS | {"erasure": {"undecidable": "withhold"}}
    response = env.client.post(
        "/v1/deletion-requests",
        json={
            "model_id": env.model_id,
            "forget": {"sample_ids": [f"d{r}" for r in rows]},
            "config": config,
            "selection": "auto",
        },
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    jobs.run_request(env.services, request_id)
    assert env.get(request_id)["state"] == "awaiting_selection"  # auto selection withheld
    (withheld,) = [e for e in env.events(request_id) if e["type"] == "erasure_criterion_not_met"]
    assert any(reason.startswith("undecidable at 5 forget rows") for reason in withheld["detail"]["reasons"])
    refused = env.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 1.0})
    assert refused.status_code == 409 and "the undecidable policy is withhold" in refused.json()["detail"]


def test_a_required_relearning_check_withholds_a_point_that_relearns(env: Env) -> None:
    """Population checks that cannot fail (tolerance 1) and a point that never forgot: only the relearning
    check, measured when the point is materialised, stands between it and publication."""
    config = NEVER_FORGETS | {
        "erasure": {
            "forget_tolerance": 1.0,
            "mia_tolerance": 1.0,
            "require_relearning": True,
            "relearn_tolerance": 0.0,
        },
        "evidence": {"relearn_steps": 8, "relearn_retain_rows": 200, "eval_rows": 100},
    }
    request_id = env.submit(config, forget_class=6)
    assert env.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 1.0}).status_code == 202
    jobs.materialize_selection(env.services, request_id)
    assert env.get(request_id)["state"] == "awaiting_selection"
    (withheld,) = [e for e in env.events(request_id) if e["type"] == "erasure_criterion_not_met"]
    assert "forget accuracy after relearning" in withheld["detail"]["reasons"][0]
    # A required check needs its measurement.
    refused = env.client.post(
        "/v1/deletion-requests",
        json={
            "model_id": env.model_id,
            "forget": {"classes": [7]},
            "config": {"erasure": {"require_membership": True}},
        },
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["config", "evidence", "shadow_models"]


def test_the_report_waits_for_success(env: Env) -> None:
    response = env.client.post("/v1/deletion-requests", json={"model_id": env.model_id, "forget": {"classes": [0]}})
    report = env.client.get(f"/v1/deletion-requests/{response.json()['id']}/report")
    assert report.status_code == 409 and report.json()["type"].endswith("/report-not-ready")


def test_the_audit_chain_names_an_edited_or_deleted_event(env: Env) -> None:
    request_id = env.submit(NEVER_FORGETS, forget_class=7)
    with env.services.factory() as session:
        assert verify_chains(session, env.seal_key(), request_id).broken == []
        ids = session.scalars(select(Event.id).where(Event.request_id == request_id).order_by(Event.id)).all()
    assert len(ids) >= 4
    with env.services.factory() as session, session.begin():  # an insider rewrites who did it
        session.execute(text("UPDATE events SET actor = 'someone-else' WHERE id = :id"), {"id": ids[1]})
    with env.services.factory() as session:
        check = verify_chains(session, env.seal_key(), request_id)
    assert [(b.event_id, "edited" in b.reason) for b in check.broken] == [(ids[1], True)]

    other = env.submit(NEVER_FORGETS, forget_class=7)
    with env.services.factory() as session, session.begin():
        middle = session.scalars(select(Event.id).where(Event.request_id == other).order_by(Event.id)).all()
        session.execute(text("DELETE FROM events WHERE id = :id"), {"id": middle[1]})
    with env.services.factory() as session:
        check = verify_chains(session, env.seal_key())
    assert {(b.request_id, b.event_id) for b in check.broken} == {(request_id, ids[1]), (other, middle[2])}


def test_deadlines_extension_and_overdue_notice(env: Env) -> None:
    on_time = env.client.post(
        "/v1/deletion-requests", json={"model_id": env.model_id, "forget": {"classes": [1]}}
    ).json()
    received = (datetime.now(UTC) - timedelta(days=40)).replace(microsecond=0)
    late = env.client.post(
        "/v1/deletion-requests",
        json={"model_id": env.model_id, "forget": {"classes": [2]}, "received_at": received.isoformat()},
    ).json()
    assert datetime.fromisoformat(late["received_at"]) == received
    assert datetime.fromisoformat(late["due_at"]) == received + timedelta(days=30)
    assert late["overdue"] is True and on_time["overdue"] is False
    listed = env.client.get("/v1/deletion-requests", params={"overdue": "true", "page_size": 500}).json()["items"]
    assert late["id"] in {r["id"] for r in listed} and on_time["id"] not in {r["id"] for r in listed}
    metrics = env.client.get("/metrics").text
    assert any(
        line.startswith("mcu_deletion_requests_overdue ") and float(line.split()[1]) >= 1
        for line in metrics.splitlines()
    )

    assert notify_overdue(env.services).count(late["id"]) == 1
    assert late["id"] not in notify_overdue(env.services)  # once only
    assert [e["type"] for e in env.events(late["id"])].count("overdue") == 1
    with env.services.factory() as session:
        body = json.loads(
            event_body(env.settings, session.get(DeletionRequest, late["id"]), OVERDUE, "msg_1", datetime.now(UTC))
        )
    assert body["type"] == "deletion_request.overdue" and body["data"]["state"] == "queued"
    assert datetime.fromisoformat(body["data"]["due_at"]) == received + timedelta(days=30)

    extended = env.client.post(
        f"/v1/deletion-requests/{late['id']}/extension",
        json={"days": 60, "reason": "complex request: many images across backups"},
    )
    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["due_at"]) == received + timedelta(days=90)
    assert extended.json()["due_extension"]["reason"].startswith("complex request")
    again = env.client.post(f"/v1/deletion-requests/{late['id']}/extension", json={"days": 1, "reason": "more"})
    assert again.status_code == 409 and again.json()["type"].endswith("/already-extended")
    too_long = env.client.post(f"/v1/deletion-requests/{on_time['id']}/extension", json={"days": 61, "reason": "x"})
    assert too_long.status_code == 422
    future = env.client.post(
        "/v1/deletion-requests",
        json={"model_id": env.model_id, "forget": {"classes": [4]}, "received_at": "2999-01-01T00:00:00Z"},
    )
    assert future.status_code == 422 and "future" in future.json()["detail"]


def test_migration_chains_and_dates_requests_made_before_it(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from migrations.runner import upgrade
    from models import make_session_factory

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO datasets VALUES ('ds_1','d',NULL,1,1,2,'[1]','uint8','[]','x','2026-01-01 00:00:00')")
        )
        connection.execute(
            text(
                "INSERT INTO models (id,name,architecture,architecture_kwargs,num_classes,dataset_id,preprocessing,"
                "current_version,state,warnings,created_at) "
                "VALUES ('mdl_1','m','mlp','{}',2,'ds_1','{}',1,'ready','[]','2026-01-01 00:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO deletion_requests (id,model_id,model_version,state,base_method,config,selection_mode,"
                "forget,forget_positions,forget_count,forget_fingerprint,progress,cancel_requested,created_at) VALUES "
                "('req_1','mdl_1',1,'queued','rl','{}','manual','{}','[0]',1,'f','{}',0,'2026-01-01 00:00:00')"
            )
        )
        for state in ("queued", "cancelled"):
            connection.execute(
                text(
                    "INSERT INTO events (request_id,at,type,state,actor,detail) VALUES "
                    "('req_1','2026-01-01 00:00:01','state_changed',:s,'k','{}')"
                ),
                {"s": state},
            )
    upgrade(url)
    factory = make_session_factory(create_engine(url))
    keys = SigningKeys(factory, Settings(data_dir=tmp_path, database_url=url))
    keys.current()  # the first key seals the chains from before 0008 whose links verify
    with factory() as session:
        check = verify_chains(session, keys.verifying_key())
        row = session.execute(text("SELECT due_at FROM deletion_requests WHERE id = 'req_1'")).scalar_one()
    assert (check.events, check.chains, check.broken) == (2, 1, [])
    assert str(row).startswith("2026-01-31")


def test_a_chain_from_before_the_seal_is_unsealed_until_a_key_seals_it_and_a_broken_one_never_is(
    tmp_path: Path,
) -> None:
    from sqlalchemy import create_engine

    from migrations.runner import upgrade
    from models import make_session_factory

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0007")
    factory = make_session_factory(create_engine(url))
    keys = SigningKeys(factory, Settings(data_dir=tmp_path, database_url=url))
    with factory() as session, session.begin():  # two requests made before 0008
        session.execute(
            text(
                "INSERT INTO datasets VALUES ('ds_1','d',NULL,1,1,2,'[1]','uint8','[]','x','2026-01-01 00:00:00',NULL)"
            )
        )
        session.execute(
            text(
                "INSERT INTO models (id,name,architecture,architecture_kwargs,num_classes,dataset_id,preprocessing,"
                "current_version,state,warnings,created_at) "
                "VALUES ('mdl_1','m','mlp','{}',2,'ds_1','{}',1,'ready','[]','2026-01-01 00:00:00')"
            )
        )
        for request_id in ("req_ok", "req_cut"):
            session.execute(
                text(
                    "INSERT INTO deletion_requests (id,model_id,model_version,state,base_method,config,selection_mode,"
                    "forget,forget_positions,forget_count,forget_fingerprint,progress,cancel_requested,created_at,"
                    "received_at,due_at,erasure_criterion) "
                    "VALUES (:id,'mdl_1',1,'queued','rl','{}','manual','{}','[0]',1,"
                    "'f','{}',0,'2026-01-01 00:00:00','2026-01-01 00:00:00','2026-01-31 00:00:00','{}')"
                ),
                {"id": request_id},
            )
    upgrade(url)
    key = keys.current().private_key.public_key()  # the first key: the chains, still empty, stay unsealed
    with factory() as session, session.begin():
        for request_id in ("req_ok", "req_cut"):
            for state in ("queued", "cancelled"):  # extending an unsealed chain does not seal it
                record_event(session, request_id, "state_changed", state, "k")
        session.execute(text("UPDATE events SET actor = 'x' WHERE request_id = 'req_cut'"))
    with factory() as session:
        check = verify_chains(session, key)
    reasons = {b.request_id: b.reason for b in check.broken}
    assert "not sealed" in reasons["req_ok"] and "edited" in reasons["req_cut"]

    rotation = keys.rotate()
    assert rotation.chains.first_sealed == ["req_ok"] and [b.request_id for b in rotation.chains.broken] == ["req_cut"]
    with factory() as session:
        check = verify_chains(session, keys.verifying_key())
    assert [b.request_id for b in check.broken] == ["req_cut"]
