"""Coalescing (issue 15): 20 deletion requests of 5 samples each for one model, run as one coalesced job or
one job per request, through the service: `python -m cli serve` and one `python -m cli worker` subprocess on
the embedded default (SQLite, a folder, the SQL broker), `MCU_COALESCE_SECONDS` set per way, driven with
mcu_client.

    python -m bench.coalesce [--requests 20 --per-request 5 --seed 0 --json docs/results/coalesce.json]

Measures the time from the first submission until every request succeeded, as a user sees it (real worker
dispatch, polled every 0.1 s; `selection: auto`; a request whose curve fails the erasure criterion gets its
recommended point with an acknowledgement, as an operator would), the curve jobs the worker ran (its
`phase_started` mask events: a request whose curve was trained on a version another one replaced first is
trained again), and the quality of the version each way ends with against a cnn-small retrained without all
the samples (UA, RA, TA, MIA efficacy and Avg. Gap, measured as bench.quality measures them).
"""

from __future__ import annotations

import argparse
import io
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors

from bench.common import embedded_env, markdown_table, spawn, spawn_worker, stop, wait_http_ok, write_json
from bench.quality import METRICS, measured
from cli.digits import DigitsUpload, digits_upload
from mcu_client import Client
from tests.support import free_port
from unlearning import load_digits_dataset, make_unlearning_data
from unlearning.architectures import build_model
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, resolve_config
from unlearning.data import ImageDataset, Normalization
from unlearning.metrics import EvalSets, avg_gap
from unlearning.training import JobHooks

WINDOW = 1.0  # MCU_COALESCE_SECONDS of the coalesced run
POLL_SECONDS = 0.1  # between the client's list calls
ACK = "erasure criterion not met: benchmark run"


def run(upload: DigitsUpload, chunks: list[list[str]], coalesce: bool) -> tuple[float, int, dict[str, Any]]:
    """Seconds until every request succeeded, the number of curve jobs run, and the final version's weights."""
    key = "bench-" + secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="mcu-bench-coalesce-") as tmp:
        data_dir = Path(tmp)
        env = embedded_env(data_dir, key, MCU_COALESCE_SECONDS=str(WINDOW if coalesce else 0.0))
        port = free_port()
        api = spawn(["-m", "cli", "serve", "--port", str(port)], env, data_dir / "api.log")
        worker = None
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, data_dir / "api.log")
            worker = spawn_worker(env, data_dir / "worker.log")  # started (imports done) before the clock runs
            with Client(f"http://127.0.0.1:{port}", key, timeout=120) as client:
                return drive(client, upload, chunks)
        finally:
            stop(worker)
            stop(api)


def drive(client: Client, upload: DigitsUpload, chunks: list[list[str]]) -> tuple[float, int, dict[str, Any]]:
    dataset = client.create_dataset("digits", upload.manifest, [(upload.SHARD_NAME, upload.shard)])
    model_id = client.create_model("digits-cnn", "cnn-small", 10, dataset.id, upload.weights, upload.PREPROCESSING).id
    client.wait_model(model_id, timeout=300)

    started = time.perf_counter()
    ids = [client.create_request(model_id, {"sample_ids": c}, selection="auto").id for c in chunks]
    while True:  # one list call a pass: the loop's own reads stay out of the worker's way as far as they can
        states = {r.id: r for r in client.requests(model_id=model_id, page_size=len(ids))}
        pending = [states[i] for i in ids if states[i].state != "succeeded"]
        if not pending:
            break
        for request in pending:
            if request.state in ("failed", "cancelled"):
                raise RuntimeError(f"request {request.id} is {request.state}: {request.error}")
            if request.state == "awaiting_selection" and request.curve is not None:
                # auto withheld: the operator takes the recommended point (sent to one member, it holds for all)
                client.select(request.id, request.curve.recommended_t, ACK)
                break
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    jobs_run = sum(
        1
        for i in ids
        for event in client.events(i)
        if event.type == "phase_started" and (event.detail or {}).get("phase") == "mask"
    )
    version = client.get_model(model_id).current_version
    weights = io.BytesIO()
    client.download_weights(model_id, version, weights)
    return seconds, jobs_run, load_tensors(weights.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--per-request", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    upload = digits_upload()
    digits = load_digits_dataset()  # the upload's split: train position p is sample d<p>
    dataset = ImageDataset(
        digits.train_inputs,
        digits.train_labels,
        digits.test_inputs,
        digits.test_labels,
        10,
        Normalization((0.0,), (1.0,)),
    )  # the model's declared "unit" preprocessing
    rows = torch.randperm(len(digits.train_labels), generator=torch.Generator().manual_seed(args.seed))
    rows = rows[: args.requests * args.per_request].sort().values
    chunks = [[f"d{r}" for r in rows[i :: args.requests].tolist()] for i in range(args.requests)]

    data = make_unlearning_data(dataset, channels=1, forget_indices=rows)
    sets = EvalSets.draw(data, EvalConfig(), args.seed)
    original = build_model("cnn-small", 10, dataset.input_shape)
    original.load_state_dict(load_tensors(upload.weights))
    started = time.perf_counter()
    retrained = run_base_method(
        "retrain", original, data, resolve_config(None, "retrain").base, MethodContext(args.seed, JobHooks())
    )
    retrain_s = time.perf_counter() - started
    reference = measured(retrained, sets, data)

    results: list[dict[str, Any]] = [
        {"way": "retrain without all", "seconds": retrain_s, "jobs": 1}
        | {k: getattr(reference, m) for k, m in METRICS.items()}
        | {"avg_gap": 0.0}
    ]
    for label, coalesce in (("one job per request", False), ("coalesced", True)):
        seconds, jobs_run, weights = run(upload, chunks, coalesce)
        model = build_model("cnn-small", 10, dataset.input_shape)
        model.load_state_dict(weights)
        metrics = measured(model.eval(), sets, data)
        results.append(
            {"way": label, "seconds": seconds, "jobs": jobs_run}
            | {k: getattr(metrics, m) for k, m in METRICS.items()}
            | {"avg_gap": 100 * avg_gap(metrics, reference)}
        )
        print(f"{label}: {seconds:.1f} s, {jobs_run} jobs, gap {results[-1]['avg_gap']:.2f}", flush=True)
    print(
        f"\n{args.requests} requests of {args.per_request} digits samples, seed {args.seed} (UA, RA, TA, MIA in %; "
        "Avg. Gap in points against the retrained model)\n"
    )
    print(
        markdown_table(
            ["way", "time until all succeeded (s)", "jobs", *METRICS, "Avg. Gap"],
            [
                [
                    r["way"],
                    round(r["seconds"], 1),
                    r["jobs"],
                    *(round(100 * r[k], 2) for k in METRICS),
                    round(r["avg_gap"], 2),
                ]
                for r in results
            ],
        )
    )
    write_json(
        args.json,
        {
            "requests": args.requests,
            "per_request": args.per_request,
            "seed": args.seed,
            "window_s": WINDOW,
            "rows": results,
        },
    )


if __name__ == "__main__":
    main()
