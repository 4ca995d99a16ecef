"""What the reconciler makes good when the broker lost a task: forget-derived artifacts of a request
cancelled during a broker outage are deleted all the same."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from cli.digits import DigitsUpload
from settings import Settings
from worker import jobs
from worker.reconciler import reconcile
from worker.services import connect
from worker.validation import validate_model

from .conftest import digits_service

DOWN = "redis://127.0.0.1:1/0"  # nothing listens there: every send fails, as in a broker outage


def test_artifacts_of_a_request_cancelled_during_a_broker_outage_are_deleted(
    tmp_path: Path, digits_upload: DigitsUpload
) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k", broker_url=DOWN, requeue_after_seconds=1)
    client, services, model_id = digits_service(settings, digits_upload)
    request_id = client.post(
        "/v1/deletion-requests",
        json={
            "model_id": model_id,
            "forget": {"classes": [2]},
            "config": {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}},
        },
    ).json()["id"]
    jobs.run_request(services, request_id)  # the job ran before the outage: θ_p, θ_c, checkpoint are stored
    artifacts = tmp_path / "objects" / "requests" / request_id
    assert len(list(artifacts.iterdir())) == 3

    cancelled = client.post(f"/v1/deletion-requests/{request_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert len(list(artifacts.iterdir())) == 3  # the clean-up task could not be sent

    time.sleep(1.1)  # the reconciler leaves a just-finished request to its clean-up task for a while
    found = reconcile(services)
    assert request_id in found["artifacts_deleted"]
    assert not artifacts.exists() or not list(artifacts.iterdir())
    events = client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
    assert [e["detail"]["objects"] for e in events if e["type"] == "artifacts_deleted"] == [3]
    assert request_id not in reconcile(services)["artifacts_deleted"]  # done once, not again


def test_a_callback_owed_during_a_broker_outage_is_sent_and_delivered_once(tmp_path: Path) -> None:
    """The callback is written to the outbox with the state change; the reconciler sends it once the broker is
    back, and the delivery is recorded so that no later round sends it again."""
    from datetime import timedelta
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from models import Callback, utcnow
    from worker.callbacks import deliver
    from worker.reconciler import resend_callbacks

    from ..api.conftest import upload_dataset, upload_model

    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.headers["webhook-id"])
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    Thread(target=server.serve_forever, daemon=True).start()
    outage = Settings(data_dir=tmp_path, bootstrap_api_key="k", broker_url=DOWN, callback_allowed_hosts=["127.0.0.1:*"])
    client = TestClient(create_app(outage), headers={"Authorization": "Bearer k"})
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(connect(outage), model_id)
    request_id = client.post(
        "/v1/deletion-requests",
        json={
            "model_id": model_id,
            "forget": {"sample_ids": ["s1"]},
            "callback_url": f"http://127.0.0.1:{server.server_address[1]}/hook",
        },
    ).json()["id"]
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel").json()["state"] == "cancelled"

    later = utcnow() + timedelta(seconds=1)  # as if the reconciler's wait had passed
    assert resend_callbacks(connect(outage), later) == []  # still down: nothing sent, still owed
    back = connect(outage.model_copy(update={"broker_url": None}))  # the broker is back
    (message_id,) = resend_callbacks(back, later)
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (True, 1)
    assert deliver(back.settings, back.factory, request_id, "cancelled", message_id) == (True, 1)  # a duplicate task
    assert received == [message_id]  # delivered once
    with back.factory() as session:
        owed = session.get(Callback, message_id)
        assert owed.delivered_at is not None and owed.attempts == 1 and owed.event == "cancelled"
    assert resend_callbacks(back, utcnow() + timedelta(hours=1)) == []
    server.shutdown()


def test_a_model_waiting_for_validation_is_resent_once_a_period_not_every_round(tmp_path: Path) -> None:
    """A model queued behind a long job used to get a copy of its task every round (2,420 in 90 minutes)."""
    from datetime import timedelta

    from models import utcnow
    from worker.reconciler import resend_validations

    from ..api.conftest import upload_dataset, upload_model

    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k", requeue_after_seconds=2, reconcile_interval_seconds=1)
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    services = connect(settings)
    sent: list[str] = []
    for _ in range(8):  # rounds a second apart, the model 0 to 8 s old: due at 2, 4, 6 and 8 s
        sent += resend_validations(services, utcnow() - timedelta(seconds=settings.requeue_after_seconds))
        time.sleep(settings.reconcile_interval_seconds)
    assert 2 <= sent.count(model_id) <= 4
