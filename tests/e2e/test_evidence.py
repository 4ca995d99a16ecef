"""Compliance evidence over real processes on Postgres: a signed report checked offline by `mcu reports
verify`, an event edited in the database caught by `mcu audit verify`, and `auto` withholding a curve that
never forgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from cli.digits import DigitsUpload
from tests.support import wait_for, wait_for_state

from .conftest import FAST_JOB, Stack, register, submit

NEVER_FORGETS = {"epochs": 1, "lr": 1e-9, "grid_points": 3, "base": {"epochs": 1, "lr": 1e-9}}


def mcu(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=stack.env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_report_verifies_offline_and_an_edited_event_is_named(
    stack: Stack, digits_upload: DigitsUpload, e2e_postgres_url: str, tmp_path: Path
) -> None:
    with stack.client() as client:
        _, model_id = register(client, digits_upload)
        withheld = submit(
            client, model_id, forget={"classes": [1]}, base_method="ft", config=NEVER_FORGETS, selection="auto"
        )
        request = submit(client, model_id, forget={"classes": [2]}, config=FAST_JOB, selection="auto")
        wait_for_state(client, request["id"], ("succeeded",), timeout=180)
        wait_for(
            lambda: any(
                e["type"] == "artifacts_deleted"
                for e in client.get(f"/v1/deletion-requests/{request['id']}/events", params={"page_size": 500}).json()[
                    "items"
                ]
            ),
            60,
            "the clean-up of θ_p, θ_c and the checkpoint",
        )
        report = client.get(f"/v1/deletion-requests/{request['id']}/report")
        keys = client.get("/v1/signing-key")
        never = wait_for_state(client, withheld["id"], ("awaiting_selection",), timeout=180)
        events = client.get(f"/v1/deletion-requests/{withheld['id']}/events", params={"page_size": 500}).json()
    assert report.status_code == 200 and report.json()["report"]["erasure_criterion"]["met"] is True
    deleted = report.json()["report"]["artifacts_deleted"]
    assert deleted["artifacts"] == ["theta_p", "theta_c", "checkpoint"] and deleted["objects"] == 3
    assert never["selection"] is None
    assert any(e["type"] == "erasure_criterion_not_met" for e in events["items"])

    signed, trusted = tmp_path / "report.json", tmp_path / "keys.json"
    signed.write_bytes(report.content)
    trusted.write_bytes(keys.content)
    checked = mcu(stack, "reports", "verify", str(signed), "--public-key", str(trusted))
    assert checked.returncode == 0 and checked.stdout.startswith("VALID"), checked.stdout + checked.stderr
    # One byte changed: the published version's number in the report.
    altered = report.content.replace(b'"version":2', b'"version":3', 1)
    assert altered != report.content
    signed.write_bytes(altered)
    checked = mcu(stack, "reports", "verify", str(signed), "--public-key", str(trusted))
    assert checked.returncode == 1 and "INVALID" in checked.stderr

    assert mcu(stack, "audit", "verify").returncode == 0
    first_event = events["items"][0]
    engine = create_engine(e2e_postgres_url)  # straight into Postgres, as an insider with database access
    with engine.begin() as db:
        edited = db.execute(
            text("UPDATE events SET detail = CAST(:detail AS json) WHERE hash = :hash"),
            {"detail": json.dumps({"forget_count": 0}), "hash": first_event["hash"]},
        ).rowcount
    engine.dispose()
    assert edited == 1
    broken = mcu(stack, "audit", "verify")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"request {withheld['id']}" in broken.stderr and "edited" in broken.stderr
    assert "1 broken" in broken.stdout

    # The newest event of the succeeded request deleted: its seal no longer matches, no report is signed.
    engine = create_engine(e2e_postgres_url)
    with engine.begin() as db:
        db.execute(
            text("DELETE FROM events WHERE id = (SELECT max(id) FROM events WHERE request_id = :id)"),
            {"id": request["id"]},
        )
    engine.dispose()
    truncated = mcu(stack, "audit", "verify", "--request-id", request["id"])
    assert truncated.returncode == 1 and "events were deleted" in truncated.stderr, truncated.stderr
    with stack.client() as client:
        refused = client.get(f"/v1/deletion-requests/{request['id']}/report")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/audit-chain-broken")
