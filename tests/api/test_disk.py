"""A full disk is the service's problem, said as such: 507 for the request (files or database, SQLite or
Postgres), 503 from /readyz, and both back to normal once space is freed."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from migrations.runner import upgrade
from settings import Settings
from storage import LocalStore
from tests.support import postgres_schema, wait_for

from .conftest import assert_problem, serve, shard_bytes, simple_manifest, upload_dataset


class FullDisk(LocalStore):
    def _store_file(self, key: str, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_onto_a_full_disk_is_507(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, bootstrap_api_key="k"))
    app.state.store = FullDisk(tmp_path / "full")  # the disk fills up while the service runs
    client = TestClient(app, headers={"Authorization": "Bearer k"})
    response = client.post(
        "/v1/datasets",
        data={"name": "d"},
        files=[("manifest", ("m.csv", simple_manifest(4, 2))), ("shards", ("a.safetensors", shard_bytes(6)))],
    )
    body = assert_problem(response, 507, "no storage left")
    assert response.headers["retry-after"] == "60" and body["title"] == "Insufficient storage"


def test_readyz_reports_a_data_directory_short_of_space(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path, min_free_bytes=2**62)))
    assert_problem(client.get("/readyz"), 503, f"data directory {tmp_path}", "MCU_MIN_FREE_BYTES")
    assert TestClient(create_app(Settings(data_dir=tmp_path))).get("/readyz").status_code == 200


# --- a real full disk: a small tmpfs (needs root to mount; skipped elsewhere) -----------------------------


@contextmanager
def small_disk(size: str = "16m") -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="mcu-full-"))
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def fill(root: Path) -> Path:
    filler = root / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False)
    assert shutil.disk_usage(root).free < 64 << 10
    return filler


@contextmanager
def sqlite_database(tmp_path: Path) -> Iterator[tuple[Settings, Callable[[], object]]]:
    """The database file on a small disk (the data directory, and so the stored files, elsewhere); filling
    that disk up is the second item."""
    with small_disk() as disk:
        url = f"sqlite:///{disk / 'mcu.sqlite'}"
        upgrade(url)
        yield Settings(data_dir=tmp_path, database_url=url, bootstrap_api_key="k"), lambda: fill(disk)


@contextmanager
def postgres_database(tmp_path: Path) -> Iterator[tuple[Settings, Callable[[], object]]]:
    """A Postgres schema; "filling the disk" makes Postgres answer disk_full (SQLSTATE 53100) to every new
    dataset row, as it does when it cannot extend a table's file."""
    from sqlalchemy import create_engine, text

    def out_of_disk() -> None:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE FUNCTION no_space() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; END $$"
                )
            )
            connection.execute(
                text("CREATE TRIGGER no_space BEFORE INSERT ON datasets FOR EACH ROW EXECUTE FUNCTION no_space()")
            )
        engine.dispose()

    with postgres_schema("mcu_disk") as url:
        upgrade(url)
        yield Settings(data_dir=tmp_path, database_url=url, bootstrap_api_key="k"), out_of_disk


@pytest.mark.parametrize("database", [sqlite_database, postgres_database])
def test_a_database_out_of_disk_is_507(tmp_path: Path, database: Callable) -> None:
    with database(tmp_path) as (settings, fill_its_disk):
        server, _, url = serve(create_app(settings))
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=60)
        try:
            assert upload_dataset(client).status_code == 201  # the database is open and working
            fill_its_disk()
            response = upload_dataset(client, name="no room")
        finally:
            client.close()
            server.should_exit = True
    body = assert_problem(response, 507, "no storage left")
    assert response.headers["retry-after"] == "60" and body["title"] == "Insufficient storage"


def test_readiness_and_writes_come_back_when_space_is_freed(tmp_path: Path) -> None:
    with small_disk() as disk:
        server, _, url = serve(create_app(Settings(data_dir=disk, bootstrap_api_key="k", min_free_bytes=1 << 20)))
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}, timeout=60)
        try:
            assert upload_dataset(client).status_code == 201
            filler = fill(disk)
            assert upload_dataset(client, name="full").status_code == 507
            wait_for(lambda: client.get("/readyz").status_code == 503, 10, "/readyz to see the full disk")
            assert "MCU_MIN_FREE_BYTES" in client.get("/readyz").json()["detail"]

            filler.unlink()
            wait_for(lambda: client.get("/readyz").status_code == 200, 5, "/readyz to recover")
            assert upload_dataset(client, name="again").status_code == 201
        finally:
            client.close()
            server.should_exit = True
