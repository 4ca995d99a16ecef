"""The auditor's attacks on a curve point an operator asks about before choosing it (POST/GET
/v1/deletion-requests/{id}/attacks): filed once, run by the worker function the Celery task calls, refused
where they cannot run, and re-sent when their task or worker is lost.

Digits and a trained cnn-small on the embedded default; every call goes through the real API app.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from cli.digits import DigitsUpload
from domain.point_attacks import MAX_POINTS_PER_REQUEST
from models import PointAttack, utcnow
from settings import Settings
from tests.support import QUICK_EVIDENCE
from worker import jobs
from worker.point_attacks import attack_point, resend_point_attacks
from worker.services import Services

from ..api.conftest import serve
from .conftest import digits_service

# rl forgets the class along the curve; the criterion also asks that relearning not bring it back.
FORGETS = {
    "epochs": 2,
    "grid_points": 5,
    "base": {"epochs": 2},
    "evidence": QUICK_EVIDENCE,
    "erasure": {"require_relearning": True},
}


@dataclass
class Env:
    client: TestClient
    services: Services

    def awaiting_selection(self, model_id: str, forget_class: int) -> str:
        response = self.client.post(
            "/v1/deletion-requests",
            json={"model_id": model_id, "forget": {"classes": [forget_class]}, "base_method": "rl", "config": FORGETS},
        )
        assert response.status_code == 202, response.text
        jobs.run_request(self.services, response.json()["id"])
        assert self.request(response.json()["id"])["state"] == "awaiting_selection"
        return response.json()["id"]

    def request(self, request_id: str) -> dict:
        return self.client.get(f"/v1/deletion-requests/{request_id}").json()

    def attacks(self, request_id: str) -> dict[float, dict]:
        listed = self.client.get(f"/v1/deletion-requests/{request_id}/attacks")
        assert listed.status_code == 200, listed.text
        return {item["t"]: item for item in listed.json()["items"]}

    def file(self, request_id: str, t: object) -> object:
        return self.client.post(f"/v1/deletion-requests/{request_id}/attacks", json={"t": t})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, digits_upload: DigitsUpload) -> Iterator[tuple[Env, str]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("point-attacks"), bootstrap_api_key="k")
    client, services, model_id = digits_service(settings, digits_upload)
    yield Env(client, services), model_id


def test_attacks_on_two_points_tell_them_apart_and_match_what_publication_measures(env: tuple[Env, str]) -> None:
    service, model_id = env
    request_id = service.awaiting_selection(model_id, forget_class=3)
    filed = service.file(request_id, 0.0)
    assert filed.status_code == 202 and filed.json()["state"] == "queued" and filed.json()["requested_by"]
    again = service.file(request_id, 0.00001)  # the same point, to 4 decimals: filed already
    assert again.status_code == 200 and again.json()["t"] == 0.0
    assert service.file(request_id, 1.0).status_code == 202
    for t in (0.0, 1.0):
        attack_point(service.services, request_id, t)

    original, base = service.attacks(request_id)[0.0], service.attacks(request_id)[1.0]
    assert original["state"] == base["state"] == "succeeded" and original["error"] is None
    assert original["metrics"]["forget_accuracy"] > 0.8 > 0.2 > base["metrics"]["forget_accuracy"]
    assert {"relearning", "feature_probe"} <= set(original["evidence"]) and "membership" not in original["evidence"]
    assert original["criterion"]["met"] is False and "forget accuracy" in " ".join(original["criterion"]["reasons"])
    relearned = original["evidence"]["relearning"]["retain_only"]["published"]["forget_accuracy"]
    assert relearned[0] == pytest.approx(original["metrics"]["forget_accuracy"], abs=0.1)  # measured on a sample
    events = [e["type"] for e in service.client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]]
    assert events.count("point_attacks_requested") == 2 and events.count("point_attacks_done") == 2

    # The CLI reads the same (the attacks at t = 0 are filed already and done: it prints them at once).
    server, _, url = serve(service.client.app)
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "requests", "attack", request_id, "--t", "0", "--url", url, "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    server.should_exit = True
    assert cli.returncode == 0, cli.stderr
    assert f"forget {original['metrics']['forget_accuracy']:.3f}" in cli.stdout
    assert "forget after relearning (k_shot)" in cli.stdout and "erasure criterion not met: " in cli.stdout

    # What publication measures at t = 1 is what the attacks measured there: one code path, one seed.
    acknowledge = {"acknowledge": "erasure criterion not met: test"} if not base["criterion"]["met"] else {}
    chosen = service.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 1.0} | acknowledge)
    assert chosen.status_code == 202, chosen.text
    jobs.materialize_selection(service.services, request_id)
    number = service.request(request_id)["selection"]["model_version"]
    versions = service.client.get(f"/v1/models/{model_id}/versions").json()["items"]
    (published,) = [v["metrics"] for v in versions if v["version"] == number]
    assert published["forget_accuracy"] == base["metrics"]["forget_accuracy"]
    assert published["test_accuracy"] == base["metrics"]["test_accuracy"]
    assert published["evidence"]["relearning"] == base["evidence"]["relearning"]

    refused = service.file(request_id, 0.5)  # the curve is chosen: nothing left to attack
    assert refused.status_code == 409 and "awaiting_selection" in refused.json()["detail"]
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_bad_points_and_unknown_requests_are_refused_and_the_points_per_request_are_capped(
    env: tuple[Env, str],
) -> None:
    service, model_id = env
    request_id = service.awaiting_selection(model_id, forget_class=4)
    for bad in (1.5, -0.1, True, "0.5", None):
        refused = service.file(request_id, bad)
        assert refused.status_code == 422 and refused.json()["errors"][0]["loc"][-1] == "t", (bad, refused.text)
    assert service.file("req_nothing", 0.5).status_code == 404
    assert service.client.get("/v1/deletion-requests/req_nothing/attacks").status_code == 404
    for i in range(MAX_POINTS_PER_REQUEST):
        assert service.file(request_id, i / MAX_POINTS_PER_REQUEST).status_code == 202
    capped = service.file(request_id, 0.999)
    assert capped.status_code == 409 and f"{MAX_POINTS_PER_REQUEST} attacked points" in capped.json()["detail"]
    assert service.file(request_id, 0.0).status_code == 200  # one filed already is still answered
    assert len(service.attacks(request_id)) == MAX_POINTS_PER_REQUEST


def test_a_lost_task_or_a_silent_worker_is_sent_again_and_a_cancelled_request_ends_its_attacks(
    env: tuple[Env, str],
) -> None:
    service, model_id = env
    request_id = service.awaiting_selection(model_id, forget_class=6)
    assert service.file(request_id, 0.25).status_code == 202
    assert service.file(request_id, 0.75).status_code == 202
    now = utcnow()
    assert resend_point_attacks(service.services, now - timedelta(minutes=5), now - timedelta(minutes=2)) == []
    with service.services.factory() as session, session.begin():  # one's task is lost; the other's worker died
        session.execute(
            update(PointAttack)
            .where(PointAttack.request_id == request_id, PointAttack.t == 0.25)
            .values(dispatched_at=now - timedelta(hours=1))
        )
        session.execute(
            update(PointAttack)
            .where(PointAttack.request_id == request_id, PointAttack.t == 0.75)
            .values(state="running", heartbeat_at=now - timedelta(hours=1))
        )
    resent = resend_point_attacks(service.services, now - timedelta(minutes=5), now - timedelta(minutes=2))
    assert sorted(resent) == [f"{request_id}@0.25", f"{request_id}@0.75"]

    attack_point(service.services, request_id, 0.75)  # the silent worker's attacks: claimed here and run
    assert service.attacks(request_id)[0.75]["state"] == "succeeded"
    attack_point(service.services, request_id, 0.75)  # a duplicate delivery changes nothing
    assert service.attacks(request_id)[0.75]["state"] == "succeeded"

    assert service.client.post(f"/v1/deletion-requests/{request_id}/cancel").status_code == 202
    attack_point(service.services, request_id, 0.25)
    ended = service.attacks(request_id)[0.25]
    assert ended["state"] == "failed" and ended["metrics"] is None
    assert (
        ended["error"]["type"].endswith("/request-not-awaiting-selection") and "cancelled" in ended["error"]["detail"]
    )
