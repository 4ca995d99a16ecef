"""Coalescing over real processes (the embedded default: SQLite, a folder store and the SQL broker, with
MCU_COALESCE_SECONDS set): three requests arriving together run as one job and succeed with one new
version; cancelling one of three queued members leaves two."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cli.digits import DigitsUpload
from tests.support import wait_for_state

from .conftest import FAST_JOB, Stack, _running, base_env, register, submit

ACK = "erasure criterion not met: a coalescing test"


@pytest.fixture(scope="module")
def coalescing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("coalescing")
    yield from _running(Stack(base_env(data_dir) | {"MCU_COALESCE_SECONDS": "3"}, data_dir))


def trio(client: httpx.Client, model_id: str, first_row: int) -> list[dict]:
    return [
        submit(client, model_id, forget={"sample_ids": [f"d{r}" for r in range(start, start + 5)]}, config=FAST_JOB)
        for start in range(first_row, first_row + 15, 5)
    ]


def select_and_wait(client: httpx.Client, requests: list[dict]) -> list[dict]:
    curve = wait_for_state(client, requests[-1]["id"], ("awaiting_selection",), timeout=180)["curve"]
    selected = client.post(
        f"/v1/deletion-requests/{requests[-1]['id']}/selection", json={"t": curve["recommended_t"], "acknowledge": ACK}
    )
    assert selected.status_code == 202, selected.text
    return [wait_for_state(client, r["id"], ("succeeded",), timeout=180) for r in requests]


def test_requests_arriving_together_run_as_one_job(coalescing_stack: Stack, digits_upload: DigitsUpload) -> None:
    with coalescing_stack.client() as client:
        _, model_id = register(client, digits_upload)
        together = trio(client, model_id, 0)
        assert [r["job_id"] for r in together] == [None, together[0]["id"], together[0]["id"]]
        done = select_and_wait(client, together)
        assert {r["selection"]["model_version"] for r in done} == {2}
        versions = client.get(f"/v1/models/{model_id}/versions").json()["items"]
        assert [v["version"] for v in versions] == [1, 2]
        claims = [
            e
            for e in client.get(f"/v1/deletion-requests/{together[0]['id']}/events", params={"page_size": 500}).json()[
                "items"
            ]
            if e["state"] == "running" and e["type"] in ("state_changed", "claimed", "resumed")
        ]
        assert len(claims) == 1  # one job, run once

        second = trio(client, model_id, 100)
        cancelled = client.post(f"/v1/deletion-requests/{second[1]['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
        done = select_and_wait(client, [second[0], second[2]])
        report = client.get(f"/v1/deletion-requests/{second[2]['id']}/report").json()["report"]
        assert client.get(f"/v1/deletion-requests/{second[1]['id']}").json()["state"] == "cancelled"
    assert {r["selection"]["model_version"] for r in done} == {3}
    assert (report["forget_set"]["rows"], report["forget_set"]["job_rows"]) == (5, 10)
