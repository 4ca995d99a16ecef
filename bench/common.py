"""Small helpers shared by the service benchmarks (api_load, concurrency, coalesce, overhead, ...).

Everything stays on 127.0.0.1: a Postgres schema of the benchmark's own in database `test` (created, then
dropped), a Redis database flushed at start, moto's S3 server on a loopback port, and the service as real
`python -m cli serve` / `python -m cli worker` subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REDIS_BENCH_URL = "redis://127.0.0.1:6379/13"
REPO_ROOT = Path(__file__).resolve().parent.parent


def flush_redis(url: str = REDIS_BENCH_URL) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server on a loopback port with dummy credentials (also exported to child processes)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 call on the console
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_EC2_METADATA_DISABLED",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "NO_PROXY",
        )
    }
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "NO_PROXY": ",".join(filter(None, [saved["NO_PROXY"], "127.0.0.1", "localhost"])),
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def embedded_env(data_dir: Path, api_key: str, **extra: str) -> dict[str, str]:
    """Environment for `python -m cli serve|worker` on the embedded default under `data_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")}
    return (
        env
        | {
            "MCU_DATA_DIR": str(data_dir),
            "MCU_BOOTSTRAP_API_KEY": api_key,
            "MCU_DEVICE": "cpu",
            "PYTHONPATH": str(REPO_ROOT),
            # The benchmarks measure capacity from one address with one key: the rate limits would cap them.
            "MCU_RATE_LIMIT_PER_ADDRESS": "off",
            "MCU_RATE_LIMIT_PER_KEY": "off",
        }
        | extra
    )


def service_env(data_dir: Path, database_url: str, s3_endpoint: str, api_key: str, **extra: str) -> dict[str, str]:
    """The same on Postgres + Redis db 13 + moto S3, made ready: schema migrated, broker emptied, a new bucket."""
    from migrations.runner import upgrade
    from storage import S3Store

    upgrade(database_url)
    flush_redis()
    bucket = f"bench-{secrets.token_hex(6)}"
    S3Store(bucket, endpoint_url=s3_endpoint).ensure_bucket()
    return embedded_env(
        data_dir,
        api_key,
        MCU_DATABASE_URL=database_url,
        MCU_BROKER_URL=REDIS_BENCH_URL,
        MCU_STORAGE_URL=f"s3://{bucket}",
        MCU_S3_ENDPOINT_URL=s3_endpoint,
        **extra,
    )


def spawn(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own session (so stopping it stops what it started), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen | None, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=5)


def spawn_worker(env: dict[str, str], log: Path, timeout: float = 180) -> subprocess.Popen:
    """`python -m cli worker`, returned once it and its control-queue process consume their queues (Celery logs
    "<name> ready." for each). The control process imports as much as the worker (about 10 s of a core here): a job
    sent before it is ready shares the host's cores with that start-up (a second worker's grid points measured at
    half speed in bench.scale)."""
    from tests.support import wait_for  # the tests' harness; imported here, it keeps the client off library benches

    start = log.stat().st_size if log.exists() else 0  # a log shared with an earlier worker: only new lines

    def ready() -> bool:
        lines = log.read_bytes()[start:]
        return (lines.count(b" ready.") >= 2 and b"-control ready." in lines) or worker.poll() is not None

    worker = spawn(["-m", "cli", "worker"], env, log)
    try:
        wait_for(ready, timeout, "worker", 0.2)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
    except BaseException:
        stop(worker)
        raise
    return worker


@contextlib.contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A worker process for the block, stopped after it (a benchmark that measures the API alone)."""
    worker = spawn_worker(env, log)
    try:
        yield worker
    finally:
        stop(worker)


def wait_http_ok(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import httpx

    from tests.support import wait_for

    def ok() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early: {log.read_text()[-2000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ok, timeout, url, interval=0.2)


# --- CPU accounting: who used the machine while we measured -----------------------------------------------


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (children not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _clock_ticks()


class CpuWindow:
    """CPU seconds used by named processes and by the whole machine between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start()

    def start(self) -> None:
        self.wall = time.perf_counter()
        self.machine = machine_busy_seconds()
        self.per_pid = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        used = {name: process_cpu_seconds(pid) - self.per_pid[name] for name, pid in self.pids.items()}
        machine = machine_busy_seconds() - self.machine
        return {
            "wall_s": round(wall, 3),
            "cores": os.cpu_count() or 1,
            "machine_busy_s": round(machine, 3),
            **{f"{name}_cpu_s": round(v, 3) for name, v in used.items()},
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }


# --- reporting -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def machine_info() -> dict[str, Any]:
    import platform

    return {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


def fashion_mnist_arrays() -> tuple[Any, Any, Any, Any]:
    """Fashion-MNIST as numpy: train images [60000, 28, 28] uint8, labels, test images [10000, 28, 28], labels."""
    import gzip

    import numpy as np

    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"Fashion-MNIST is not installed under {FASHION}: apt-get install dataset-fashion-mnist")

    def idx(name: str) -> Any:
        raw = gzip.decompress((FASHION / name).read_bytes())
        dims = raw[3]
        shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(dims)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

    return (
        idx("train-images-idx3-ubyte.gz"),
        idx("train-labels-idx1-ubyte.gz"),
        idx("t10k-images-idx3-ubyte.gz"),
        idx("t10k-labels-idx1-ubyte.gz"),
    )


def fashion_mnist(train_rows: int | None = None) -> Any:
    """Fashion-MNIST as an ImageDataset (uint8 [N, 1, 28, 28]); `train_rows`: the first rows of the train split."""
    import torch

    from unlearning import ImageDataset

    x_train, y_train, x_test, y_test = fashion_mnist_arrays()
    x_train, y_train = x_train[:train_rows], y_train[:train_rows]

    def tensors(images: Any, labels: Any) -> tuple[Any, Any]:
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))

    return ImageDataset(*tensors(x_train, y_train), *tensors(x_test, y_test), 10)
