"""The `mcu` commands operators run, as real subprocesses on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from api.auth import authenticate
from models import ApiKey, make_engine, make_session_factory


def mcu(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")} | {"MCU_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    done = mcu(tmp_path, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_db_upgrade_builds_the_schema(data_dir: Path) -> None:
    tables = set(inspect(create_engine(f"sqlite:///{data_dir / 'mcu.sqlite'}")).get_table_names())
    assert {
        "datasets",
        "samples",
        "models",
        "model_versions",
        "deletion_requests",
        "curve_points",
        "events",
        "api_keys",
        "idempotency_records",
        "alembic_version",
    } <= tables


def test_keys_create_prints_a_working_secret_once_and_stores_its_hash(data_dir: Path) -> None:
    done = mcu(data_dir, "keys", "create", "--name", "compliance", "--scopes", "requests:write,requests:read")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert secret.startswith("mcu_") and len(secret) > 30
    factory = make_session_factory(make_engine(f"sqlite:///{data_dir / 'mcu.sqlite'}"))
    with factory() as session:
        principal = authenticate(session, secret, bootstrap_key=None)
        stored = session.scalars(select(ApiKey.key_hash)).all()
    assert principal is not None and principal.name == "compliance"
    assert principal.allows("requests:write") and not principal.allows("requests:select")
    assert secret not in stored


def test_keys_create_rejects_unknown_scopes_and_duplicate_names(data_dir: Path) -> None:
    bad = mcu(data_dir, "keys", "create", "--name", "x", "--scopes", "requests:delete")
    assert bad.returncode != 0 and "unknown scopes" in bad.stderr
    assert mcu(data_dir, "keys", "create", "--name", "ops", "--scopes", "admin").returncode == 0
    again = mcu(data_dir, "keys", "create", "--name", "ops", "--scopes", "admin")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_keys_list_shows_no_secret_and_revoke_stops_a_key(data_dir: Path) -> None:
    secret = mcu(data_dir, "keys", "create", "--name", "ci", "--scopes", "requests:read").stdout.strip()
    assert (
        mcu(data_dir, "keys", "create", "--name", "temp", "--scopes", "admin", "--expires-in-days", "1").returncode == 0
    )
    listed = mcu(data_dir, "keys", "list")
    assert listed.returncode == 0 and secret not in listed.stdout
    lines = {line.split("\t")[0]: line for line in listed.stdout.splitlines()}
    assert "\tactive\trequests:read\t" in lines["ci"] and " expires " in lines["temp"]
    factory = make_session_factory(make_engine(f"sqlite:///{data_dir / 'mcu.sqlite'}"))
    with factory() as session:
        assert authenticate(session, secret, bootstrap_key=None) is not None
    revoked = mcu(data_dir, "keys", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    with factory() as session:
        assert authenticate(session, secret, bootstrap_key=None) is None
    assert "\trevoked\t" in mcu(data_dir, "keys", "list").stdout
    again = mcu(data_dir, "keys", "revoke", "ci")
    assert again.returncode != 0 and "no active key named 'ci'" in again.stderr


def test_an_expired_key_is_refused(data_dir: Path) -> None:
    from datetime import timedelta

    from api.auth import create_api_key
    from models import utcnow

    factory = make_session_factory(make_engine(f"sqlite:///{data_dir / 'mcu.sqlite'}"))
    with factory() as session, session.begin():
        _, expired = create_api_key(session, "old", ["admin"], utcnow() - timedelta(seconds=1))
        _, current = create_api_key(session, "new", ["admin"], utcnow() + timedelta(days=1))
    with factory() as session:
        assert authenticate(session, expired, bootstrap_key=None) is None
        assert authenticate(session, current, bootstrap_key=None) is not None


def test_the_embedded_database_is_private(data_dir: Path) -> None:
    assert (data_dir / "mcu.sqlite").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("address", ["http://127.0.0.1:{port}", "http://no-such-host.invalid:8000"])
def test_an_unreachable_service_is_one_line_with_what_to_do(tmp_path: Path, address: str) -> None:
    """A wrong port or name used to print a 150-line traceback (issue 26): now one line, at any width, piped."""
    from tests.support import free_port

    url = address.format(port=free_port())  # nothing listens there
    for command in (["requests", "list"], ["models", "show", "mdl_0"], ["requests", "watch", "req_0"]):
        done = mcu(tmp_path, *command, "--url", url, "--api-key", "k")
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr + done.stdout
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"error: no answer from {url}") and "mcu serve" in line and "MCU_URL" in line


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({}, "no service database at"),  # run outside the folder `mcu serve` keeps its data in
        ({"MCU_DATABASE_URL": "postgresql+psycopg://mcu:hunter2@127.0.0.1:1/mcu"}, "cannot reach the database"),
    ],
    ids=["no-data-dir", "server-down"],
)
def test_a_database_command_without_its_database_says_so_in_one_line(
    tmp_path: Path, setting: dict[str, str], says: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")} | setting
    for command in (["keys", "create", "--name", "ops", "--scopes", "requests:read"], ["keys", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "cli", *command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"error: {says}") and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "hunter2" not in done.stderr  # the database password never reaches a terminal or a log
    assert not (tmp_path / ".mcu").exists()  # nothing created where the operator happened to stand
