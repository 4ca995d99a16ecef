"""Many callers at once: nobody gets a 5xx, and a legitimate request is not starved by the others."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import Service


def test_a_crowd_of_readers_and_strangers_gets_no_server_error(service: Service, registered: dict[str, str]) -> None:
    def call(index: int) -> tuple[int, float]:
        # One in three with the real key; the others with an unknown key or none.
        headers = [dict(service.client.headers), {}, {"Authorization": "Bearer not-a-key"}][index % 3]
        path = ("/v1/deletion-requests", "/v1/models", f"/v1/models/{registered['model_id']}")[index % 3]
        started = time.perf_counter()
        with httpx.Client(base_url=service.url, timeout=60, headers=headers) as client:
            status = client.get(path).status_code
        return status, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=150) as pool:
        results = list(pool.map(call, range(150)))
    statuses = [status for status, _ in results]
    assert not [s for s in statuses if s >= 500], sorted(statuses)
    assert statuses.count(200) == 50 and statuses.count(401) == 100
    slowest = max(seconds for _, seconds in results)
    print(f"\n[{service.name}] 150 concurrent GETs: slowest {slowest:.2f}s")
    assert slowest < 10


def test_a_burst_of_submissions_is_accepted_or_refused_cleanly(service: Service, registered: dict[str, str]) -> None:
    """Each answer tells the truth: a 202 was committed, a 503 (if the database is saturated) was not."""
    marker = f"burst-{time.time_ns()}"

    def submit(index: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=60, headers=dict(service.client.headers)) as client:
            return client.post("/v1/deletion-requests", json={
                "model_id": registered["model_id"], "forget": {"sample_ids": [f"s{index % 30}"]},
                "external_id": f"{marker}-{index}"})

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(submit, range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 503}, sorted(statuses)
    listed = service.client.get("/v1/deletion-requests", params={"model_id": registered["model_id"],
                                                                 "page_size": 500}).json()["items"]
    committed = {r["external_id"] for r in listed if (r["external_id"] or "").startswith(marker)}
    accepted = {f"{marker}-{i}" for i, r in enumerate(responses) if r.status_code == 202}
    assert committed == accepted
    print(f"\n[{service.name}] 50 concurrent submissions: {statuses.count(202)} accepted, "
          f"{statuses.count(503)} asked to retry")
