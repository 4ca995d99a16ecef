"""Many clients at once: does anyone get a 5xx, and does a legitimate reader wait?

    python -m bench.concurrency --backend postgres --clients 200 --seconds 20 --json bench/results/concurrency-pg.json
    python -m bench.concurrency --backend embedded --clients 200 --seconds 20

The API runs as `mcu serve` in a subprocess, on Postgres + Redis db 13 + moto S3 (`postgres`) or on the
embedded default (`embedded`: SQLite, a folder, the SQL broker); no worker runs, so requests stay queued.
The clients are threads with keep-alive connections (http.client), in four fixed roles, a quarter each:
strangers without a key (401), strangers with a made-up key (401), readers (GET of a request by id, with
the key) and writers (POST of a deletion request, with the key). Rate limits are off: this measures
capacity; with them on, a flood from one address gets 429s (tests/api/test_rate_limits.py).

Headline: 5xx count (goal 0) and the readers' p99 (goal < 2 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api_load import register, validate_in_process
from bench.common import (
    embedded_env,
    free_port,
    machine_info,
    markdown_table,
    moto_s3,
    percentile,
    postgres_schema,
    service_env,
    spawn,
    stop,
    wait_http_ok,
    write_json,
)

ROLES = ("no key", "made-up key", "reader", "writer")
EXPECTED = {"no key": 401, "made-up key": 401, "reader": 200, "writer": 202}


@dataclass
class Role:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.latencies.append(seconds)


def client(role: str, port: int, key: str, model_id: str, sample_ids: list[str], request_id: str,
           start: float, end: float, out: Role, seed: int) -> None:
    headers = {"Content-Type": "application/json"}
    if role != "no key":
        headers["Authorization"] = f"Bearer {key if role in ('reader', 'writer') else 'made-up-' + str(seed)}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.perf_counter() < start:
        time.sleep(0.001)
    n = 0
    while time.perf_counter() < end:
        n += 1
        if role == "writer":
            method, path = "POST", "/v1/deletion-requests"
            body: str | None = json.dumps({"model_id": model_id,
                                           "forget": {"sample_ids": [sample_ids[(seed * 7919 + n) % len(sample_ids)]]}})
        else:
            method, path, body = "GET", f"/v1/deletion-requests/{request_id}", None
        began = time.perf_counter()
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0  # the connection failed: counted apart from HTTP statuses
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.add(status, time.perf_counter() - began)


def run(backend: str, clients: int, seconds: float) -> dict[str, Any]:
    key = "bench-" + secrets.token_hex(8)
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcu-concurrency-")))
        if backend == "postgres":
            db_url = stack.enter_context(postgres_schema("mcu_bench_conc"))
            env = service_env(data_dir, db_url, stack.enter_context(moto_s3()), key)
        else:
            env = embedded_env(data_dir, key)
        port = free_port()
        api = spawn(["-m", "cli", "serve", "--port", str(port)], env, data_dir / "api.log")
        stack.callback(stop, api)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, data_dir / "api.log")
        model_id, sample_ids = register(f"http://127.0.0.1:{port}", key)
        validate_in_process(env, model_id)
        import httpx

        first = httpx.post(f"http://127.0.0.1:{port}/v1/deletion-requests", headers={"Authorization": f"Bearer {key}"},
                           json={"model_id": model_id, "forget": {"sample_ids": [sample_ids[0]]}}, timeout=60)
        first.raise_for_status()
        roles = {name: Role() for name in ROLES}
        start = time.perf_counter() + 1.0
        threads = [threading.Thread(target=client, args=(ROLES[i % 4], port, key, model_id, sample_ids,
                                                         first.json()["id"], start, start + seconds,
                                                         roles[ROLES[i % 4]], i), daemon=True)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
    results = {}
    for name, role in roles.items():
        statuses = dict(sorted(role.statuses.items()))
        results[name] = {
            "clients": clients // 4, "requests": len(role.latencies), "per_s": round(len(role.latencies) / seconds, 1),
            "statuses": {str(k): v for k, v in statuses.items()},
            "5xx": sum(v for k, v in statuses.items() if k >= 500), "connection_errors": statuses.get(0, 0),
            "unexpected": sum(v for k, v in statuses.items() if k != EXPECTED[name]),
            "p50_ms": round(percentile(role.latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(role.latencies, 99) * 1000, 1),
            "max_ms": round(max(role.latencies, default=0) * 1000, 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgres", "embedded"), default="postgres")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.backend, args.clients, args.seconds)
    rows = [[name, r["clients"], r["requests"], r["per_s"], r["5xx"], r["connection_errors"], r["unexpected"],
             r["p50_ms"], r["p99_ms"], r["max_ms"]] for name, r in results.items()]
    print(f"## {args.clients} concurrent clients, {args.backend}, {args.seconds:g} s\n")
    print(markdown_table(["role", "clients", "requests", "req/s", "5xx", "conn. errors", "unexpected", "p50 ms",
                          "p99 ms", "max ms"], rows))
    five_xx = sum(r["5xx"] + r["connection_errors"] for r in results.values())
    print(f"\n5xx and connection errors: **{five_xx}** (goal 0); reader p99: **{results['reader']['p99_ms']} ms** "
          f"(goal < 2000)", file=sys.stdout)
    write_json(args.json, {"benchmark": "concurrency", "backend": args.backend, "clients": args.clients,
                           "seconds": args.seconds, "machine": machine_info(), "results": results})


if __name__ == "__main__":
    main()
