"""A full disk is the service's problem, said as such: 507 for the request, 503 from /readyz."""

from __future__ import annotations

import errno
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from settings import Settings
from storage import LocalStore

from .conftest import assert_problem, shard_bytes, simple_manifest


class FullDisk(LocalStore):
    def _store_file(self, key: str, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_onto_a_full_disk_is_507(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, bootstrap_api_key="k"))
    app.state.store = FullDisk(tmp_path / "full")  # the disk fills up while the service runs
    client = TestClient(app, headers={"Authorization": "Bearer k"})
    response = client.post("/v1/datasets", data={"name": "d"}, files=[
        ("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", shard_bytes(6)))])
    body = assert_problem(response, 507, "no storage left")
    assert response.headers["retry-after"] == "60" and body["title"] == "Insufficient storage"


def test_readyz_reports_a_data_directory_short_of_space(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path, min_free_bytes=2**62)))
    assert_problem(client.get("/readyz"), 503, f"data directory {tmp_path}", "MCU_MIN_FREE_BYTES")
    assert TestClient(create_app(Settings(data_dir=tmp_path))).get("/readyz").status_code == 200
