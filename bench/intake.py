"""Intake throughput on Postgres: subjects erased per second through `POST /v1/erasures/bulk`, and single
`POST /v1/deletion-requests` per second.

    python -m bench.intake --json bench/results/intake.json

A real `python -m cli serve` on a schema of this benchmark's own in database `test` (127.0.0.1:5432), Redis
db 13 as broker (flushed at start) and moto's S3 server. It registers one dataset of `--subjects` subjects
(`--rows-per-subject` training rows each) and `--models` models on it, validated by a `python -m cli worker`
process that is stopped before anything is measured: no worker runs, every request stays queued, but each
request's run task goes to the broker as in service.

- Bulk: `--clients` threads POST bulks of `--batch` items (one new subject and external_id each) until every
  subject was sent once; subjects/s = subjects filed / wall time. Each subject gets one request per model.
- Single: the same threads POST `/v1/deletion-requests` (one random training sample each) for `--seconds`.

Clients use keep-alive connections of the standard library's http.client (cheap per call, so the client does
not mask the server on a small machine). Last line: `intake: subjects_per_s=<n> single_posts_per_s=<m>`.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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

N_TEST, NUM_CLASSES, SHAPE = 500, 3, (1, 4, 4)


def register(url: str, key: str, subjects: int, rows_per_subject: int, models: int) -> list[str]:
    """A dataset whose training row i belongs to subject u<i // rows_per_subject>, and `models` mlp models on it."""
    import numpy as np
    from safetensors.torch import save

    from storage import save_numpy
    from unlearning.architectures import seeded_init

    n_train = subjects * rows_per_subject
    n = n_train + N_TEST
    rng = np.random.default_rng(0)
    shard = save_numpy(
        {
            "inputs": rng.integers(0, 255, size=(n, *SHAPE)).astype("uint8"),
            "labels": (np.arange(n) % NUM_CLASSES).astype(np.int64),
        }
    )
    manifest = io.StringIO()
    manifest.write("sample_id,split,shard,row,subject_id\n")
    for i in range(n):
        split, subject = ("train", f"u{i // rows_per_subject}") if i < n_train else ("test", "")
        manifest.write(f"s{i},{split},a.safetensors,{i},{subject}\n")
    with Client(url, key, timeout=300) as client:
        dataset = client.create_dataset("bench-intake", manifest.getvalue().encode(), [("a.safetensors", shard)])
        return [
            client.create_model(
                f"bench-intake-{m}",
                "mlp",
                NUM_CLASSES,
                dataset.id,
                save(seeded_init("mlp", NUM_CLASSES, SHAPE, m).state_dict()),
                preprocessing="unit",
            ).id
            for m in range(models)
        ]


class Caller:
    """One client thread's keep-alive connection."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.headers = port, {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(self, path: str, body: Any) -> tuple[int, bytes]:
        try:
            self.connection.request("POST", path, json.dumps(body), self.headers)
            response = self.connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            return 0, b""


def bulk_phase(port: int, key: str, subjects: int, batch: int, clients: int, pids: dict[str, int]) -> dict[str, Any]:
    batches = [list(range(start, min(start + batch, subjects))) for start in range(0, subjects, batch)]
    lock, latencies, errors, filed, requests = threading.Lock(), [], [], [0], [0]
    run = secrets.token_hex(4)

    def worker() -> None:
        caller = Caller(port, key)
        while True:
            with lock:
                if not batches:
                    return
                chunk = batches.pop()
            items = [{"subject_ids": [f"u{s}"], "external_id": f"intake-{run}-{s}"} for s in chunk]
            began = time.perf_counter()
            status, payload = caller.post("/v1/erasures/bulk", {"items": items})
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                if status != 200:
                    errors.append(f"HTTP {status}: {payload[:200]!r}")
                    continue
                results = json.loads(payload)["items"]
                created = [r for r in results if r["result"] == "created"]
                errors.extend(json.dumps(r["error"])[:200] for r in results if r["result"] == "error")
                filed[0] += len(created)
                requests[0] += sum(len(r["erasure"]["requests"]) for r in created)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    cpu = CpuWindow(pids)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = cpu.stop()
    wall = usage["wall_s"]
    return {
        "subjects": subjects,
        "batch": batch,
        "clients": clients,
        "calls": len(latencies),
        "subjects_filed": filed[0],
        "requests_filed": requests[0],
        "subjects_per_s": round(filed[0] / wall, 1),
        "requests_per_s": round(requests[0] / wall, 1),
        "call_p50_ms": round(percentile(latencies, 50) * 1e3, 1),
        "call_p99_ms": round(percentile(latencies, 99) * 1e3, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu": usage,
    }


def single_phase(
    port: int, key: str, model_id: str, samples: int, seconds: float, clients: int, pids: dict[str, int]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = time.perf_counter() + 0.2
    measure_from, end = start + 1.0, start + 1.0 + seconds  # one unmeasured second of warm-up

    def worker(seed: int) -> None:
        rng, caller = random.Random(seed), Caller(port, key)
        while time.perf_counter() < start:
            time.sleep(0.001)
        while (began := time.perf_counter()) < end:
            body = {"model_id": model_id, "forget": {"sample_ids": [f"s{rng.randrange(samples)}"]}}
            status, _ = caller.post("/v1/deletion-requests", body)
            done = time.perf_counter()
            with lock:
                if status != 202:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                elif began >= measure_from and done <= end:
                    latencies.append(done - began)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu = CpuWindow(pids)
    time.sleep(max(0.0, end - time.perf_counter()))
    usage = cpu.stop()
    for thread in threads:
        thread.join(timeout=60)
    return {
        "clients": clients,
        "seconds": seconds,
        "posts": len(latencies),
        "posts_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 1),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 1),
        "errors": errors,
        "cpu": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20_000, help="subjects erased in the bulk phase")
    parser.add_argument("--rows-per-subject", type=int, default=2)
    parser.add_argument("--models", type=int, default=1, help="models on the dataset: requests per subject")
    parser.add_argument("--batch", type=int, default=1_000, help="items per bulk call (at most 1,000)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--single-clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of single POSTs")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--phases",
        default="bulk,single",
        help="which to run: bulk,single (single alone runs on a checkout without bulk)",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    key = "bench-" + secrets.token_hex(8)
    info = machine_info()
    api = None
    with (
        tempfile.TemporaryDirectory(prefix="mcu-intake-") as tmp,
        postgres_schema("mcu_bench_intake") as db_url,
        moto_s3() as s3,
    ):
        data_dir = Path(tmp)
        env = service_env(data_dir, db_url, s3, key)
        try:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            api = spawn(["-m", "cli", "serve", "--port", str(port)], env, data_dir / "api.log")
            wait_http_ok(f"{url}/readyz", api, data_dir / "api.log")
            models = register(url, key, args.subjects, args.rows_per_subject, args.models)
            with running_worker(env, data_dir / "worker.log"), Client(url, key) as client:
                for model_id in models:
                    client.wait_model(model_id, timeout=600)
            pids = {"server": api.pid}
            bulk = single = None
            if "bulk" in phases:
                print(f"bulk: {args.subjects} subjects, bulks of {args.batch}, {args.clients} clients", file=sys.stderr)
                bulk = bulk_phase(port, key, args.subjects, args.batch, args.clients, pids)
            if "single" in phases:
                print(f"single: {args.single_clients} clients for {args.seconds:g} s", file=sys.stderr)
                samples = args.subjects * args.rows_per_subject
                single = single_phase(port, key, models[0], samples, args.seconds, args.single_clients, pids)
        finally:
            stop(api)

    rows = []
    if bulk is not None:
        rows.append(
            [
                f"bulk ({args.batch}/call, {args.clients} clients)",
                bulk["calls"],
                bulk["subjects_per_s"],
                bulk["requests_per_s"],
                bulk["call_p50_ms"],
                bulk["call_p99_ms"],
                bulk["errors"],
                bulk["cpu"]["server_cpu_s"],
                bulk["cpu"]["wall_s"],
                bulk["cpu"]["load_avg_1m"],
            ]
        )
    if single is not None:
        rows.append(
            [
                f"single POST ({args.single_clients} clients)",
                single["posts"],
                single["posts_per_s"],
                single["posts_per_s"],
                single["p50_ms"],
                single["p99_ms"],
                sum(single["errors"].values()),
                single["cpu"]["server_cpu_s"],
                single["cpu"]["wall_s"],
                single["cpu"]["load_avg_1m"],
            ]
        )
    print(f"## Intake on Postgres: {args.subjects} subjects, {args.models} model(s), {info['cores']} cores\n")
    headers = ["phase", "calls", "subjects/s", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU s", "wall s"]
    print(markdown_table([*headers, "load avg"], rows))
    if bulk is not None and bulk["first_errors"]:
        print("\nfirst bulk errors:", *bulk["first_errors"], sep="\n  ")
    write_json(args.json, {"benchmark": "intake", "args": vars(args), "machine": info, "bulk": bulk, "single": single})
    subjects = f"{bulk['subjects_per_s']:.0f}" if bulk else "-"
    posts = f"{single['posts_per_s']:.1f}" if single else "-"
    print(f"\nintake: subjects_per_s={subjects} single_posts_per_s={posts}")


if __name__ == "__main__":
    main()
