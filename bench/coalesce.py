"""Coalescing (issue 15): 20 deletion requests of 5 samples each for one model, run as one coalesced job or
one job per request, in-process on the embedded default (the API app and the functions the Celery tasks
call, as tests/worker/test_coalesce.py does).

    python -m bench.coalesce [--requests 20 --per-request 5 --seed 0 --json docs/results/coalesce.json]

Measures the time from the first submission until every request succeeded (`selection: auto`; a request
whose curve fails the erasure criterion gets its recommended point with an acknowledgement, as an operator
would), and the quality of the version each way ends with against a cnn-small retrained without all the
samples (UA, RA, TA, MIA efficacy and Avg. Gap, measured as bench.quality measures them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as load_tensors

from api.app import create_app
from bench.common import markdown_table, write_json
from bench.quality import METRICS, measured
from cli.digits import DigitsUpload, digits_upload
from settings import Settings
from unlearning import load_digits_dataset, make_unlearning_data
from unlearning.architectures import build_model
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import EvalConfig, resolve_config
from unlearning.data import ImageDataset, Normalization
from unlearning.metrics import EvalSets, avg_gap
from unlearning.training import JobHooks
from worker import jobs
from worker.services import connect
from worker.validation import validate_model

WINDOW = 1.0  # MCU_COALESCE_SECONDS of the coalesced run
ACK = "erasure criterion not met: benchmark run"


def run(upload: DigitsUpload, chunks: list[list[str]], coalesce: bool) -> tuple[float, int, dict[str, Any]]:
    """Seconds until every request succeeded, the number of jobs run, and the final version's weights."""
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="mcu-bench-coalesce-")),
        bootstrap_api_key="k",
        coalesce_seconds=WINDOW if coalesce else 0.0,
    )
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    dataset = client.post("/v1/datasets", data={"name": "digits"}, files=upload.files()).json()
    model_id = client.post(
        "/v1/models", data=upload.model_form(dataset["id"]), files={"weights": ("w.safetensors", upload.weights)}
    ).json()["id"]
    validate_model(services, model_id)

    started = time.perf_counter()
    ids = [
        client.post(
            "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": chunk}, "selection": "auto"}
        ).json()["id"]
        for chunk in chunks
    ]
    if coalesce:
        time.sleep(WINDOW)  # the window a new job waits for others to join
    jobs_run = 0
    while True:  # one list call a pass: the loop's own reads stay out of the measured time as far as they can
        listed = client.get("/v1/deletion-requests", params={"model_id": model_id, "page_size": len(ids)}).json()
        states = {r["id"]: r for r in listed["items"]}
        pending = [states[i] for i in ids if states[i]["state"] != "succeeded"]
        if not pending:
            break
        request = pending[0]
        if request["job_id"]:
            request = states[request["job_id"]]
        if request["state"] == "queued":
            jobs.run_request(services, request["id"])
            jobs_run += 1
        elif request["state"] == "awaiting_selection":  # auto withheld: the operator takes the recommended point
            client.post(
                f"/v1/deletion-requests/{request['id']}/selection",
                json={"t": request["curve"]["recommended_t"], "acknowledge": ACK},
            )
        elif request["state"] == "materializing":
            jobs.materialize_selection(services, request["id"])
        else:
            raise RuntimeError(f"request {request['id']} is {request['state']}: {request['error']}")
    seconds = time.perf_counter() - started
    version = client.get(f"/v1/models/{model_id}").json()["current_version"]
    weights = client.get(f"/v1/models/{model_id}/versions/{version}/weights")
    return seconds, jobs_run, load_tensors(weights.content)


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
