"""Many callers at once: nobody gets a 5xx, and a legitimate request is not starved by the others."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from .conftest import Service, serve, upload_dataset, upload_model, validated


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
            return client.post(
                "/v1/deletion-requests",
                json={
                    "model_id": registered["model_id"],
                    "forget": {"sample_ids": [f"s{index % 30}"]},
                    "external_id": f"{marker}-{index}",
                },
            )

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(submit, range(50)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 503}, sorted(statuses)
    listed = service.client.get(
        "/v1/deletion-requests", params={"model_id": registered["model_id"], "page_size": 500}
    ).json()["items"]
    committed = {r["external_id"] for r in listed if (r["external_id"] or "").startswith(marker)}
    accepted = {f"{marker}-{i}" for i, r in enumerate(responses) if r.status_code == 202}
    assert committed == accepted
    print(
        f"\n[{service.name}] 50 concurrent submissions: {statuses.count(202)} accepted, "
        f"{statuses.count(503)} asked to retry"
    )


# --- connections are held only while SQL runs -------------------------------------------------------------


@dataclass
class Watched:
    """A second API on the service's database, served here, that notes how many pooled connections are
    checked out at moments without SQL (a response starting, an object-store call), the most that one
    thread held at once (two = a nested session, which deadlocks the pool under load), and the most threads
    holding one at once."""

    client: httpx.Client
    db_threads: int  # the app's MCU_API_DB_THREADS
    model_id: str
    request_id: str  # queued
    succeeded_id: str  # with a report
    idle_moments: list[tuple[str, int]] = field(default_factory=list)
    most_per_thread: int = 0
    most_threads: int = 0


@pytest.fixture(scope="module")
def watched(service: Service) -> Iterator[Watched]:
    from api.app import create_app
    from worker import jobs
    from worker.services import connect

    app = create_app(service.settings)
    engines = {factory.kw["bind"] for factory in (app.state.session_factory, app.state.read_session_factory)}
    held: Counter = Counter()  # connections per thread
    owner: dict[int, int] = {}  # connection record -> the thread that checked it out
    watch: list[Watched] = []

    def checked_out() -> int:
        return sum(engine.pool.checkedout() for engine in engines)

    def on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        thread = threading.get_ident()
        owner[id(record)] = thread
        held[thread] += 1
        if watch:
            watch[0].most_per_thread = max(watch[0].most_per_thread, held[thread])
            watch[0].most_threads = max(watch[0].most_threads, sum(1 for n in held.values() if n > 0))

    def on_checkin(_dbapi: Any, record: Any) -> None:
        held[owner.pop(id(record), 0)] -= 1

    for engine in engines:
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)

    def note(moment: str) -> None:
        if watch:
            watch[0].idle_moments.append((moment, checked_out()))

    store = app.state.store
    for name in ("put_stream", "iter_chunks"):
        call = getattr(store, name)
        setattr(store, name, lambda *args, _call=call, _name=name, **kwargs: (note(_name), _call(*args, **kwargs))[1])

    async def noting(scope: Any, receive: Any, send: Any) -> None:
        async def send_noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                note("response")
            await send(message)

        await app(scope, receive, send_noting)

    server, thread, url = serve(noting)
    client = httpx.Client(base_url=url, timeout=60, headers=dict(service.client.headers))
    try:
        dataset = upload_dataset(client)
        model = validated(service, upload_model(client, dataset.json()["id"]))
        submit = {"model_id": model["id"], "forget": {"sample_ids": ["s1", "s2"]}, "selection": "auto"}
        succeeded_id = client.post("/v1/deletion-requests", json=submit).json()["id"]
        services = connect(service.settings)
        jobs.run_request(services, succeeded_id)  # what a worker does, run here
        jobs.materialize_selection(services, succeeded_id)
        queued = client.post("/v1/deletion-requests", json={"model_id": model["id"], "forget": {"sample_ids": ["s3"]}})
        watch.append(Watched(client, service.settings.api_db_threads, model["id"], queued.json()["id"], succeeded_id))
        yield watch[0]
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)


def _upload_with_key(client: httpx.Client, w: Watched) -> httpx.Response:
    dataset = client.get(f"/v1/models/{w.model_id}").json()["dataset_id"]
    return upload_model(client, dataset, headers={"Idempotency-Key": f"k-{time.time_ns()}"})


CALLS: list[tuple[str, Callable[[httpx.Client, Watched], httpx.Response], int]] = [
    ("list requests", lambda c, w: c.get("/v1/deletion-requests", params={"page_size": 500}), 200),
    ("get a request", lambda c, w: c.get(f"/v1/deletion-requests/{w.succeeded_id}"), 200),
    ("events", lambda c, w: c.get(f"/v1/deletion-requests/{w.succeeded_id}/events"), 200),
    ("report (signed)", lambda c, w: c.get(f"/v1/deletion-requests/{w.succeeded_id}/report"), 200),
    ("report refused", lambda c, w: c.get(f"/v1/deletion-requests/{w.request_id}/report"), 409),
    ("curve", lambda c, w: c.get(f"/v1/deletion-requests/{w.succeeded_id}/curve"), 200),
    ("models", lambda c, w: c.get("/v1/models"), 200),
    ("versions", lambda c, w: c.get(f"/v1/models/{w.model_id}/versions"), 200),
    ("weights (streamed)", lambda c, w: c.get(f"/v1/models/{w.model_id}/versions/1/weights"), 200),
    ("datasets", lambda c, w: c.get("/v1/datasets"), 200),
    ("signing keys", lambda c, w: c.get("/v1/signing-key"), 200),
    ("unknown request", lambda c, w: c.get("/v1/deletion-requests/req_nope"), 404),
    (
        "submit (idempotent)",
        lambda c, w: c.post(
            "/v1/deletion-requests",
            headers={"Idempotency-Key": "once"},
            json={"model_id": w.model_id, "forget": {"sample_ids": ["s4"]}},
        ),
        202,
    ),
    ("cancel", lambda c, w: c.post(f"/v1/deletion-requests/{w.request_id}/cancel"), 202),
    ("dataset upload (idempotent)", lambda c, w: upload_dataset(c, headers={"Idempotency-Key": "ds-once"}), 201),
    ("model upload (idempotent)", _upload_with_key, 201),
]


@pytest.mark.parametrize(("name", "call", "status"), CALLS, ids=[name for name, _, _ in CALLS])
def test_a_route_holds_one_connection_and_only_while_it_runs_sql(
    watched: Watched, name: str, call: Callable[[httpx.Client, Watched], httpx.Response], status: int
) -> None:
    """Serialising and sending the answer, streaming weights and uploading to the object store happen with
    no connection checked out: a connection held there is one that the 40 API threads wait for."""
    watched.idle_moments.clear()
    watched.most_per_thread = 0
    response = call(watched.client, watched)
    assert response.status_code == status, response.text
    assert watched.idle_moments and all(held == 0 for _, held in watched.idle_moments), watched.idle_moments
    assert watched.most_per_thread == 1, f"{name}: {watched.most_per_thread} connections held by one thread"


CLIENTS = 100  # more than the API's 40 threads and connections


def test_many_concurrent_lists_reports_and_events_all_answer(watched: Watched) -> None:
    """More clients than the API has threads and connections: each answers 200, none waits for a
    connection (which a connection held outside SQL turns into 503s after the pool's timeout)."""
    calls = [c for n, c, _ in CALLS if n in ("list requests", "report (signed)", "events", "get a request")]

    client = httpx.Client(
        base_url=str(watched.client.base_url),
        headers=dict(watched.client.headers),
        timeout=60,
        limits=httpx.Limits(max_connections=CLIENTS),
    )

    def call(index: int) -> tuple[int, float]:
        started = time.perf_counter()
        status = calls[index % len(calls)](client, watched).status_code
        return status, time.perf_counter() - started

    watched.most_per_thread = watched.most_threads = 0
    with client, ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(call, range(2 * CLIENTS)))
    assert [status for status, _ in results] == [200] * 2 * CLIENTS, Counter(status for status, _ in results)
    assert watched.most_per_thread == 1
    # The routes' database work runs on MCU_API_DB_THREADS threads, not on all of AnyIO's 40: more only fight
    # over the GIL (api/deps.py).
    assert 1 < watched.most_threads <= watched.db_threads, watched.most_threads
    print(f"\n{2 * CLIENTS} GETs by {CLIENTS} clients: slowest {max(s for _, s in results):.2f}s")


def test_every_route_that_takes_a_session_closes_it_when_it_returns(service: Service) -> None:
    """A route outside SessionRoute would hold its connection through serialisation and sending again."""
    from api.deps import SessionRoute, get_session

    from .test_auth import flat_routes

    def takes_session(dependant: Any) -> bool:
        return any(d.call is get_session or takes_session(d) for d in dependant.dependencies)

    routes = [getattr(r, "original_route", r) for r in flat_routes(service.app)]
    routes = [r for r in routes if hasattr(r, "dependant") and takes_session(r.dependant)]
    assert len(routes) > 10
    assert [r.path for r in routes if not isinstance(r, SessionRoute)] == []
