"""Subject-wide erasure (`/v1/erasures`): a subject named without a model gets one deletion request per model
whose training data holds it, one aggregate state, one signed report; bulk intake is idempotent per item.

Every id here carries a tag of its own: the service (one per backend) is shared with the other test modules,
whose datasets name `subject0`.. too, and an erasure reaches every model that holds its subjects.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domain.lifecycle import State
from domain.subject_erasure import ErasureState, aggregate_state
from mcu_client import Client, Conflict
from mcu_client.evidence import verify_report
from tests.support import QUICK_EVIDENCE
from worker import jobs
from worker.services import connect

from .conftest import BOOTSTRAP_KEY, Service, assert_problem, manifest_bytes, shard_bytes, upload_model, validated

# Fast jobs on tiny random data, whose auto-selected point the default erasure criterion would send back
# to awaiting_selection: accept any point.
FAST = {
    "epochs": 1,
    "grid_points": 3,
    "base": {"epochs": 1},
    "erasure": {"forget_tolerance": 1.0, "mia_tolerance": 1.0},
    "evidence": QUICK_EVIDENCE,
}
A_TRAIN, A_TEST, B_TRAIN, B_TEST = 40, 20, 30, 10


@dataclass
class World:
    """Two datasets with a model each: subjects p0..p3 are in both, p4..p7 in A's only. Training row i of A
    is subject p(i % 8), of B p(i % 4). Jobs run for p2 (its rows a2, a10, .., b2, b6, ..) and for b20; the
    other tests name other rows, so that none depends on which ran before it."""

    tag: str
    a: str  # model ids
    b: str

    def p(self, n: int) -> str:
        return f"{self.tag}-p{n}"

    def rows(self, model: str, subject: int) -> int:
        """Training rows of subject p<n> in the model's dataset."""
        train, period = (A_TRAIN, 8) if model == self.a else (B_TRAIN, 4)
        return sum(1 for i in range(train) if i % period == subject)


def dataset(service: Service, tag: str, name: str, train: int, test: int, period: int) -> str:
    rows = [
        (f"{tag}-{name}{i}", "train" if i < train else "test", "x.safetensors", i, f"{tag}-p{i % period}")
        for i in range(train + test)
    ]
    response = service.client.post(
        "/v1/datasets",
        data={"name": f"erasures-{name}"},
        files=[("manifest", ("m.csv", manifest_bytes(rows))), ("shards", ("x.safetensors", shard_bytes(train + test)))],
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def world(service: Service) -> World:
    tag = "era" + secrets.token_hex(4)
    models = [
        validated(service, upload_model(service.client, dataset(service, tag, name, train, test, period)))["id"]
        for name, train, test, period in (("a", A_TRAIN, A_TEST, 8), ("b", B_TRAIN, B_TEST, 4))
    ]
    return World(tag, *models)


def run(service: Service, request_id: str) -> None:
    """The job of a `selection: auto` request, in this process, to `succeeded`."""
    services = connect(service.settings)
    jobs.run_request(services, request_id)
    jobs.materialize_selection(services, request_id)
    assert service.client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "succeeded"


def test_a_subject_two_models_hold_gets_one_request_per_model(service: Service, world: World) -> None:
    client = service.client
    response = client.post("/v1/erasures", json={"subject_ids": [world.p(1)], "external_id": f"{world.tag}-one"})
    assert response.status_code == 202, response.text
    erasure = response.json()
    assert erasure["id"].startswith("era_") and response.headers["location"] == f"/v1/erasures/{erasure['id']}"
    assert erasure["state"] == "running" and erasure["skipped"] == []
    assert erasure["forget"] == {"kind": "subject_ids", "count": 1}
    assert sorted(r["model_id"] for r in erasure["requests"]) == sorted([world.a, world.b])
    for filed in erasure["requests"]:
        request = client.get(f"/v1/deletion-requests/{filed['id']}").json()
        assert request["state"] == filed["state"] == "queued" and request["model_id"] == filed["model_id"]
        assert request["forget_count"] == world.rows(filed["model_id"], 1)  # its dataset's rows of the subject
        assert request["external_id"] == f"{world.tag}-one"
        first = client.get(f"/v1/deletion-requests/{filed['id']}/events").json()["items"][0]
        assert first["detail"]["erasure"] == erasure["id"]
    assert client.get(f"/v1/erasures/{erasure['id']}").json() == erasure
    listed = client.get("/v1/erasures", params={"external_id": f"{world.tag}-one"}).json()
    assert [e["id"] for e in listed["items"]] == [erasure["id"]] and listed["next_page_token"] is None

    only_a = client.post("/v1/erasures", json={"subject_ids": [world.p(5), world.p(5)]}).json()
    assert [r["model_id"] for r in only_a["requests"]] == [world.a] and only_a["forget"]["count"] == 1
    by_sample = client.post("/v1/erasures", json={"sample_ids": [f"{world.tag}-b3", f"{world.tag}-a9"]}).json()
    assert sorted(r["model_id"] for r in by_sample["requests"]) == sorted([world.a, world.b])

    unknown = client.post("/v1/erasures", json={"subject_ids": [world.p(5), f"{world.tag}-nobody"]})
    assert_problem(unknown, 422, f"{world.tag}-nobody", "held by no model")
    test_split = client.post("/v1/erasures", json={"sample_ids": [f"{world.tag}-a{A_TRAIN}"]})  # never trained on
    assert_problem(test_split, 422, "held by no model")


def test_the_aggregate_state_follows_the_requests_and_one_signed_report_covers_them(
    service: Service, world: World
) -> None:
    client = service.client
    erasure = client.post(
        "/v1/erasures", json={"subject_ids": [world.p(2)], "config": FAST, "selection": "auto"}
    ).json()
    first, second = erasure["requests"]
    assert_problem(client.get(f"/v1/erasures/{erasure['id']}/report"), 409, "running")
    run(service, first["id"])
    assert client.get(f"/v1/erasures/{erasure['id']}").json()["state"] == "running"  # one still queued
    assert_problem(client.get(f"/v1/erasures/{erasure['id']}/report"), 409)
    run(service, second["id"])
    assert client.get(f"/v1/erasures/{erasure['id']}").json()["state"] == "succeeded"

    document = client.get(f"/v1/erasures/{erasure['id']}/report").json()
    keys = service.anonymous().get("/v1/signing-key").json()
    assert verify_report(document, keys).ok
    report = document["report"]
    assert report["format"] == "mcu-erasure-report/1" and report["erasure"]["id"] == erasure["id"]
    assert [r["request"]["id"] for r in report["requests"]] == [first["id"], second["id"]]
    for part in report["requests"]:
        assert part["forget_set"]["rows"] == world.rows(part["request"]["model_id"], 2)
    assert world.p(2) not in str(report)  # no subject id in the report
    edited = copy.deepcopy(document)
    edited["report"]["requests"][1]["forget_set"]["rows"] += 1
    assert not verify_report(edited, keys).ok
    dropped = copy.deepcopy(document)
    del dropped["report"]["requests"][0]
    assert not verify_report(dropped, keys).ok

    # Named again: every holder erased the rows already, so nothing is filed and the erasure is done.
    again = client.post("/v1/erasures", json={"subject_ids": [world.p(2)]})
    assert again.status_code == 202, again.text
    assert again.json()["requests"] == [] and again.json()["state"] == "succeeded"
    by = {s["model_id"]: s for s in again.json()["skipped"]}
    assert by[world.a]["reason"] == by[world.b]["reason"] == "already_erased"
    assert by[world.a]["already_erased_by"] == {
        r["id"]: world.rows(world.a, 2) for r in (first, second) if r["model_id"] == world.a
    }
    assert client.get(f"/v1/erasures/{again.json()['id']}/report").json()["report"]["requests"] == []
    # Erased and new subjects together: only the new rows are filed.
    mixed = client.post("/v1/erasures", json={"subject_ids": [world.p(2), world.p(6)]}).json()
    assert [(r["model_id"], r["state"]) for r in mixed["requests"]] == [(world.a, "queued")]
    assert client.get(f"/v1/deletion-requests/{mixed['requests'][0]['id']}").json()["forget_count"] == world.rows(
        world.a, 6
    )

    # A cancelled request makes the erasure cancelled.
    third = client.post("/v1/erasures", json={"subject_ids": [world.p(3)]}).json()
    assert client.post(f"/v1/deletion-requests/{third['requests'][0]['id']}/cancel").status_code == 202
    assert client.get(f"/v1/erasures/{third['id']}").json()["state"] == "cancelled"


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([State.SUCCEEDED, State.FAILED, State.AWAITING_SELECTION], ErasureState.FAILED),
        ([State.FAILED, State.CANCELLED], ErasureState.FAILED),
        ([State.SUCCEEDED, State.CANCELLED, State.RUNNING], ErasureState.CANCELLED),
        ([State.QUEUED, State.AWAITING_SELECTION, State.SUCCEEDED], ErasureState.AWAITING_SELECTION),
        ([State.AWAITING_SELECTION, State.AWAITING_APPROVAL], ErasureState.AWAITING_APPROVAL),
        ([State.CANCELLED, State.AWAITING_APPROVAL], ErasureState.CANCELLED),
        ([State.SUCCEEDED, State.MATERIALIZING], ErasureState.RUNNING),
        ([State.SUCCEEDED, State.CANCELLING], ErasureState.RUNNING),
        ([State.SUCCEEDED, State.SUCCEEDED], ErasureState.SUCCEEDED),
        ([], ErasureState.SUCCEEDED),
    ],
)
def test_the_aggregate_state_is_the_first_that_applies(states: list[State], expected: ErasureState) -> None:
    assert aggregate_state(states) == expected


def test_bulk_intake_answers_per_item_and_a_retry_files_nothing_twice(service: Service, world: World) -> None:
    client = service.client
    tag = world.tag
    items = [
        {"subject_ids": [world.p(4)], "external_id": f"{tag}-b1"},
        {"subject_ids": [f"{tag}-nobody"], "external_id": f"{tag}-b2"},
        {"sample_ids": [f"{tag}-a7"], "external_id": f"{tag}-b3", "selection": "auto"},
        {"subject_ids": [world.p(4)], "external_id": f"{tag}-b1"},  # the same item twice in one call
        {"subject_ids": [world.p(7)], "external_id": f"{tag}-b4", "config": {"epochs": "many"}},
    ]
    first = client.post("/v1/erasures/bulk", json={"items": items})
    assert first.status_code == 200, first.text
    results = first.json()["items"]
    assert [r["result"] for r in results] == ["created", "error", "created", "existing", "error"]
    assert [r["index"] for r in results] == list(range(5)) and [r["external_id"] for r in results] == [
        i["external_id"] for i in items
    ]
    assert results[1]["error"]["status"] == 422 and f"{tag}-nobody" in results[1]["error"]["detail"]
    assert results[4]["error"]["status"] == 422 and results[4]["error"]["errors"][0]["loc"] == ["config", "epochs"]
    assert results[3]["erasure"]["id"] == results[0]["erasure"]["id"]
    assert [r["model_id"] for r in results[0]["erasure"]["requests"]] == [world.a]

    retry = client.post("/v1/erasures/bulk", json={"items": items}).json()["items"]
    assert [r["result"] for r in retry] == ["existing", "error", "existing", "existing", "error"]
    assert [r["erasure"] and r["erasure"]["id"] for r in retry] == [
        r["erasure"] and r["erasure"]["id"] for r in results
    ]
    for ext in (f"{tag}-b1", f"{tag}-b3"):
        assert len(client.get("/v1/erasures", params={"external_id": ext}).json()["items"]) == 1
    filed = client.get("/v1/deletion-requests", params={"model_id": world.a, "page_size": 500}).json()["items"]
    assert sum(r["external_id"] == f"{tag}-b1" for r in filed) == 1

    # The same external_id with another body: an error for that item, the erasure it names untouched.
    changed = client.post("/v1/erasures/bulk", json={"items": [items[0] | {"subject_ids": [world.p(6)]}]})
    assert changed.json()["items"][0]["result"] == "error"
    assert changed.json()["items"][0]["error"]["errors"][0]["loc"] == ["external_id"]
    single = client.post("/v1/erasures", json=items[0])  # the single form finds the bulk's erasure: 200
    assert single.status_code == 200 and single.json()["id"] == results[0]["erasure"]["id"]


def test_a_large_bulk_files_what_a_single_one_does_with_sound_audit_chains(service: Service, world: World) -> None:
    """25 items: on Postgres the rows go in by COPY (models/bulk.py), the single form's by INSERT."""
    from models.audit import verify_chains

    client = service.client
    rows = [i for i in range(A_TRAIN) if i % 8 != 2][:25]  # p2's rows may be erased already (the test above)
    items = [{"sample_ids": [f"{world.tag}-a{i}"], "external_id": f"{world.tag}-many{i}"} for i in rows]
    results = client.post("/v1/erasures/bulk", json={"items": items}).json()["items"]
    assert [r["result"] for r in results] == ["created"] * 25
    single = client.post("/v1/erasures", json={"sample_ids": [f"{world.tag}-a30"]}).json()
    reference = client.get(f"/v1/deletion-requests/{single['requests'][0]['id']}").json()
    same = (
        "model_id",
        "model_version",
        "state",
        "base_method",
        "config",
        "selection_mode",
        "erasure_criterion",
        "progress",
    )
    key = service.app.state.signing_keys.verifying_key()  # type: ignore[attr-defined]
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        for result in results:
            assert client.get(f"/v1/erasures/{result['erasure']['id']}").json() == result["erasure"]
            (filed,) = result["erasure"]["requests"]
            request = client.get(f"/v1/deletion-requests/{filed['id']}").json()
            assert {k: request[k] for k in same} == {k: reference[k] for k in same}
            assert request["forget_count"] == 1 and request["due_extension"] is None and request["error"] is None
            check = verify_chains(session, key, filed["id"])
            assert check.events == 1 and check.broken == [], check


def test_a_bulk_sends_one_run_task_per_model_and_leaves_the_rest_to_the_reconciler(
    service: Service, world: World
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import select

    from models import DeletionRequest
    from worker.reconciler import resend_queued

    items = [{"sample_ids": [f"{world.tag}-{s}"], "external_id": f"{world.tag}-run-{s}"} for s in ("a33", "a35", "b27")]
    results = service.client.post("/v1/erasures/bulk", json={"items": items}).json()["items"]
    filed = [r["erasure"]["requests"][0]["id"] for r in results]
    with service.app.state.session_factory() as session:  # type: ignore[attr-defined]
        sent = dict(
            session.execute(
                select(DeletionRequest.id, DeletionRequest.dispatched_at).where(DeletionRequest.id.in_(filed))
            ).all()
        )
    assert [sent[f] is not None for f in filed] == [True, False, True]  # the first of each model's
    resent = resend_queued(connect(service.settings), datetime(1970, 1, 1, tzinfo=UTC))  # owed: never sent
    assert filed[1] in resent and filed[0] not in resent


def test_concurrent_bulks_with_the_same_items_make_each_erasure_once(service: Service, world: World) -> None:
    items = [{"sample_ids": [f"{world.tag}-a{i}"], "external_id": f"{world.tag}-race{i}"} for i in (11, 12, 13)]
    answers: list[list[dict]] = []

    def post() -> None:
        with service.with_key(service.client.headers["Authorization"].split()[1]) as client:
            answers.append(client.post("/v1/erasures/bulk", json={"items": items}).json()["items"])

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 4
    ids = {tuple(r["erasure"]["id"] for r in answer) for answer in answers}
    assert len(ids) == 1, answers
    assert sorted(r["result"] for answer in answers for r in answer).count("created") == 3
    for item in items:
        assert len(service.client.get("/v1/erasures", params={"external_id": item["external_id"]}).json()["items"]) == 1


def test_idempotency_of_the_single_form(service: Service, world: World) -> None:
    client = service.client
    body = {"subject_ids": [world.p(7)], "external_id": f"{world.tag}-single"}
    created = client.post("/v1/erasures", json=body)
    again = client.post("/v1/erasures", json=body)
    assert (created.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == created.json()["id"]
    assert_problem(client.post("/v1/erasures", json=body | {"selection": "auto"}), 422, "different body")
    keyed = {"sample_ids": [f"{world.tag}-a21"]}
    headers = {"Idempotency-Key": f"{world.tag}-key"}
    one, two = (client.post("/v1/erasures", json=keyed, headers=headers) for _ in range(2))
    assert (one.status_code, two.status_code) == (202, 202) and one.json()["id"] == two.json()["id"]


def test_a_model_still_validating_refuses_the_erasure(service: Service) -> None:
    tag = "val" + secrets.token_hex(4)
    dataset_id = dataset(service, tag, "v", 20, 5, 4)
    ready = validated(service, upload_model(service.client, dataset_id))
    assert ready["state"] == "ready"
    assert upload_model(service.client, dataset_id).json()["state"] == "validating"  # never validated here
    refused = service.client.post("/v1/erasures", json={"subject_ids": [f"{tag}-p1"]})
    body = assert_problem(refused, 409, "still validating")
    assert body["type"].endswith("/model-not-ready")
    assert service.client.get("/v1/deletion-requests", params={"model_id": ready["id"]}).json()["items"] == []


def test_more_than_a_thousand_items_is_refused(service: Service) -> None:
    items = [{"subject_ids": ["x"], "external_id": f"over-{i}"} for i in range(1001)]
    assert_problem(service.client.post("/v1/erasures/bulk", json={"items": items}), 422, "items")
    assert_problem(service.client.post("/v1/erasures/bulk", json={"items": []}), 422, "items")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"subject_ids": ["a"], "sample_ids": ["b"]},
        {"subject_ids": []},
        {"subject_ids": "a"},
        {"subject_ids": ["a\x00b"]},
        {"subject_ids": ["a"], "model_id": "mdl_1"},
        {"subject_ids": ["a"], "config": {"no_such_key": 1}},
        {"subject_ids": ["a"], "base_method": "nope"},
        {"subject_ids": ["a"], "callback_url": "ftp://example.com/x"},
        {"subject_ids": ["a"], "received_at": "2026-01-01T00:00:00"},
        {"subject_ids": ["a"], "selection": "sometimes"},
    ],
)
def test_bad_input_is_a_422_problem(service: Service, body: dict) -> None:
    assert_problem(service.client.post("/v1/erasures", json=body), 422)


def test_unknown_ids_and_bad_tokens_are_4xx(service: Service) -> None:
    client = service.client
    assert_problem(client.get("/v1/erasures/era_nope"), 404, "era_nope")
    assert_problem(client.get("/v1/erasures/era_nope/report"), 404, "era_nope")
    assert_problem(client.get("/v1/erasures", params={"page_token": "garbage"}), 422, "page_token")
    assert_problem(client.post("/v1/erasures/bulk", json={"items": [{"subject_ids": ["a"]}]}), 422, "external_id")
    assert_problem(
        client.post("/v1/erasures/bulk", content=b"[1, 2", headers={"Content-Type": "application/json"}), 422
    )
    reader_only = service.anonymous().post("/v1/erasures", json={"subject_ids": ["a"]})
    assert_problem(reader_only, 401)


def test_the_client_and_the_cli_cover_erasures(
    service: Service, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mcu_client.client
    from cli.main import app

    client = Client(http=service.client)
    erasure = client.create_erasure(sample_ids=[f"{world.tag}-b20"], config=FAST, selection="auto")
    assert [r.model_id for r in erasure.requests] == [world.b] and erasure.state == "running"
    assert client.get_erasure(erasure.id) == erasure
    with pytest.raises(Conflict, match="running"):
        client.erasure_report(erasure.id)
    run(service, erasure.requests[0].id)
    assert client.get_erasure(erasure.id).state == "succeeded"
    assert client.verify_report(client.erasure_report(erasure.id)).ok
    monkeypatch.setattr(mcu_client.client, "BULK_LIMIT", 2)  # three items: two calls
    items = [{"sample_ids": [f"{world.tag}-b{i}"], "external_id": f"{world.tag}-cli{i}"} for i in (21, 22, 23)]
    results = client.bulk_erasures(items)
    assert [(r.index, r.result) for r in results] == [(0, "created"), (1, "created"), (2, "created")]
    assert [e.id for e in client.erasures(external_id=f"{world.tag}-cli23")] == [results[2].erasure.id]  # type: ignore[union-attr]

    env = {"MCU_URL": service.url, "MCU_API_KEY": BOOTSTRAP_KEY}

    def mcu(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["erasures", *args], env=env)
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    code, output = mcu("create", "--subject", world.p(0), "--external-id", f"{world.tag}-cli", "--json")
    assert code == 0, output
    created = json.loads(output)
    assert sorted(r["model_id"] for r in created["requests"]) == sorted([world.a, world.b])
    code, output = mcu("show", created["id"])
    assert code == 0 and created["id"] in output and world.a in output and world.b in output
    code, output = mcu("list", "--external-id", f"{world.tag}-cli", "--json")
    assert [e["id"] for e in json.loads(output)] == [created["id"]]
    lines = tmp_path / "items.jsonl"
    lines.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    code, output = mcu("bulk", str(lines))
    assert code == 0 and "0 created, 3 existing, 0 error" in output, output
    table = tmp_path / "items.csv"
    table.write_text(
        f"external_id,subject_id\n{world.tag}-csv,{world.p(6)}\n{world.tag}-csv,{world.p(7)}\n"
        f"{world.tag}-csv2,{world.tag}-nobody\n"
    )
    code, output = mcu("bulk", str(table), "--json")
    assert code == 1 and [r["result"] for r in json.loads(output)] == ["created", "error"]
    assert json.loads(output)[0]["erasure"]["forget"] == {"kind": "subject_ids", "count": 2}
    report = tmp_path / "report.json"
    assert mcu("report", erasure.id, "-o", str(report))[0] == 0
    verified = CliRunner().invoke(app, ["reports", "verify", str(report), "--url", service.url], env={"MCU_URL": None})
    assert verified.exit_code == 0 and "VALID" in verified.output, verified.output
    code, output = mcu("report", created["id"])
    assert code == 1 and "running" in output
    code, output = mcu("create", "--subject", "x", "--sample", "y")
    assert code == 2
