"""Every list costs the same number of SQL statements whatever its length: no query per row (issue 9).

The API runs in this process (uvicorn in a thread), so a listener on every engine counts the statements
one GET sends, on Postgres and on the embedded SQLite. Each listed request carries a curve (written here as
a worker writes it: a summary on the request, its points as rows), the part that a per-row load would fetch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import event, update

from models import CurvePoint, DeletionRequest
from models.db import make_engine, make_session_factory

from .conftest import Service, upload_dataset, upload_model, validated


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, *_: object) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def statements(service: Service) -> Iterator[Callable[[Callable[[], object]], int]]:
    """Counts the API's statements only: a listener on every Engine also counted another test's reconciler
    thread, still running in this test process (a CI run saw 11 statements where the API ran 2)."""
    counter = StatementCounter()
    state = service.app.state  # type: ignore[attr-defined]
    engines = {factory.kw["bind"] for factory in (state.session_factory, state.read_session_factory)}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", counter)

    def measure(call: Callable[[], object]) -> int:
        before = counter.count
        call()
        return counter.count - before

    yield measure
    for engine in engines:
        event.remove(engine, "before_cursor_execute", counter)


def give_curves(service: Service, request_ids: list[str]) -> None:
    engine = make_engine(service.settings.resolved_database_url)
    try:
        with make_session_factory(engine).begin() as session:
            summary = {"recommended_t": 0.5, "effective_region": [[0.5, 1.0]], "targets": {}}
            session.execute(
                update(DeletionRequest).where(DeletionRequest.id.in_(request_ids)).values(curve_summary=summary)
            )
            session.add_all(
                CurvePoint(
                    request_id=request_id,
                    t=t,
                    forget_accuracy=1 - t,
                    unlearning_accuracy=t,
                    retain_accuracy=1.0,
                    test_accuracy=0.9,
                    mia_efficacy=t,
                )
                for request_id in request_ids
                for t in (0.0, 0.5, 1.0)
            )
    finally:
        engine.dispose()


def get_ok(service: Service, path: str, items: int) -> Callable[[], object]:
    def call() -> object:
        response = service.client.get(path)
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == items, response.text
        return response

    return call


def test_lists_cost_the_same_statements_for_2_rows_as_for_12(service: Service, statements) -> None:
    dataset_id = upload_dataset(service.client, name="n-plus-one").json()["id"]
    model = validated(service, upload_model(service.client, dataset_id))
    model_id = model["id"]
    requests_path = f"/v1/deletion-requests?model_id={model_id}&page_size=50"

    def submit(count: int) -> None:
        ids = []
        for index in range(count):
            response = service.client.post(
                "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": [f"s{index}"]}}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        give_curves(service, ids)

    submit(2)
    first_request = service.client.get(requests_path).json()["items"][-1]["id"]
    counts = {
        "requests": [statements(get_ok(service, requests_path, 2))],
        "events": [statements(get_ok(service, f"/v1/deletion-requests/{first_request}/events", 1))],
    }
    submit(10)
    counts["requests"].append(statements(get_ok(service, requests_path, 12)))
    service.client.post(f"/v1/deletion-requests/{first_request}/cancel")  # one more event on its chain
    counts["events"].append(statements(get_ok(service, f"/v1/deletion-requests/{first_request}/events", 2)))
    listed = service.client.get(requests_path).json()["items"]
    assert all(len(item["curve"]["points"]) == 3 for item in listed)  # the curves were listed
    for name, (few, many) in counts.items():
        assert 0 < few == many, (name, counts)  # and the listener did see the statements


def test_the_unfiltered_list_reads_an_index_not_a_sort_of_the_table(service: Service) -> None:
    """Newest first over every request: without an index on (created_at, id) each page sorted the whole table
    (27 ms a page at 3,000 rows on SQLite, the API's CPU under load: issue 29)."""
    from sqlalchemy import inspect, text

    engine = make_engine(service.settings.resolved_database_url)
    try:
        indexes = [i["column_names"] for i in inspect(engine).get_indexes("deletion_requests")]
        assert ["created_at", "id"] in indexes, indexes
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                plan = " ".join(
                    str(row[-1])
                    for row in connection.execute(
                        text(
                            "EXPLAIN QUERY PLAN SELECT * FROM deletion_requests "
                            "ORDER BY created_at DESC, id DESC LIMIT 51"
                        )
                    )
                )
            assert "TEMP B-TREE" not in plan, plan
    finally:
        engine.dispose()


def test_a_read_takes_no_thread_pool_hop_to_render(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """SessionRoute validates and renders the answer in the route's own thread: FastAPI's own hop for that
    (its validation of a sync route's result) cost every request a thread switch under load (issue 29), and
    rendering on the event loop would hold every other request up meanwhile. Two hops are left: the key check
    and the route."""
    import asyncio

    import anyio.to_thread

    import api.deps

    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    rendered_on_loop: list[bool] = []
    render = api.deps._json

    def json_where(field: object, value: object) -> bytes:
        try:
            asyncio.get_running_loop()
            rendered_on_loop.append(True)
        except RuntimeError:  # no loop in this thread: the route's own
            rendered_on_loop.append(False)
        return render(field, value)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    monkeypatch.setattr(api.deps, "_json", json_where)
    listed = service.client.get("/v1/deletion-requests?page_size=5")
    assert listed.status_code == 200, listed.text
    assert len(hops) == 2 and not any("validate" in hop for hop in hops), hops
    hops.clear()
    assert service.client.get("/v1/models?page_size=5").status_code == 200
    assert len(hops) == 2 and not any("validate" in hop for hop in hops), hops
    assert rendered_on_loop == [False, False]  # both answers rendered, each in its route's thread
