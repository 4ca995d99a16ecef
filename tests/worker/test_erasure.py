"""Erasure beyond the weights on real jobs: superseded versions' weights (410, shared objects kept, N kept
for rollback), training shards rewritten once every model on the dataset erased the rows (bytes gone from
every object and cache file), positions kept stable, tombstones answering "already erased".

Digits in two shards on the embedded default (SQLite, a local folder store); the jobs run in-process (the
functions the Celery tasks call) and every call goes through the real API app.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load, save

from api.app import create_app
from cli.digits import DigitsUpload
from models import Dataset, DeletionRequest, utcnow
from settings import Settings
from tests.support import QUICK_EVIDENCE
from unlearning.config import resolve_config
from unlearning.data import Subset, UnlearningData
from unlearning.metrics import EvalSets, accuracy
from unlearning.rows import ShardRows, materialize
from worker import jobs
from worker.artifacts import delete_artifacts
from worker.erasure import clean_up, erase_training_rows, prune_cache
from worker.inputs import load_dataset, load_inputs
from worker.reconciler import finish_cleanups
from worker.services import Services, connect
from worker.validation import validate_model

FAST = {"epochs": 2, "grid_points": 5, "base": {"epochs": 2}, "evidence": QUICK_EVIDENCE}
SPLIT_AT = 1000  # shard "a" holds rows [0, 1000), shard "b" the rest: train rows in both, test rows in "b"
FAST_EVAL = resolve_config({}, "rl").eval
ACK = "erasure criterion not met: a test of storage erasure"


@dataclass
class Env:
    client: TestClient
    services: Services
    settings: Settings
    dataset_id: str
    images: torch.Tensor  # every row of the original upload: row r is sample d<r>
    n_train: int
    upload: DigitsUpload

    def add_model(self, name: str) -> str:
        """A model with the digits weights: every model here shares one weights object in the store."""
        model = self.client.post(
            "/v1/models",
            data=self.upload.model_form(self.dataset_id, name),
            files={"weights": ("w.safetensors", self.upload.weights)},
        )
        assert model.status_code == 201, model.text
        validate_model(self.services, model.json()["id"])
        return model.json()["id"]

    def erase(self, model_id: str, sample_ids: list[str], services: Services | None = None) -> str:
        """A request run to success and cleaned up, as the worker's tasks would."""
        services = services or self.services
        response = self.client.post(
            "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": sample_ids}, "config": FAST}
        )
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        jobs.run_request(services, request_id)
        t = self.get_t(request_id)
        selected = self.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": t, "acknowledge": ACK})
        assert selected.status_code == 202, selected.text
        jobs.materialize_selection(services, request_id)
        assert self.client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "succeeded"
        clean_up(services, request_id)
        return request_id

    def get_t(self, request_id: str) -> float:
        return self.client.get(f"/v1/deletion-requests/{request_id}").json()["curve"]["recommended_t"]

    def report(self, request_id: str) -> dict:
        response = self.client.get(f"/v1/deletion-requests/{request_id}/report")
        assert response.status_code == 200, response.text
        return response.json()["report"]

    def weights(self, model_id: str, version: int) -> int:
        return self.client.get(f"/v1/models/{model_id}/versions/{version}/weights").status_code

    def files_holding(self, image: torch.Tensor) -> list[Path]:
        """Every object in the store and file in the worker's cache whose bytes contain the image's."""
        needle = image.numpy().tobytes()
        roots = [self.settings.data_dir / "objects", self.settings.cache_dir]
        return [p for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def two_shards(upload: DigitsUpload) -> list[tuple[str, tuple[str, bytes]]]:
    tensors = load(upload.shard)
    shards = {"a.safetensors": slice(0, SPLIT_AT), "b.safetensors": slice(SPLIT_AT, None)}
    lines = upload.manifest.decode().splitlines()
    manifest = [lines[0]]
    for line in lines[1:]:
        sample_id, split, _, row, subject = line.split(",")
        shard, local = ("a", int(row)) if int(row) < SPLIT_AT else ("b", int(row) - SPLIT_AT)
        manifest.append(f"{sample_id},{split},{shard}.safetensors,{local},{subject}")
    return [("manifest", ("manifest.csv", ("\n".join(manifest) + "\n").encode()))] + [
        ("shards", (name, save({k: v[rows].contiguous() for k, v in tensors.items()}))) for name, rows in shards.items()
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, digits_upload: DigitsUpload) -> Iterator[Env]:
    # The streamed data path, forced (MCU_IN_MEMORY_BYTES=0): every job here reads rows from the cached shards.
    settings = Settings(data_dir=tmp_path_factory.mktemp("erasure"), bootstrap_api_key="k", in_memory_bytes=0)
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    dataset = client.post("/v1/datasets", data={"name": "digits in two shards"}, files=two_shards(digits_upload))
    assert dataset.status_code == 201, dataset.text
    yield Env(
        client,
        connect(settings),
        settings,
        dataset.json()["id"],
        load(digits_upload.shard)["inputs"],
        len(digits_upload.train_labels),
        digits_upload,
    )


def unique_rows(images: torch.Tensor, rows: list[int]) -> list[int]:
    """Rows whose image no other row repeats: finding its bytes anywhere then means this sample's."""
    flat = images.flatten(1)
    return [r for r in rows if int((flat == flat[r]).all(dim=1).sum()) == 1]


def test_erased_rows_leave_the_shards_once_every_model_erased_them(env: Env) -> None:
    rows = unique_rows(env.images, [3, 17, 999, 1001, 1300, 1400])[:5]  # both shards
    assert len(rows) == 5 and any(r < SPLIT_AT for r in rows) and any(r >= SPLIT_AT for r in rows)
    erased = [f"d{r}" for r in rows]
    first, second = env.add_model("a"), env.add_model("b")
    assert all(env.files_holding(env.images[r]) for r in rows)

    by_first = env.erase(first, erased)
    # The first model's version 1 remembers the rows: its weights are gone, its metadata stays. The second
    # model's version 1 is the same object in the store: it stays downloadable.
    assert env.weights(first, 1) == 410 and env.weights(first, 2) == 200 and env.weights(second, 1) == 200
    gone = env.client.get(f"/v1/models/{first}/versions/1/weights")
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert gone.json()["type"].endswith("/weights-deleted")
    versions = env.client.get(f"/v1/models/{first}/versions").json()["items"]
    assert versions[0]["sha256"] and versions[0]["weights_deleted_at"] and versions[1]["weights_deleted_at"] is None
    report = env.report(by_first)
    assert report["superseded_versions"] == [
        {
            "version": 1,
            "sha256": versions[0]["sha256"],
            "weights": "deleted",
            "deleted_at": versions[0]["weights_deleted_at"].replace("Z", "+00:00"),
            "deleted_by_request": by_first,
        }
    ]
    # The second model has not erased them: they stay stored (it could not unlearn them otherwise).
    training = report["training_data"]
    assert (training["still_stored"], training["erased_from_storage"]) == (5, 0)
    assert training["held_by_models"] == [{"model_id": second, "rows": 5}]
    assert all(env.files_holding(env.images[r]) for r in rows)

    by_second = env.erase(second, erased)
    prune_cache(env.services)
    assert [r for r in rows if env.files_holding(env.images[r])] == []
    training = env.report(by_second)["training_data"]
    assert (training["still_stored"], training["erased_from_storage"], training["held_by_models"]) == (0, 5, [])
    assert {s["name"] for s in training["shard_rewrites"][0]["shards"]} == {"a.safetensors", "b.safetensors"}
    training = env.report(by_first)["training_data"]  # the first request's evidence is complete now too
    assert (training["still_stored"], training["erased_from_storage"], training["held_by_models"]) == (0, 5, [])
    assert training["shard_rewrites"][0]["by_request"] == by_second
    assert env.client.get(f"/v1/datasets/{env.dataset_id}").json()["num_train"] == env.n_train - 5

    # Every other row is still where its position says: positions are sparse now, train and test alike.
    with env.services.factory() as session:
        dataset, positions = load_dataset(
            env.services, session, session.get(Dataset, env.dataset_id), {"mean": [0.0], "std": [1.0]}
        )
    assert torch.equal(positions, torch.tensor([p for p in range(env.n_train) if p not in rows]))
    assert torch.equal(materialize(dataset.train_inputs), env.images[positions])
    assert torch.equal(materialize(dataset.test_inputs), env.images[env.n_train :])


def test_an_erased_sample_answers_as_erased_and_later_jobs_use_sparse_positions(env: Env) -> None:
    """Runs after the test above: its five samples are gone from the dataset, tombstones remain."""
    with env.services.factory() as session:
        assert session.get(Dataset, env.dataset_id).num_train == env.n_train - 5
    model = env.add_model("registered after the erasure")
    response = env.client.post("/v1/deletion-requests", json={"model_id": model, "forget": {"sample_ids": ["d3"]}})
    assert response.status_code == 409 and response.json()["type"].endswith("/already-erased")
    unknown = env.client.post("/v1/deletion-requests", json={"model_id": model, "forget": {"sample_ids": ["x"]}})
    assert unknown.status_code == 422

    later = ["d2", "d4", "d1402"]
    mixed = env.client.post(
        "/v1/deletion-requests", json={"model_id": model, "forget": {"sample_ids": ["d3", *later]}, "config": FAST}
    )
    assert mixed.status_code == 202 and mixed.json()["forget_count"] == 3
    request_id = mixed.json()["id"]
    queued = env.client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"][0]
    assert sum(queued["detail"]["already_erased_by"].values()) == 1
    with env.services.factory() as session:
        request = session.get(DeletionRequest, request_id)
    inputs = load_inputs(env.services, request)
    assert torch.equal(materialize(inputs.data.forget.inputs), env.images[[2, 4, 1402]])
    assert len(inputs.data.retain) == env.n_train - 5 - 3
    jobs.run_request(env.services, request_id)
    assert env.client.get(f"/v1/deletion-requests/{request_id}").json()["state"] == "awaiting_selection"


def same_rows(streamed: Subset, in_memory: Subset) -> None:
    assert not isinstance(streamed.inputs, torch.Tensor) and isinstance(in_memory.inputs, torch.Tensor)
    assert torch.equal(streamed.ids, in_memory.ids) and torch.equal(streamed.labels, in_memory.labels)
    assert torch.equal(materialize(streamed.inputs), in_memory.inputs)


@pytest.mark.parametrize("forget", [{"sample_ids": ["d2", "d1001", "d1402"]}, {"classes": [3]}])
def test_the_streamed_path_reads_the_rows_the_in_memory_path_holds_after_erasure(env: Env, forget: dict) -> None:
    """Runs after the tests above: shards rewritten, positions sparse. Retain / forget / test, rows and
    accuracies, are the same read from the shards a batch at a time (2 loader processes) as held in memory."""
    model = env.add_model(f"streamed {sorted(forget)}")
    response = env.client.post("/v1/deletion-requests", json={"model_id": model, "forget": forget, "config": FAST})
    assert response.status_code == 202, response.text
    with env.services.factory() as session:
        request = session.get(DeletionRequest, response.json()["id"])
    in_memory = load_inputs(connect(env.settings.model_copy(update={"in_memory_bytes": 1 << 40})), request)
    streamed = load_inputs(connect(env.settings.model_copy(update={"loader_workers": 2})), request)
    assert isinstance(streamed.data.retain.inputs.base, ShardRows)  # type: ignore[union-attr]
    for name in ("retain", "forget", "test"):
        same_rows(getattr(streamed.data, name), getattr(in_memory.data, name))
    sets = [EvalSets.draw(data, FAST_EVAL, 0) for data in (streamed.data, in_memory.data)]
    for name in ("retain", "forget", "test", "bn"):
        same_rows(getattr(sets[0], name), getattr(sets[1], name))
        assert accuracy(streamed.model, getattr(sets[0], name), streamed.data.adapter, 64) == accuracy(
            in_memory.model, getattr(sets[1], name), in_memory.data.adapter, 64
        )
    assert_classwise_split(streamed.data, in_memory.data)


def assert_classwise_split(streamed: UnlearningData, in_memory: UnlearningData) -> None:
    if streamed.forget_classes:
        for pair in zip(streamed.test_split_by_class(), in_memory.test_split_by_class(), strict=True):
            same_rows(*pair)
        assert set(streamed.forget.labels.tolist()) == {3} and 3 not in streamed.retain.labels.tolist()


def test_kept_superseded_versions_stay_downloadable_and_the_report_says_so(env: Env) -> None:
    keep_one = Services(
        env.settings.model_copy(update={"keep_superseded_versions": 1}),
        env.services.factory,
        env.services.store,
        env.services.cache,
        env.services.dispatcher,
    )
    model = env.add_model("kept for rollback")
    first = env.erase(model, ["d40"], keep_one)
    assert env.weights(model, 1) == 200
    assert env.report(first)["superseded_versions"][0]["weights"] == "held"
    second = env.erase(model, ["d41"], keep_one)
    assert (env.weights(model, 1), env.weights(model, 2), env.weights(model, 3)) == (410, 200, 200)
    assert [v["weights"] for v in env.report(second)["superseded_versions"]] == ["deleted", "held"]
    assert env.report(first)["superseded_versions"][0]["deleted_by_request"] == second


def test_a_clean_up_cut_short_is_finished_by_the_reconciler(env: Env) -> None:
    """The shards were rewritten, then the worker died before deleting the old objects: the reconciler runs
    the clean-up again and deletes what the rewrite's event names."""
    dataset = env.client.post("/v1/datasets", data={"name": "cut short"}, files=two_shards(env.upload))
    assert dataset.status_code == 201, dataset.text
    dataset = dataset.json()
    model = env.client.post(
        "/v1/models",
        data=env.upload.model_form(dataset["id"], "alone"),
        files={"weights": ("w.safetensors", env.upload.weights)},
    ).json()["id"]
    validate_model(env.services, model)
    with env.services.factory() as session:
        old_keys = [s["key"] for s in session.get(Dataset, dataset["id"]).shards]
    response = env.client.post(
        "/v1/deletion-requests", json={"model_id": model, "forget": {"sample_ids": ["d500", "d1200"]}, "config": FAST}
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]
    jobs.run_request(env.services, request_id)
    t = env.get_t(request_id)
    env.client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": t, "acknowledge": ACK})
    jobs.materialize_selection(env.services, request_id)
    delete_artifacts(env.services, request_id)  # the clean-up's first step done: only the erasure is owed
    erase_training_rows(env.services, request_id)  # committed; the worker dies before deleting anything
    assert all(env.services.store.exists(key) for key in old_keys)

    assert request_id in finish_cleanups(env.services, utcnow() + timedelta(seconds=1))
    assert not any(env.services.store.exists(key) for key in old_keys)
    assert env.report(request_id)["training_data"]["clean_up_finished_at"] is not None
    assert request_id not in finish_cleanups(env.services, utcnow() + timedelta(seconds=1))  # done once
