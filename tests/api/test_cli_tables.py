"""The CLI's lists print ids whole, in an 80-column terminal and piped (issue 26: `req_c5…` was useless, since
every other command needs the full id)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.api.conftest import BOOTSTRAP_KEY, Service

TERMINAL_80 = {"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"}  # rich lays out for 80 columns
PIPED = {"TTY_COMPATIBLE": "0", "COLUMNS": "80"}  # a pipe: no width at all, whatever COLUMNS says


def mcu(service: Service, env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCU_", "FORCE_COLOR"))}
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args, "--url", service.url, "--api-key", BOOTSTRAP_KEY],
        capture_output=True,
        text=True,
        env=clean | env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("env", [TERMINAL_80, PIPED], ids=["terminal-80", "piped"])
def test_lists_print_every_id_whole(service: Service, registered: dict[str, str], env: dict[str, str]) -> None:
    request = service.client.post(
        "/v1/deletion-requests",
        json={"model_id": registered["model_id"], "forget": {"sample_ids": ["s1"]}, "external_id": "TICKET-1"},
    )
    assert request.status_code == 202, request.text
    version = service.client.get(f"/v1/models/{registered['model_id']}/versions").json()["items"][0]
    expected = {
        ("requests", "list"): [request.json()["id"], registered["model_id"]],
        ("models", "list"): [registered["model_id"], registered["dataset_id"]],
        ("datasets", "list"): [registered["dataset_id"]],
        ("models", "versions", registered["model_id"]): [version["sha256"]],
    }
    for command, ids in expected.items():
        out = mcu(service, env, *command)
        assert "…" not in out, out  # nothing cut short: a narrow terminal wraps the lines instead
        for whole_id in ids:
            assert whole_id in out, f"{' '.join(command)}: {whole_id} not whole in\n{out}"


def test_requests_events_prints_the_audit_trail(service: Service, registered: dict[str, str]) -> None:
    request = service.client.post(
        "/v1/deletion-requests", json={"model_id": registered["model_id"], "forget": {"sample_ids": ["s2"]}}
    ).json()
    assert service.client.post(f"/v1/deletion-requests/{request['id']}/cancel").status_code == 202
    events = service.client.get(f"/v1/deletion-requests/{request['id']}/events").json()["items"]
    rows = [line.split() for line in mcu(service, PIPED, "requests", "events", request["id"]).splitlines()]
    printed = [row[4] for row in rows if len(row) > 5 and row[1][:4].isdigit()]  # │ date time │ type │ ...
    assert printed == [e["type"] for e in events] and len(printed) >= 2
