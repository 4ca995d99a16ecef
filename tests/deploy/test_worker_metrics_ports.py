"""docker/mcu-workers.sh gives each worker process of a multi-GPU container a metrics port of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import DOCKER_DIR
from .test_docker_scripts import fake_command, needs_bash


@needs_bash
@pytest.mark.parametrize(
    ("gpu_count", "port", "expected"),
    [
        ("3", "9101", ["0 9101", "1 9102", "2 9103"]),
        ("2", None, ["0 unset", "1 unset"]),  # no port: no endpoint in any process
        ("1", "9101", ["unset 9101"]),  # one GPU: a plain `mcu worker` with the port as given
    ],
)
def test_each_worker_process_gets_its_own_metrics_port(
    tmp_path: Path, gpu_count: str, port: str | None, expected: list[str]
) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "started"
    bin_dir.mkdir()
    fake_command(bin_dir, "python", f"echo {gpu_count}\n")
    fake_command(bin_dir, "hostname", "echo HOST\n")
    fake_command(
        bin_dir,
        "mcu",
        f'echo "${{CUDA_VISIBLE_DEVICES:-unset}} ${{MCU_WORKER_METRICS_PORT:-unset}}" >> {log}\nexec sleep 1\n',
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "MCU_WORKER_METRICS_PORT")}
    env |= {"PATH": f"{bin_dir}:/usr/bin:/bin"} | ({"MCU_WORKER_METRICS_PORT": port} if port else {})
    done = subprocess.run(
        ["bash", str(DOCKER_DIR / "mcu-workers.sh")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert sorted(log.read_text().splitlines()) == expected
