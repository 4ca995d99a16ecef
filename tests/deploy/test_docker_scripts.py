"""The images' start-up scripts: waiting for Postgres/Redis/S3, and one worker process per GPU."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import wait_for

from .conftest import DOCKER_DIR


@pytest.fixture(scope="module")
def wait_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wait_for_services", DOCKER_DIR / "wait_for_services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wait_finds_the_servers_in_the_settings(wait_module: ModuleType) -> None:
    env = {
        "MCU_DATABASE_URL": "postgresql+psycopg://mcu:pw@postgres/mcu",
        "MCU_BROKER_URL": "redis://:pw@redis:6380/0",
        "MCU_S3_ENDPOINT_URL": "http://minio:9000",
    }
    assert wait_module.endpoints(env) == [
        ("MCU_DATABASE_URL", "postgres", 5432),
        ("MCU_BROKER_URL", "redis", 6380),
        ("MCU_S3_ENDPOINT_URL", "minio", 9000),
    ]
    assert wait_module.endpoints({"MCU_DATABASE_URL": "sqlite:////data/mcu.sqlite"}) == []


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_wait(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")}
    return subprocess.run(
        [sys.executable, str(DOCKER_DIR / "wait_for_services.py")],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_wait_returns_once_servers_listen_and_gives_up_on_a_dead_one(listening_port: int) -> None:
    up = run_wait({"MCU_BROKER_URL": f"redis://127.0.0.1:{listening_port}/0", "MCU_WAIT_TIMEOUT": "5"})
    assert up.returncode == 0, up.stderr
    down = run_wait({"MCU_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", "MCU_WAIT_TIMEOUT": "0"})
    assert down.returncode == 1 and "MCU_BROKER_URL" in down.stderr


def fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_workers(
    tmp_path: Path, gpu_count: str, mcu_body: str, visible: str | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """docker/mcu-workers.sh with stand-ins for torch's GPU count, hostname and `mcu` (which logs its
    CUDA_VISIBLE_DEVICES and arguments, then runs `mcu_body`)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "started"
    bin_dir.mkdir()
    fake_command(bin_dir, "python", f"echo {gpu_count}\n")
    fake_command(bin_dir, "hostname", "echo HOST\n")
    fake_command(bin_dir, "mcu", f'shift; echo "${{CUDA_VISIBLE_DEVICES:-unset}} $*" >> {log}\n{mcu_body}\n')
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run(
        ["bash", str(DOCKER_DIR / "mcu-workers.sh"), "--queues", "gpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done, sorted(log.read_text().splitlines())


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@needs_bash
@pytest.mark.parametrize(
    ("gpu_count", "visible", "expected"),
    [
        ("2", None, ["0 --name mcu@HOST-gpu0 --queues gpu", "1 --name mcu@HOST-gpu1 --queues gpu"]),
        ("2", "all", ["0 --name mcu@HOST-gpu0 --queues gpu", "1 --name mcu@HOST-gpu1 --queues gpu"]),
        ("4", "2", ["2 --queues gpu"]),  # one GPU chosen: a plain `mcu worker` on it
        ("0", "3,5", ["3 --name mcu@HOST-gpu3 --queues gpu", "5 --name mcu@HOST-gpu5 --queues gpu"]),
        ("1", "all", ["unset --queues gpu"]),
        ("0", None, ["unset --queues gpu"]),  # no GPU: one worker, CPU fallback
    ],
)
def test_one_worker_process_per_visible_gpu(
    tmp_path: Path, gpu_count: str, visible: str | None, expected: list[str]
) -> None:
    done, started = run_workers(tmp_path, gpu_count, "exec sleep 1", visible)
    assert done.returncode == 0, done.stderr
    assert started == expected


@needs_bash
def test_when_one_worker_dies_the_others_are_stopped_and_its_status_returned(tmp_path: Path) -> None:
    # GPU 1's worker fails at once; GPU 0's would run for a minute unless stopped.
    started_at = time.monotonic()
    done, started = run_workers(
        tmp_path, "2", 'if [ "$CUDA_VISIBLE_DEVICES" = 1 ]; then sleep 0.5; exit 3; fi; exec sleep 60'
    )
    assert done.returncode == 3 and len(started) == 2
    assert time.monotonic() - started_at < 20


@needs_bash
def test_docker_stop_reaches_every_worker(tmp_path: Path) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "started"
    bin_dir.mkdir()
    fake_command(bin_dir, "python", "echo 2\n")
    fake_command(bin_dir, "mcu", f'echo "$CUDA_VISIBLE_DEVICES" >> {log}\nexec sleep 60\n')
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = subprocess.Popen(["bash", str(DOCKER_DIR / "mcu-workers.sh")], env=env)
    try:
        wait_for(lambda: log.exists() and len(log.read_text().split()) >= 2, 10, "both workers to start", 0.05)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=20) == 128 + signal.SIGTERM  # both sleeping "workers" were stopped
    finally:
        script.kill()
