"""Follow-up tasks of a state change reach the broker only once its transaction has committed: a worker
never sees a change that is not there, and a change that fails or is rolled back sends nothing.

Real Redis as the broker (its own database), the embedded SQLite as the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError

from api.app import create_app
from domain.lifecycle import State, transition
from domain.tasks import CLEANUP_REQUEST, CONTROL_QUEUE, GPU_QUEUE, RUN_REQUEST
from models import ModelVersion, record_event
from settings import Settings
from tests.support import redis_url
from worker.services import connect
from worker.validation import validate_model

from ..api.conftest import upload_dataset, upload_model

BROKER_URL = redis_url("domain")


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(BROKER_URL)
    yield client
    client.close()


def test_follow_ups_are_sent_after_commit_and_never_for_a_change_that_did_not_commit(
    tmp_path: Path, broker: redis.Redis
) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=BROKER_URL, bootstrap_api_key="k")
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(services, model_id)
    request_id = client.post(
        "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": ["s1"]}}
    ).json()["id"]

    def sent(queue: str) -> list[str]:
        """Task names of the messages for this request (other test runs may share the broker)."""
        messages = [json.loads(m)["headers"] for m in broker.lrange(queue, 0, -1)]
        return [m["task"] for m in messages if request_id in m["argsrepr"]]

    def cancel(session) -> None:  # queued -> cancelled: its follow-up is the clean-up task
        assert transition(session, request_id, State.CANCELLED, actor="test", from_=[State.QUEUED])

    try:
        assert sent(GPU_QUEUE) == [RUN_REQUEST]  # the submission committed

        # A commit that fails (a duplicate version 1 of the model) rolls the change back: nothing is sent.
        with services.factory() as session, pytest.raises(IntegrityError), session.begin():
            cancel(session)
            session.add(ModelVersion(model_id=model_id, version=1, sha256="0" * 64, storage_key="x", size=0))
        assert sent(CONTROL_QUEUE) == []

        # A rolled-back change sends nothing, not even when the same session commits something else later.
        with services.factory() as session:
            cancel(session)
            session.rollback()
            with session.begin():
                record_event(session, request_id, "note", None, "test")
        assert sent(CONTROL_QUEUE) == []
        assert client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "queued"

        # A committed change: nothing before the commit, its follow-up once after it.
        with services.factory() as session, session.begin():
            cancel(session)
            session.flush()
            assert sent(CONTROL_QUEUE) == []
        assert sent(CONTROL_QUEUE) == [CLEANUP_REQUEST]
    finally:
        for queue in (GPU_QUEUE, CONTROL_QUEUE):  # leave the shared broker as it was
            for message in broker.lrange(queue, 0, -1):
                if request_id.encode() in message:
                    broker.lrem(queue, 0, message)
