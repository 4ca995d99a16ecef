"""Success paths of every endpoint, idempotency, and a broker outage that loses nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from safetensors.numpy import load as load_safetensors
from sqlalchemy import func, select

from api.app import create_app
from models import CurvePoint, DeletionRequest, utcnow
from worker.dispatch import Dispatcher
from worker.reconciler import resend_queued
from worker.services import Services

from .conftest import REDIS_URL, Service, assert_problem, serve, upload_dataset, upload_model


def submit(service: Service, model_id: str, **body: object) -> dict:
    response = service.client.post("/v1/deletion-requests", json={"model_id": model_id, **body})
    assert response.status_code == 202, response.text
    return response.json()


def test_dataset_register_read_and_list(service: Service) -> None:
    created = upload_dataset(service.client, n_train=30, n_test=10, num_classes=3, name="flows")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["num_train"] == 30 and body["num_test"] == 10 and body["num_classes"] == 3
    assert body["input_shape"] == [1, 4, 4] and body["created_at"].endswith("Z")
    assert created.headers["location"] == f"/v1/datasets/{body['id']}"
    assert service.client.get(f"/v1/datasets/{body['id']}").json() == body
    listed = service.client.get("/v1/datasets", params={"page_size": 500}).json()
    assert body["id"] in [d["id"] for d in listed["items"]]


def test_model_register_versions_and_weights(service: Service, registered: dict[str, str]) -> None:
    model = service.client.get(f"/v1/models/{registered['model_id']}").json()
    assert model["architecture"] == "mlp" and model["current_version"] == 1
    assert model["dataset_id"] == registered["dataset_id"]
    versions = service.client.get(f"/v1/models/{model['id']}/versions").json()["items"]
    assert len(versions) == 1
    first = versions[0]
    assert first["version"] == 1 and first["parent_version"] is None and first["deletion_request_id"] is None
    weights = service.client.get(f"/v1/models/{model['id']}/versions/1/weights")
    assert weights.status_code == 200 and weights.headers["etag"] == f'"{first["sha256"]}"'
    tensors = load_safetensors(weights.content)
    assert tensors["1.weight"].shape == (256, 16)
    cached = service.client.get(
        f"/v1/models/{model['id']}/versions/1/weights", headers={"If-None-Match": weights.headers["etag"]}
    )
    assert cached.status_code == 304
    assert model["id"] in [m["id"] for m in service.client.get("/v1/models").json()["items"]]


def test_deletion_request_lifecycle_through_the_api(service: Service, registered: dict[str, str]) -> None:
    created = submit(
        service,
        registered["model_id"],
        forget={"sample_ids": ["s1", "s2", "s4"]},
        external_id="GDPR-2026-0001",
        config={"epochs": 2},
    )
    assert created["state"] == "queued" and created["forget_count"] == 3
    assert created["config"]["epochs"] == 2 and created["config"]["grid_points"] == 21  # defaults filled in
    assert created["config"]["base"]["lr"] == 0.013
    assert created["progress"]["phase"] == "queued" and created["curve"] is None
    assert len(created["forget_fingerprint"]) == 64
    request_id = created["id"]
    assert service.client.get(f"/v1/deletion-requests/{request_id}").json()["id"] == request_id
    assert_problem(service.client.get(f"/v1/deletion-requests/{request_id}/curve"), 409, "not ready")

    # What a worker leaves behind once the curve is measured (the worker itself is another issue).
    with service.app.state.session_factory() as session, session.begin():
        row = session.get(DeletionRequest, request_id)
        row.state = "awaiting_selection"
        row.curve_summary = {
            "recommended_t": 0.6,
            "effective_region": [[0.4, 0.8]],
            "targets": {"retain_accuracy": 0.9, "forget_accuracy": 0.3},
        }
        for t in (0.0, 0.5, 1.0):
            session.add(
                CurvePoint(
                    request_id=request_id,
                    t=t,
                    forget_accuracy=1 - t,
                    unlearning_accuracy=t,
                    retain_accuracy=0.9,
                    test_accuracy=0.8,
                    mia_efficacy=t / 2,
                )
            )
    curve = service.client.get(f"/v1/deletion-requests/{request_id}/curve").json()
    assert [p["t"] for p in curve["points"]] == [0.0, 0.5, 1.0] and curve["recommended_t"] == 0.6
    assert service.client.get(f"/v1/deletion-requests/{request_id}").json()["curve"]["effective_region"] == [[0.4, 0.8]]

    selected = service.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 0.55})
    assert selected.status_code == 202 and selected.json()["state"] == "materializing"
    assert selected.json()["selection"]["t"] == 0.55 and selected.json()["selection"]["selected_by"] == "bootstrap"
    assert_problem(service.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": 0.5}), 409)

    # No worker has taken the selection yet (no heartbeat): cancelled at once, as nobody would finish it later.
    cancelled = service.client.post(f"/v1/deletion-requests/{request_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    events = service.client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
    assert [e["state"] for e in events] == ["queued", "materializing", "cancelled"]
    assert all(e["actor"] == "bootstrap" for e in events)


def test_cancel_of_a_queued_request_is_immediate(service: Service, registered: dict[str, str]) -> None:
    created = submit(service, registered["model_id"], forget={"classes": [1]})
    cancelled = service.client.post(f"/v1/deletion-requests/{created['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    assert_problem(service.client.post(f"/v1/deletion-requests/{created['id']}/cancel"), 409, "cancelled")


def test_forget_by_subjects_and_classes(service: Service, registered: dict[str, str]) -> None:
    by_subject = submit(service, registered["model_id"], forget={"subject_ids": ["subject3"]})
    # subject{i % 7} over 40 train rows: i = 3, 10, 17, 24, 31, 38
    assert by_subject["forget_count"] == 6
    by_class = submit(service, registered["model_id"], forget={"classes": [0]})
    assert by_class["forget_count"] == 14  # labels are i % 3 over the 40 train rows


def test_list_filters_and_paginates_newest_first(service: Service, registered: dict[str, str]) -> None:
    ids = [submit(service, registered["model_id"], forget={"sample_ids": [f"s{i}"]})["id"] for i in range(5)]
    seen, token = [], None
    while True:
        params = {"model_id": registered["model_id"], "page_size": 2} | ({"page_token": token} if token else {})
        page = service.client.get("/v1/deletion-requests", params=params).json()
        seen += [item["id"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert [i for i in seen if i in ids] == ids[::-1]
    assert len(seen) == len(set(seen))
    queued = service.client.get("/v1/deletion-requests", params={"state": "queued", "page_size": 500}).json()
    assert all(item["state"] == "queued" for item in queued["items"])


def test_idempotency_key_replays_and_rejects_other_bodies(service: Service, registered: dict[str, str]) -> None:
    body = {"model_id": registered["model_id"], "forget": {"sample_ids": ["s7"]}}
    headers = {"Idempotency-Key": f"idem-{service.name}-1"}
    first = service.client.post("/v1/deletion-requests", json=body, headers=headers)
    again = service.client.post("/v1/deletion-requests", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = service.client.post("/v1/deletion-requests", json=body | {"external_id": "x"}, headers=headers)
    assert_problem(other, 422, "different request body")

    dataset_headers = {"Idempotency-Key": f"idem-{service.name}-ds"}
    one = upload_dataset(service.client, name="idem", headers=dataset_headers)
    two = upload_dataset(service.client, name="idem", headers=dataset_headers)
    assert one.status_code == two.status_code == 201 and one.json()["id"] == two.json()["id"]
    model_headers = {"Idempotency-Key": f"idem-{service.name}-model"}
    m1 = upload_model(service.client, one.json()["id"], headers=model_headers)
    m2 = upload_model(service.client, one.json()["id"], headers=model_headers)
    assert m1.status_code == m2.status_code == 201 and m1.json()["id"] == m2.json()["id"]


def test_concurrent_posts_with_one_key_create_one_request(service: Service, registered: dict[str, str]) -> None:
    marker = f"concurrent-{service.name}"
    body = {"model_id": registered["model_id"], "forget": {"sample_ids": ["s9"]}, "external_id": marker}
    headers = {"Idempotency-Key": marker}
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(lambda _: service.client.post("/v1/deletion-requests", json=body, headers=headers), range(20))
        )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    with service.app.state.session_factory() as session:
        rows = session.scalar(
            select(func.count()).select_from(DeletionRequest).where(DeletionRequest.external_id == marker)
        )
    assert rows == 1


def test_metrics_expose_traffic_and_request_states(service: Service, registered: dict[str, str]) -> None:
    submit(service, registered["model_id"], forget={"sample_ids": ["s3"]})
    text = service.anonymous().get("/metrics").text
    assert 'mcu_http_requests_total{method="POST",route="/v1/deletion-requests",status="202"}' in text
    assert 'mcu_deletion_requests{state="queued"}' in text
    assert "mcu_http_request_duration_seconds_bucket" in text


def test_request_survives_a_broker_outage(service: Service, registered: dict[str, str], tmp_path) -> None:
    if service.name != "postgres":
        pytest.skip("the outage is simulated against the Redis broker")
    down = service.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "data_dir": tmp_path})
    server, thread, url = serve(create_app(down))
    try:
        import httpx

        with httpx.Client(base_url=url, headers=dict(service.client.headers), timeout=60) as client:
            response = client.post(
                "/v1/deletion-requests", json={"model_id": registered["model_id"], "forget": {"sample_ids": ["s11"]}}
            )
            assert response.status_code == 202, response.text
            assert_problem(client.get("/readyz"), 503, "broker")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    request_id = response.json()["id"]
    factory = service.app.state.session_factory
    with factory() as session:
        row = session.get(DeletionRequest, request_id)
        assert row.state == "queued" and row.dispatched_at is None  # committed, not sent

    broker = redis.Redis.from_url(REDIS_URL)
    broker.delete("gpu")
    services = Services(service.settings, factory, service.app.state.store, None, Dispatcher(REDIS_URL))  # type: ignore[arg-type]
    sent = resend_queued(services, sent_before=utcnow() - timedelta(minutes=5))
    assert request_id in sent
    messages = [json.loads(m) for m in broker.lrange("gpu", 0, -1)]
    delivered = [m for m in messages if request_id in m["headers"]["argsrepr"]]
    assert len(delivered) == 1 and delivered[0]["headers"]["task"] == "mcu.run_request"
    with factory() as session:
        assert session.get(DeletionRequest, request_id).dispatched_at > utcnow() - timedelta(minutes=1)
    # Sent recently: the reconciler leaves it alone until `older_than` has passed.
    assert request_id not in resend_queued(services, sent_before=utcnow() - timedelta(minutes=5))
