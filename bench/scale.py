"""One job's curve on one process and on two (MCU_DEVICES_PER_JOB), and its grid on one worker and on two
(MCU_GRID_FANOUT); worker/data_parallel.py, worker/grid.py, docs/scaling.md.

    python -m bench.scale --json docs/results/scale.json

A real `mcu serve` on Postgres (a schema of its own), Redis as broker, moto S3, and `mcu worker` processes with
one torch thread per process. Data: the first `--rows` Fashion-MNIST train images and its 10,000 test images
(Debian package `dataset-fashion-mnist`), a cnn-small trained one epoch on 6,000 of them. Each request forgets
1,000 seeded random rows with base `ga` 1 epoch.

- curve: the same request (`--curve-epochs` epochs, 3 grid points) on a worker with MCU_DEVICES_PER_JOB=1 and on
  one with 2 (two gloo ranks on the two cores), one worker running at a time, alternating which goes first; the
  figure is the job's `curve` timing per epoch (rank 0's, from `GET /v1/deletion-requests/{id}` `timings`).
- grid: the same request (1 curve epoch, `--grid` points in one pass) with one worker running and with a second
  worker started for it (MCU_GRID_FANOUT=true), alternating, after a warm-up job on one worker that is not counted
  (the table's repeat -1); the figure is the job's `evaluate` phase: the grid, then the recommended point on every
  row (in one part per worker that measured the grid).

Last line: `scale: curve_2p_over_1p=<median ratio> grid_2w_over_1w=<median ratio> ...`.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    machine_info,
    markdown_table,
    moto_s3,
    service_env,
    spawn,
    spawn_worker,
    stop,
    wait_http_ok,
    write_json,
)
from bench.memory import base_images, trained_weights, write_upload
from mcu_client import Client
from tests.support import free_port, postgres_schema

FORGET_ROWS = 1000


def one_job(client: Client, model_id: str, rows: int, config: dict[str, Any]) -> dict[str, Any]:
    forget = np.random.default_rng(1).choice(rows, FORGET_ROWS, replace=False)
    ids = [f"c0-{i}" for i in sorted(forget.tolist())]
    request = client.create_request(model_id, {"sample_ids": ids}, base_method="ga", config=config)
    body = client.wait(request.id, "awaiting_selection", timeout=3600, interval=1.0)
    detail = client.get_request(request.id)
    assert detail.timings is not None and detail.training is not None
    client.cancel(body.id)
    return {
        "curve_s": round(detail.timings.curve, 2),
        "evaluate_s": round(detail.timings.evaluate, 2),
        "processes": detail.training.processes,
        "points_by_worker": detail.training.grid_points_by_worker,
        "parts_by_worker": detail.training.recommended_point_parts_by_worker,
    }


def curve_runs(env: dict[str, str], root: Path, client: Client, model_id: str, args: argparse.Namespace) -> list:
    """The curve trained by one process, then by two ranks, one worker at a time (alternating the order)."""
    config = {"epochs": args.curve_epochs, "base": {"epochs": 1}, "grid_points": 3, "grid_refine": False}
    runs = []
    for repeat in range(args.repeats):
        for devices in (1, 2) if repeat % 2 == 0 else (2, 1):
            worker_env = env | {"MCU_DEVICES_PER_JOB": str(devices), "MCU_GRID_FANOUT": "false"}
            worker = spawn_worker(worker_env, root / f"worker-curve-{devices}.log")
            try:
                print(f"repeat {repeat}: curve on {devices} process(es)", file=sys.stderr)
                run = one_job(client, model_id, args.rows, config)
            finally:
                stop(worker)
            runs.append(
                {"repeat": repeat, "processes": devices, "curve_epoch_s": round(run["curve_s"] / args.curve_epochs, 2)}
                | run
            )
    return runs


def grid_runs(env: dict[str, str], root: Path, client: Client, model_id: str, args: argparse.Namespace) -> list:
    """The grid measured by one worker, then by two (a second started for it), alternating the order."""
    config = {"epochs": 1, "base": {"epochs": 1}, "grid_points": args.grid, "grid_refine": False}
    runs = []
    first = spawn_worker(env, root / "worker-1.log")
    second = None
    try:
        # A first job pays once for what later ones reuse (the worker's cached data and model, lazy imports):
        # 27 s against 19 s on 2026-12-05. Run and dropped, so no one-worker figure is a cold one.
        print("warm-up: grid on 1 worker (not counted)", file=sys.stderr)
        runs.append({"repeat": -1, "workers": 1} | one_job(client, model_id, args.rows, config))
        for repeat in range(args.repeats):
            for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                if workers == 2:
                    second = spawn_worker(env, root / "worker-2.log")
                print(f"repeat {repeat}: grid on {workers} worker(s)", file=sys.stderr)
                runs.append({"repeat": repeat, "workers": workers} | one_job(client, model_id, args.rows, config))
                stop(second)
                second = None
    finally:
        stop(second)
        stop(first)
    return runs


def ratios(runs: list[dict[str, Any]], key: str, by: str) -> list[float]:
    """Per repetition: the figure with 2 (processes or workers) over the figure with 1."""
    pairs: dict[int, dict[int, float]] = {}
    for run in runs:
        if run["repeat"] < 0:  # the warm-up
            continue
        pairs.setdefault(run["repeat"], {})[run[by]] = run[key]
    return [round(pair[2] / pair[1], 3) for pair in pairs.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="train rows (the first of Fashion-MNIST's)")
    parser.add_argument("--grid", type=int, default=21, help="grid points, in one pass")
    parser.add_argument("--curve-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=("curve", "grid"), help="measure one of the two (its ratio alone)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    images = base_images()
    data = (images[0][: args.rows], images[1][: args.rows], *images[2:])
    key = "bench-" + secrets.token_hex(8)
    with (
        tempfile.TemporaryDirectory(prefix="mcu-scale-") as tmp,
        postgres_schema("mcu_bench_scale") as db,
        moto_s3() as s3,
    ):
        root = Path(tmp)
        (root / "upload").mkdir()
        manifest, shards = write_upload(root / "upload", args.rows, data)
        weights = root / "weights.safetensors"
        trained_weights(weights, data)
        env = service_env(root, db, s3, key, MCU_GRID_FANOUT="true", MCU_TORCH_THREADS="1", OMP_NUM_THREADS="1")
        port = free_port()
        api = spawn(["-m", "cli", "serve", "--port", str(port)], env, root / "api.log")
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, root / "api.log")
            client = Client(f"http://127.0.0.1:{port}", key, timeout=600)
            registrar = spawn_worker(env, root / "worker-register.log")
            try:
                dataset = client.create_dataset("scale", manifest, [(s.name, s) for s in shards])
                model = client.create_model("scale", "cnn-small", 10, dataset.id, weights, "dataset")
                assert client.wait_model(model.id, timeout=1800).state == "ready"
            finally:
                stop(registrar)
            curve = curve_runs(env, root, client, model.id, args) if args.only != "grid" else []
            grid = grid_runs(env, root, client, model.id, args) if args.only != "curve" else []
        finally:
            stop(api)

    curve_ratios = ratios(curve, "curve_epoch_s", "processes")
    grid_ratios = ratios(grid, "evaluate_s", "workers")
    print(f"## One job's curve ({args.rows} rows, cnn-small, 1 torch thread per process) on 1 and 2 processes\n")
    print(markdown_table(["repeat", "processes", "curve s per epoch"],
                         [[r["repeat"], r["processes"], r["curve_epoch_s"]] for r in curve]))  # fmt: skip
    print(f"\n## One job's grid ({args.grid} points) on 1 and 2 workers\n")
    rows = [[r["repeat"], r["workers"], r["evaluate_s"], r["points_by_worker"], r["parts_by_worker"]] for r in grid]
    print(markdown_table(["repeat", "workers", "evaluate s", "points by worker", "recommended point's parts"], rows))
    result = {
        "machine": machine_info(),
        "args": vars(args) | {"json": None},
        "curve_runs": curve,
        "grid_runs": grid,
        "curve_ratios": curve_ratios,
        "grid_ratios": grid_ratios,
    }
    write_json(args.json, result)
    figures = [f"{name}={statistics.median(values):.3f}" for name, values in
               (("curve_2p_over_1p", curve_ratios), ("grid_2w_over_1w", grid_ratios)) if values]  # fmt: skip
    print(
        f"scale: {' '.join(figures)} curve_ratios={','.join(map(str, curve_ratios))} "
        f"grid_ratios={','.join(map(str, grid_ratios))} rows={args.rows} grid={args.grid}"
    )


if __name__ == "__main__":
    main()
