"""One job's grid on one worker and on two (MCU_GRID_FANOUT; worker/grid.py, docs/scaling.md).

    python -m bench.scale --json docs/results/scale.json

A real `mcu serve` on Postgres (a schema of its own), Redis as broker, moto S3, and `mcu worker` processes with
one torch thread each, all with MCU_GRID_FANOUT=true. Data: the first `--rows` Fashion-MNIST train images and its
10,000 test images (Debian package `dataset-fashion-mnist`), a cnn-small trained one epoch on 6,000 of them.
Each repetition submits the same request (forget 1,000 seeded random rows; base `ga` 1 epoch, curve 1 epoch,
`--grid` points in one pass, default evaluation samples) once with one worker running and once with a second
worker started for it, alternating which goes first; the figure is the job's `evaluate` phase (its grid and
the recommended point), from `GET /v1/deletion-requests/{id}` `timings`. Last line:
`scale: grid_2w_over_1w=<median ratio> ...`. The curve's data-parallel training (curve_2p_over_1p) is not built.
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
    free_port,
    machine_info,
    markdown_table,
    moto_s3,
    postgres_schema,
    service_env,
    spawn,
    spawn_worker,
    stop,
    wait_http_ok,
    write_json,
)
from bench.memory import base_images, trained_weights, write_upload
from mcu_client import Client

FORGET_ROWS = 1000


def one_job(client: Client, model_id: str, rows: int, grid: int) -> dict[str, Any]:
    forget = np.random.default_rng(1).choice(rows, FORGET_ROWS, replace=False)
    config = {"epochs": 1, "base": {"epochs": 1}, "grid_points": grid, "grid_refine": False}
    ids = [f"c0-{i}" for i in sorted(forget.tolist())]
    request = client.create_request(model_id, {"sample_ids": ids}, base_method="ga", config=config)
    body = client.wait(request.id, "awaiting_selection", timeout=3600, interval=1.0)
    detail = client.get_request(request.id)
    assert detail.timings is not None and detail.training is not None
    client.cancel(body.id)
    return {
        "evaluate_s": round(detail.timings.evaluate, 2),
        "points_by_worker": detail.training.grid_points_by_worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="train rows (the first of Fashion-MNIST's)")
    parser.add_argument("--grid", type=int, default=21, help="grid points, in one pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    images = base_images()
    data = (images[0][: args.rows], images[1][: args.rows], *images[2:])
    key = "bench-" + secrets.token_hex(8)
    runs: list[dict[str, Any]] = []
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
        first = second = None
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, root / "api.log")
            first = spawn_worker(env, root / "worker-1.log")
            client = Client(f"http://127.0.0.1:{port}", key, timeout=600)
            dataset = client.create_dataset("scale", manifest, [(s.name, s) for s in shards])
            model = client.create_model("scale", "cnn-small", 10, dataset.id, weights, "dataset")
            assert client.wait_model(model.id, timeout=1800).state == "ready"
            for repeat in range(args.repeats):
                for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                    if workers == 2:
                        second = spawn_worker(env, root / "worker-2.log")
                    print(f"repeat {repeat}: {workers} worker(s)", file=sys.stderr)
                    runs.append(
                        {"repeat": repeat, "workers": workers} | one_job(client, model.id, args.rows, args.grid)
                    )
                    stop(second)
                    second = None
        finally:
            stop(second)
            stop(first)
            stop(api)

    by_repeat = {r["repeat"]: {} for r in runs}
    for run in runs:
        by_repeat[run["repeat"]][run["workers"]] = run["evaluate_s"]
    ratios = [round(pair[2] / pair[1], 3) for pair in by_repeat.values()]
    rows = [
        [r["repeat"], r["workers"], r["evaluate_s"], r["points_by_worker"] and len(r["points_by_worker"])] for r in runs
    ]
    print(f"## One job's grid ({args.grid} points, {args.rows} rows, cnn-small) on 1 and 2 workers\n")
    print(markdown_table(["repeat", "workers", "evaluate s", "workers that measured"], rows))
    result = {"machine": machine_info(), "args": vars(args) | {"json": None}, "runs": runs, "ratios": ratios}
    write_json(args.json, result)
    print(
        f"scale: grid_2w_over_1w={statistics.median(ratios):.3f} ratios={','.join(map(str, ratios))} grid={args.grid}"
    )


if __name__ == "__main__":
    main()
