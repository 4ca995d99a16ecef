"""Many clients at once, a mixed workload on a database of thousands of rows: does anyone get a 5xx or a
dropped connection, and does a reader wait?

    python -m bench.concurrency --backend both --clients 200 --seconds 20 --json docs/results/concurrency.json
    python -m bench.concurrency --backend embedded --clients 50 --seconds 5 --rows 500    (a quick look)

The API runs as `mcu serve` in a subprocess, on Postgres + Redis db 13 + moto S3 (`postgres`) or on the
embedded default (`embedded`: SQLite, a folder, the SQL broker). Set-up: a tiny dataset and mlp, validated
and a few requests run to `succeeded` (each has a signed report and a chain of events) by a `python -m cli
worker` process, which then stops: no worker runs while the API is measured, so new requests stay queued.
Then `--rows` queued requests written through the domain functions. Two phases:

- steady: `--clients` threads with keep-alive connections (http.client), one role each in turn: list
  requests (a page of 50, three filters), get a request, POST a request, list a request's events, get a
  report (signed on each call), read models (list, get, versions); for `--seconds`.
- burst: the same number of clients released at one instant, each sending `--burst-requests` GETs, every
  one on a new connection; what counts is whether any connection is refused, reset or dropped.

Rate limits are off: this measures capacity (with them on, a flood from one address gets 429s).
Headline, last line per backend: 5xx and connection errors (goal 0) and the readers' p99 (goal < 2 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api_load import register
from bench.common import (
    CpuWindow,
    embedded_env,
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

EXPECTED = {"list": 200, "get": 200, "post": 202, "events": 200, "report": 200, "models": 200}
ROLES = tuple(EXPECTED)
READS = tuple(role for role in ROLES if role != "post")
SUCCEEDED, FORGET_EACH = 3, 5  # requests run to `succeeded` at set-up, forgetting this many samples each
ACK = "erasure criterion not met: benchmark set-up"


@dataclass
class Fixture:
    """What the clients ask about."""

    port: int
    key: str
    model_id: str
    request_ids: list[str]  # the queued rows
    succeeded_ids: list[str]  # with reports
    free_samples: list[str]  # not erased: a POST may forget them


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # connection errors by exception name
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int | str, seconds: float) -> None:
        with self.lock:
            if isinstance(status, str):
                self.failures[status] += 1
            else:
                self.statuses[status] += 1
                self.latencies.append(seconds)


def call_for(role: str, fx: Fixture, n: int, seed: int) -> tuple[str, str, str | None]:
    pick = seed * 7919 + n
    if role == "list":
        return (
            "GET",
            [
                "/v1/deletion-requests?page_size=50",
                "/v1/deletion-requests?state=queued&page_size=50",
                f"/v1/deletion-requests?model_id={fx.model_id}&page_size=50",
            ][n % 3],
            None,
        )
    if role == "get":
        return "GET", f"/v1/deletion-requests/{fx.request_ids[pick % len(fx.request_ids)]}", None
    if role == "post":
        return (
            "POST",
            "/v1/deletion-requests",
            json.dumps(
                {"model_id": fx.model_id, "forget": {"sample_ids": [fx.free_samples[pick % len(fx.free_samples)]]}}
            ),
        )
    if role == "events":
        ids = fx.succeeded_ids if n % 2 else fx.request_ids
        return "GET", f"/v1/deletion-requests/{ids[pick % len(ids)]}/events", None
    if role == "report":
        return "GET", f"/v1/deletion-requests/{fx.succeeded_ids[pick % len(fx.succeeded_ids)]}/report", None
    return (
        "GET",
        ["/v1/models?page_size=50", f"/v1/models/{fx.model_id}", f"/v1/models/{fx.model_id}/versions"][n % 3],
        None,
    )


def send(connection: http.client.HTTPConnection, call: tuple[str, str, str | None], key: str) -> int:
    method, path, body = call
    connection.request(method, path, body, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def steady_client(role: str, fx: Fixture, start: float, end: float, out: Tally, seed: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", fx.port, timeout=60)
    while time.perf_counter() < start:
        time.sleep(0.001)
    n = 0
    while time.perf_counter() < end:
        n += 1
        began = time.perf_counter()
        try:
            out.add(send(connection, call_for(role, fx, n, seed), fx.key), time.perf_counter() - began)
        except (OSError, http.client.HTTPException) as error:
            out.add(type(error).__name__, 0.0)  # counted apart from HTTP statuses
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", fx.port, timeout=60)


def burst_client(role: str, fx: Fixture, barrier: threading.Barrier, requests: int, out: Tally, seed: int) -> None:
    barrier.wait()
    for n in range(requests):
        connection = http.client.HTTPConnection("127.0.0.1", fx.port, timeout=60)
        began = time.perf_counter()
        try:
            out.add(send(connection, call_for(role, fx, n, seed), fx.key), time.perf_counter() - began)
        except (OSError, http.client.HTTPException) as error:
            out.add(type(error).__name__, 0.0)
        finally:
            connection.close()


def prepare(env: dict[str, str], port: int, key: str, rows: int, log: Path) -> Fixture:
    """A ready model and SUCCEEDED requests, run by a worker process that then stops; `rows` queued ones."""
    from domain import requests
    from domain.signing import SigningKeys
    from models import make_engine, make_session_factory, utcnow
    from settings import Settings

    url = f"http://127.0.0.1:{port}"
    model_id, sample_ids = register(url, key)
    succeeded = []
    with running_worker(env, log), Client(url, key) as client:
        client.wait_model(model_id, timeout=300)
        for i in range(SUCCEEDED):  # one after the other: each job starts from the version the last published
            forget = sample_ids[i * FORGET_EACH : (i + 1) * FORGET_EACH]
            request_id = client.create_request(model_id, {"sample_ids": forget}, selection="auto").id
            body = client.wait(request_id, ("succeeded", "awaiting_selection"), timeout=600, interval=0.2)
            if body.state == "awaiting_selection":  # auto withheld: the operator takes the recommended point
                assert body.curve is not None
                client.select(request_id, body.curve.recommended_t, ACK)
                client.wait(request_id, "succeeded", timeout=600, interval=0.2)
            succeeded.append(request_id)
    free = sample_ids[SUCCEEDED * FORGET_EACH :]
    # The queued rows go through the domain functions, not the API: thousands of POSTs would take about a
    # minute at the API's rate on a small machine (and fill the broker); the rows are the same.
    settings = Settings(**{k.removeprefix("MCU_").lower(): v for k, v in env.items() if k.startswith("MCU_")})
    config, criterion = requests.validated_config({}, "rl", settings.erasure_defaults)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    SigningKeys(factory, settings)  # seals the audit chains of the events these sessions record
    queued = []
    with factory() as session:  # no broker follow-ups: this factory has no dispatcher, and no worker runs
        for i in range(rows):
            queued.append(
                requests.create(
                    session,
                    model_id=model_id,
                    selector=("sample_ids", [free[i % len(free)]]),
                    base_method="rl",
                    config=config,
                    erasure_criterion=criterion,
                    selection_mode="manual",
                    external_id=f"bulk-{i}",
                    callback_url=None,
                    received_at=utcnow(),
                    response_days=settings.response_days,
                    actor="bench",
                )
            )
            if i % 500 == 499:
                session.commit()
        session.commit()
    return Fixture(port, key, model_id, queued, succeeded, free)


def summary(tallies: dict[str, Tally], seconds: float | None) -> dict[str, Any]:
    out = {}
    for role, tally in tallies.items():
        statuses = dict(sorted(tally.statuses.items()))
        out[role] = {
            "requests": len(tally.latencies) + sum(tally.failures.values()),
            "per_s": round(len(tally.latencies) / seconds, 1) if seconds else None,
            "statuses": {str(k): v for k, v in statuses.items()},
            "5xx": sum(v for k, v in statuses.items() if k >= 500),
            "connection_errors": sum(tally.failures.values()),
            "connection_error_kinds": dict(tally.failures),
            "unexpected": sum(v for k, v in statuses.items() if k != EXPECTED[role]),
            "p50_ms": round(percentile(tally.latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(tally.latencies, 99) * 1000, 1),
            "max_ms": round(max(tally.latencies, default=0) * 1000, 1),
        }
    return out


def run(backend: str, clients: int, seconds: float, rows: int, burst_requests: int) -> dict[str, Any]:
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
        began = time.perf_counter()
        fx = prepare(env, port, key, rows, data_dir / "worker.log")
        set_up_s = time.perf_counter() - began

        steady = {role: Tally() for role in ROLES}
        start = time.perf_counter() + 1.0
        threads = [
            threading.Thread(
                target=steady_client,
                daemon=True,
                args=(ROLES[i % len(ROLES)], fx, start, start + seconds, steady[ROLES[i % len(ROLES)]], i),
            )
            for i in range(clients)
        ]
        cpu = CpuWindow({"api": api.pid})
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 120)
        steady_cpu = cpu.stop()

        burst = {role: Tally() for role in READS}
        barrier = threading.Barrier(clients)
        threads = [
            threading.Thread(
                target=burst_client,
                daemon=True,
                args=(READS[i % len(READS)], fx, barrier, burst_requests, burst[READS[i % len(READS)]], i),
            )
            for i in range(clients)
        ]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        burst_s = time.perf_counter() - began
    steady_out, burst_out = summary(steady, seconds), summary(burst, None)
    read_latencies = [s for role in READS for s in steady[role].latencies]
    return {
        "backend": backend,
        "clients": clients,
        "seconds": seconds,
        "rows": rows,
        "set_up_s": round(set_up_s, 1),
        "burst_requests_per_client": burst_requests,
        "burst_s": round(burst_s, 2),
        "steady": steady_out,
        "burst": burst_out,
        "steady_cpu": steady_cpu,
        "api_cpu_ms_per_request": round(
            steady_cpu["api_cpu_s"] * 1000 / max(1, sum(r["requests"] for r in steady_out.values())), 2
        ),
        "errors_5xx": sum(r["5xx"] for r in [*steady_out.values(), *burst_out.values()]),
        "conn_errors": sum(r["connection_errors"] for r in [*steady_out.values(), *burst_out.values()]),
        "p99_read_s": round(percentile(read_latencies, 99), 3),
    }


def headline(result: dict[str, Any]) -> str:
    return (
        f"concurrency: backend={result['backend']} clients={result['clients']} errors_5xx={result['errors_5xx']} "
        f"conn_errors={result['conn_errors']} p99_read_s={result['p99_read_s']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgres", "embedded", "both"), default="both")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rows", type=int, default=3000, help="queued requests in the database besides the others")
    parser.add_argument("--burst-requests", type=int, default=6, help="requests per client in the burst")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    backends = ("postgres", "embedded") if args.backend == "both" else (args.backend,)
    results = [run(backend, args.clients, args.seconds, args.rows, args.burst_requests) for backend in backends]
    for result in results:
        print(
            f"## {args.clients} concurrent clients, {result['backend']}, {args.rows} queued rows, "
            f"{args.seconds:g} s steady + a burst ({args.burst_requests} new connections each)\n"
        )
        rows = [
            [
                phase,
                role,
                r["requests"],
                r["per_s"] or "-",
                r["5xx"],
                r["connection_errors"],
                r["unexpected"],
                r["p50_ms"],
                r["p99_ms"],
                r["max_ms"],
            ]
            for phase in ("steady", "burst")
            for role, r in result[phase].items()
        ]
        print(
            markdown_table(
                [
                    "phase",
                    "role",
                    "requests",
                    "req/s",
                    "5xx",
                    "conn. errors",
                    "unexpected",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                ],
                rows,
            )
        )
        print(
            f"\nAPI CPU per steady request: {result['api_cpu_ms_per_request']} ms; machine load "
            f"{result['steady_cpu']['load_avg_1m']} on {result['steady_cpu']['cores']} cores\n"
        )
    write_json(args.json, {"benchmark": "concurrency", "machine": machine_info(), "results": results})
    for result in results:
        print(headline(result))


if __name__ == "__main__":
    main()
