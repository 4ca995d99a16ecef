"""The Fides integration against a real Fides (ethyca-fides 2.78.2, tests/support/fides.py) and the real service
processes: Fides is configured over its own API as an operator would (docs/integrations.md), a privacy request
for someone whose rows a model was trained on pauses in Fides until the service's erasure succeeded, and then
the worker's reconciler resumes it to `complete`; one for someone no dataset holds completes at once.

A stack of its own (its Postgres schema, Redis database and bucket) with the Fides settings in its environment.
Fides starts first and migrates its empty database while the stack starts and the model is registered."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterator

import httpx
import pytest

from cli.digits import DigitsUpload
from tests.support import redis_url, wait_for_state
from tests.support.fides import Fides, fides_server

from .conftest import Stack, own_stack, register

BROKER_URL = redis_url("own-stack")
SALT = "e2e-fides-salt-" + secrets.token_hex(4)
ALICE = "alice@example.com"
ALICE_WRITER = "w7"  # the digits writer whose rows become alice's (every 40th row from row 7)
POLICY = "default_erasure_policy"  # seeded by Fides at its first start
CONNECTION, WEBHOOK = "mcu_unlearning", "mcu_unlearning_erasure"

pytestmark = pytest.mark.timeout(420)  # the first test also waits for Fides' first start (about 40 s idle)


@pytest.fixture(scope="module")
def fides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fides]:
    """Started, not yet healthy: `configured_fides` waits for it."""
    with fides_server(tmp_path_factory.mktemp("fides")) as server:
        yield server


@pytest.fixture(scope="module")
def fides_stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, fides: Fides) -> Iterator[Stack]:
    settings = {"MCU_FIDES_URL": fides.api, "MCU_FIDES_IDENTITY": "email_sha256", "MCU_FIDES_IDENTITY_SALT": SALT}
    yield from own_stack(tmp_path_factory.mktemp("e2e-fides"), s3_endpoint, "fides", BROKER_URL, settings)


def alice_subject() -> str:
    """What MCU_FIDES_IDENTITY=email_sha256 maps alice's email to: sha256 of the salt and the lower-cased email."""
    return hashlib.sha256((SALT + ALICE).encode()).hexdigest()


def with_subject(upload: DigitsUpload, writer: str, subject_id: str) -> DigitsUpload:
    """The digits with `writer`'s rows given `subject_id` in the manifest (sample_id,split,shard,row,subject_id)."""
    lines = upload.manifest.decode().splitlines()
    renamed = [lines[0]] + [
        line.rsplit(",", 1)[0] + f",{subject_id}" if line.endswith(f",{writer}") else line for line in lines[1:]
    ]
    return dataclasses.replace(upload, manifest=("\n".join(renamed) + "\n").encode())


@pytest.fixture(scope="module")
def alice_model(fides_stack: Stack, digits_upload: DigitsUpload) -> str:
    """A model trained on digits whose manifest gives ALICE_WRITER's rows alice's subject id."""
    upload = with_subject(digits_upload, ALICE_WRITER, alice_subject())
    assert upload.manifest.count(alice_subject().encode()) == len(range(7, 1797, 40))
    with fides_stack.client() as client:
        return register(client, upload)[1]


@pytest.fixture(scope="module")
def configured_fides(fides: Fides, fides_stack: Stack) -> Fides:
    """Fides healthy, with an https connection to the service's webhook (the stack's key as its authorization)
    and a two-way pre-execution webhook on the default erasure policy: the calls docs/integrations.md lists."""
    fides.wait_healthy()
    connection = {
        "name": "Machine unlearning",
        "key": CONNECTION,
        "connection_type": "https",
        "access": "write",
        "secrets": {
            "url": f"{fides_stack.url}/v1/integrations/fides/webhook",
            "authorization": f"Bearer {fides_stack.key}",
        },
    }
    status, body = fides.call("PATCH", "/connection", json=[connection])
    assert status == 200 and not body["failed"], body
    hooks = [{"connection_config_key": CONNECTION, "direction": "two_way", "key": WEBHOOK, "name": "Erase from models"}]
    status, body = fides.call("PUT", f"/dsr/policy/{POLICY}/webhook/pre_execution", json=hooks)
    assert status == 200, body
    return fides


def submit_privacy_request(fides: Fides, email: str) -> str:
    """The privacy request's id; Fides called the webhook before this returns."""
    status, body = fides.call("POST", "/privacy-request", json=[{"identity": {"email": email}, "policy_key": POLICY}])
    assert status == 200 and not body["failed"], body
    return body["succeeded"][0]["id"]


def erasures_of(client: httpx.Client, privacy_request_id: str) -> list[dict]:
    response = client.get("/v1/erasures", params={"external_id": f"fides:{privacy_request_id}"})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_privacy_request_waits_paused_for_the_erasure_and_is_resumed_to_complete(
    fides_stack: Stack, alice_model: str, configured_fides: Fides, digits_upload: DigitsUpload
) -> None:
    fides = configured_fides
    privacy_request = submit_privacy_request(fides, ALICE)
    assert fides.status(privacy_request) == "paused"  # the webhook answered halt

    with fides_stack.client() as client:
        (erasure,) = erasures_of(client, privacy_request)
        assert erasure["forget"] == {"kind": "subject_ids", "count": 1}
        (request,) = erasure["requests"]
        assert request["model_id"] == alice_model
        # Filed with selection "manual", as any erasure by default: an operator chooses the point.
        waiting = wait_for_state(client, request["id"], ("awaiting_selection",), timeout=240)
        assert waiting["selection_mode"] == "manual"
        assert waiting["forget_count"] == len(range(7, len(digits_upload.train_labels), 40))  # alice's train rows
        assert fides.status(privacy_request) == "paused"
        selected = client.post(
            f"/v1/deletion-requests/{request['id']}/selection",
            json={
                "t": waiting["curve"]["recommended_t"],
                "acknowledge": "erasure criterion not met: a small test job",
            },
        )
        assert selected.status_code == 202, selected.text
        wait_for_state(client, request["id"], ("succeeded",), timeout=120)
        assert client.get(f"/v1/erasures/{erasure['id']}").json()["state"] == "succeeded"

    # The reconciler (every MCU_RECONCILE_INTERVAL_SECONDS) resumes it with the reply-to token Fides sent.
    fides.wait_status(privacy_request, "complete")

    # The same person's second privacy request finds her rows erased already: an erasure that succeeded with
    # no request, so the webhook answers halt: false and the privacy request completes at once.
    again = submit_privacy_request(fides, ALICE)
    assert fides.status(again) == "complete"
    with fides_stack.client() as client:
        (second,) = erasures_of(client, again)
    assert second["state"] == "succeeded" and second["requests"] == []
    assert second["skipped"][0]["reason"] == "already_erased"


def test_a_privacy_request_for_someone_no_dataset_holds_completes_at_once(
    fides_stack: Stack, alice_model: str, configured_fides: Fides
) -> None:
    privacy_request = submit_privacy_request(configured_fides, "nobody@example.com")
    assert configured_fides.status(privacy_request) == "complete"  # the webhook answered halt: false
    with fides_stack.client() as client:
        assert erasures_of(client, privacy_request) == []
