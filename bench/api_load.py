"""API throughput under load: the real `POST /v1/deletion-requests` + `GET /v1/deletion-requests/{id}` against a
bare FastAPI endpoint doing the same single-row INSERT (and a GET by primary key) on the same Postgres.

    python -m bench.api_load --clients 16 --seconds 20 --json bench/results/api_load.json

Both servers are uvicorn subprocesses on loopback ports, started the same way (`uvicorn.run(app,
log_level="info")`, as `mcu serve` does), both on a schema of this benchmark's own in database `test`.
The API runs on Redis db 13 as broker (flushed at start) and moto's S3 server. A `python -m cli worker`
process validates the model at set-up and is stopped before the load: no worker runs while it is measured,
so every request stays queued, but the dispatch to the broker is part of each POST. Each of N client threads
loops for a fixed time: POST a request forgetting one random training sample, then GET it. Clients use
keep-alive connections from the standard library's http.client, which costs far less CPU per request
than httpx, so the client does not mask the servers' differences on a small machine.

Headline: API POST throughput / bare POST throughput (goal >= 0.7).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.common import (
    CpuWindow,
    machine_info,
    markdown_table,
    moto_s3,
    percentile,
    running_worker,
    service_env,
    spawn,
    stop,
    wait_http_ok,
    write_json,
)
from mcu_client import Client
from tests.support import free_port, postgres_schema

N_TRAIN, N_TEST, NUM_CLASSES, SHAPE = 500, 100, 3, (1, 4, 4)
BARE_TABLE = "bench_bare_requests"


# --- the bare comparison app (served by `python -m bench.api_load --serve-bare PORT`) ----------------------


class BareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    forget: dict[str, list[str]]


def bare_app(database_url: str) -> Any:
    """The least a service can do per request: validate a small body, INSERT one row, commit, answer JSON;
    and SELECT one row by primary key. Sync handlers (thread pool) and a pooled engine, like the API."""
    from datetime import UTC, datetime

    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, pool_size=10, max_overflow=20)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {BARE_TABLE} (id text PRIMARY KEY, model_id text "
                "NOT NULL, sample_id text NOT NULL, state text NOT NULL, created_at timestamptz "
                "NOT NULL)"
            )
        )
    app = FastAPI()

    @app.post("/items", status_code=202)
    def create(body: BareBody) -> JSONResponse:
        row = {
            "id": "req_" + secrets.token_hex(12),
            "model_id": body.model_id,
            "sample_id": body.forget["sample_ids"][0],
            "state": "queued",
            "created_at": datetime.now(UTC),
        }
        with engine.begin() as connection:
            connection.execute(
                text(f"INSERT INTO {BARE_TABLE} VALUES (:id, :model_id, :sample_id, :state, :created_at)"), row
            )
        return JSONResponse(row | {"created_at": row["created_at"].isoformat()}, status_code=202)

    @app.get("/items/{item_id}")
    def read(item_id: str) -> dict[str, Any]:
        with engine.connect() as connection:
            row = connection.execute(text(f"SELECT * FROM {BARE_TABLE} WHERE id = :id"), {"id": item_id}).first()
        if row is None:
            raise HTTPException(404)
        return {**row._asdict(), "created_at": row.created_at.isoformat()}

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(os.environ["BENCH_DATABASE_URL"]), host="127.0.0.1", port=port, log_level="info")


# --- registering a tiny dataset and an mlp model ------------------------------------------------------------


def tiny_upload() -> tuple[bytes, bytes, bytes, list[str]]:
    """(manifest, shard, weights, training sample ids): N_TRAIN + N_TEST 1x4x4 images, 3 classes, an mlp."""
    import numpy as np
    from safetensors.torch import save

    from storage import save_numpy
    from unlearning.architectures import seeded_init

    n = N_TRAIN + N_TEST
    rng = np.random.default_rng(0)
    shard = save_numpy(
        {
            "inputs": rng.integers(0, 255, size=(n, *SHAPE)).astype("uint8"),
            "labels": (np.arange(n) % NUM_CLASSES).astype(np.int64),
        }
    )
    manifest = io.StringIO("sample_id,split,shard,row,subject_id\n")
    manifest.seek(0, io.SEEK_END)
    for i in range(n):
        manifest.write(f"s{i},{'train' if i < N_TRAIN else 'test'},a.safetensors,{i},subject{i % 7}\n")
    weights = save(seeded_init("mlp", NUM_CLASSES, SHAPE, 0).state_dict())
    return manifest.getvalue().encode(), shard, weights, [f"s{i}" for i in range(N_TRAIN)]


def make_ready(env: dict[str, str], url: str, key: str, model_id: str, log: Path) -> None:
    """A worker process validates the new model (validating → ready), then stops: only the API is measured."""
    with running_worker(env, log), Client(url, key) as client:
        client.wait_model(model_id, timeout=300)


def register(url: str, key: str) -> tuple[str, list[str]]:
    import httpx

    manifest, shard, weights, sample_ids = tiny_upload()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        dataset = client.post(
            "/v1/datasets",
            data={"name": "bench-tiny"},
            files=[("manifest", ("manifest.csv", manifest)), ("shards", ("a.safetensors", shard))],
        )
        dataset.raise_for_status()
        model = client.post(
            "/v1/models",
            data={
                "name": "bench-mlp",
                "architecture": "mlp",
                "preprocessing": "unit",
                "num_classes": str(NUM_CLASSES),
                "dataset_id": dataset.json()["id"],
            },
            files={"weights": ("w.safetensors", weights)},
        )
        model.raise_for_status()
    return model.json()["id"], sample_ids


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    post_path: str
    get_path: str  # with {id}
    headers: dict[str, str]
    model_id: str
    sample_ids: list[str]


@dataclass
class Samples:
    post: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def client_loop(target: Target, start: float, measure_from: float, end: float, seed: int, out: Samples) -> None:
    rng = random.Random(seed)
    headers = {"Content-Type": "application/json", **target.headers}
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    while time.perf_counter() < start:
        time.sleep(0.001)
    while True:
        began = time.perf_counter()
        if began >= end:
            break
        body = json.dumps({"model_id": target.model_id, "forget": {"sample_ids": [rng.choice(target.sample_ids)]}})
        try:
            connection.request("POST", target.post_path, body, headers)
            response = connection.getresponse()
            payload = response.read()
            posted = time.perf_counter()
            if response.status != 202:
                out.error(f"POST {response.status}")
                continue
            request_id = json.loads(payload)["id"]
            connection.request("GET", target.get_path.format(id=request_id), headers=target.headers)
            response = connection.getresponse()
            response.read()
            got = time.perf_counter()
            if response.status != 200:
                out.error(f"GET {response.status}")
                continue
        except (OSError, http.client.HTTPException) as error:
            out.error(type(error).__name__)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
            continue
        if began >= measure_from and got <= end:  # whole loops inside the measured window only
            out.post.append(posted - began)
            out.get.append(got - posted)
    connection.close()


def run_load(target: Target, clients: int, seconds: float, warmup: float, pids: dict[str, int]) -> dict[str, Any]:
    samples = [Samples() for _ in range(clients)]
    start = time.perf_counter() + 0.2
    measure_from, end = start + warmup, start + warmup + seconds
    threads = [
        threading.Thread(target=client_loop, args=(target, start, measure_from, end, i, samples[i]), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu = CpuWindow(pids)
    time.sleep(max(0.0, end - time.perf_counter()))
    usage = cpu.stop()
    for thread in threads:
        thread.join(timeout=60)
    post = [s for c in samples for s in c.post]
    get = [s for c in samples for s in c.get]
    errors: dict[str, int] = {}
    for c in samples:
        for k, v in c.errors.items():
            errors[k] = errors.get(k, 0) + v

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "count": len(values),
            "per_s": round(len(values) / seconds, 1),
            "p50_ms": round(percentile(values, 50) * 1e3, 2),
            "p99_ms": round(percentile(values, 99) * 1e3, 2),
            "mean_ms": round(sum(values) / len(values) * 1e3, 2) if values else float("nan"),
        }

    loops = len(post)
    server_cpu = usage.get("server_cpu_s", 0.0)
    return {
        "target": target.name,
        "clients": clients,
        "seconds": seconds,
        "post": stats(post),
        "get": stats(get),
        "errors": errors,
        "cpu": usage,
        "server_cpu_ms_per_loop": round(server_cpu / loops * 1e3, 2) if loops else None,
    }


# --- orchestration ------------------------------------------------------------------------------------------


def profile_api(pid: int, seconds: float, path: Path) -> subprocess.Popen | None:
    """py-spy over the API process while it is loaded (collapsed stacks, for flame graphs or grep)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("py-spy not installed in this environment: --profile ignored", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--rate",
            "200",
            "--gil",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per target and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alternate bare/API this many times")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy stacks of the API here")
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare)
        return

    key = "bench-" + secrets.token_hex(8)
    api, bare = None, None
    info = machine_info()
    with (
        tempfile.TemporaryDirectory(prefix="mcu-api-load-") as tmp,
        postgres_schema("mcu_bench_load") as db_url,
        moto_s3() as s3,
    ):
        data_dir = Path(tmp)
        env = service_env(data_dir, db_url, s3, key)
        try:
            api_port, bare_port = free_port(), free_port()
            api = spawn(["-m", "cli", "serve", "--port", str(api_port)], env, data_dir / "api.log")
            bare = spawn(
                ["-m", "bench.api_load", "--serve-bare", str(bare_port)],
                env | {"BENCH_DATABASE_URL": db_url},
                data_dir / "bare.log",
            )
            wait_http_ok(f"http://127.0.0.1:{api_port}/readyz", api, data_dir / "api.log")
            wait_http_ok(f"http://127.0.0.1:{bare_port}/healthz", bare, data_dir / "bare.log")
            model_id, sample_ids = register(f"http://127.0.0.1:{api_port}", key)
            make_ready(env, f"http://127.0.0.1:{api_port}", key, model_id, data_dir / "worker.log")
            targets = {
                "bare": Target("bare", bare_port, "/items", "/items/{id}", {}, model_id, sample_ids),
                "api": Target(
                    "api",
                    api_port,
                    "/v1/deletion-requests",
                    "/v1/deletion-requests/{id}",
                    {"Authorization": f"Bearer {key}"},
                    model_id,
                    sample_ids,
                ),
            }
            results: list[dict[str, Any]] = []
            for round_ in range(args.rounds):
                for name, process in (("bare", bare), ("api", api)):
                    spy = None
                    if args.profile is not None and name == "api" and round_ == 0:
                        args.profile.parent.mkdir(parents=True, exist_ok=True)
                        spy = profile_api(process.pid, args.warmup + args.seconds, args.profile)
                    result = run_load(
                        targets[name],
                        args.clients,
                        args.seconds,
                        args.warmup,
                        {"server": process.pid, "client": os.getpid()},
                    )
                    result["round"] = round_ + 1
                    results.append(result)
                    if spy is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            spy.wait(timeout=30)
                    print(f"round {round_ + 1} {name}: {result['post']['per_s']} POST/s", file=sys.stderr)
            import redis

            queued_messages = redis.Redis.from_url(env["MCU_BROKER_URL"]).llen("gpu")
        finally:
            stop(api)
            stop(bare)

    def total(name: str, op: str) -> float:
        rows = [r for r in results if r["target"] == name]
        return sum(r[op]["count"] for r in rows) / sum(r["seconds"] for r in rows)

    bare_rate = total("bare", "post")
    ratio = total("api", "post") / bare_rate if bare_rate else float("nan")
    rows = []
    for r in results:
        for op in ("post", "get"):
            s = r[op]
            rows.append(
                [
                    r["round"],
                    r["target"],
                    op.upper(),
                    s["per_s"],
                    s["p50_ms"],
                    s["p99_ms"],
                    s["mean_ms"],
                    sum(r["errors"].values()),
                    r["server_cpu_ms_per_loop"],
                    f"{r['cpu']['machine_busy_s'] / r['cpu']['wall_s']:.2f}/{r['cpu']['cores']}",
                ]
            )
    print(f"## API load: {args.clients} clients, {args.seconds:g} s per target and round\n")
    print(
        markdown_table(
            [
                "round",
                "target",
                "op",
                "req/s",
                "p50 ms",
                "p99 ms",
                "mean ms",
                "errors",
                "server CPU ms/loop",
                "busy cores",
            ],
            rows,
        )
    )
    print(
        f"\nAPI POST throughput / bare POST throughput = **{ratio:.2f}** (goal >= 0.7); "
        f"broker messages queued: {queued_messages}"
    )
    write_json(
        args.json,
        {
            "benchmark": "api_load",
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "machine": info,
            "results": results,
            "post_throughput_ratio": round(ratio, 3),
            "broker_messages_queued": queued_messages,
        },
    )


if __name__ == "__main__":
    main()
