"""Service overhead: one unlearning job through the whole service against a direct library call.

    python -m bench.overhead --repeats 1 --json bench/results/overhead.json

The job: sklearn's digits, a cnn-small trained once (cached under bench/.cache), forget one class, base
method `rl`, the default configuration, manual selection of the recommended point.

(a) service: `python -m cli serve` and `python -m cli worker` subprocesses on Postgres (a schema of this
    benchmark's own in database `test`), Redis db 13 and moto's S3 server, driven with mcu_client only.
    Timed from the POST to the `awaiting_selection` state, then from the selection POST to `succeeded`, both
    as the client saw them (polling) and from the server's own timestamps (the request's events). The events
    and the request's `timings` (seconds per phase, from `GET /v1/deletion-requests/{id}`) split the service
    time into queue wait, input loading, the phases and the wrap-up.
(b) library: `run_unlearning(...)` then `result.materialize(result.recommended_t)` on the same tensors
    (assembled as the worker assembles them) in a fresh subprocess with the same environment and torch
    threads as the worker (device cpu): no worker code runs in it.
(c) the worker's cost, service − library, in two parts: inside the four phases (the service's `timings`
    against the library's: what watching a job adds to its training, i.e. the cancel checks, progress and
    heartbeat writes, θ_p and per-epoch checkpoint uploads) and around them (queue waits, loading the
    inputs, storing the curve, materializing and publishing the version).
(d) with `--contention`: the library again while one other process keeps one core busy (what an API,
    a poller, Postgres or another tenant does to a job now and then), to show how sensitive the job is.

With `--threads 1,0` the whole comparison runs once per torch thread setting (0: one per core this process
may use; N: N threads, `MCU_TORCH_THREADS` and OMP_NUM_THREADS=N for the worker, the same for the library).
Headline, last line per setting: service time / library time (goal <= 1.15).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    CpuWindow,
    machine_busy_seconds,
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
from mcu_client import Client
from tests.support import free_port, postgres_schema

FORGET_CLASS = 3
BASE_METHOD = "rl"
CONFIG: dict[str, Any] = {}  # every default
LIBRARY_TIMEOUT_SECONDS = 600
POLL_SECONDS = 0.25  # --poll; the headline uses the server's own timestamps, so polling only adds load
PHASES = ("mask", "base", "curve", "evaluate")


# --- inputs: digits and a cnn-small trained once --------------------------------------------------------------


def digits_files(directory: Path) -> dict[str, Any]:
    """The shard (train rows then test rows), the manifest and the trained weights, as files."""
    from cli.digits import digits_upload

    upload = digits_upload()
    files = {
        "shard": directory / upload.SHARD_NAME,
        "manifest": directory / "manifest.csv",
        "weights": directory / "weights.safetensors",
    }
    for name, path in files.items():
        path.write_bytes(getattr(upload, name))
    return {name: str(path) for name, path in files.items()} | {
        "n_train": len(upload.train_labels),
        "input_shape": list(upload.input_shape),
    }


# --- (b): the library in a subprocess (`--library-run SPEC`) ------------------------------------------------


def library_run(spec: dict[str, Any]) -> dict[str, Any]:
    """What the worker computes, called directly; returns wall times and the curve's timings."""
    started = time.perf_counter()
    import torch
    from safetensors.torch import load_file

    from unlearning import (
        ImageDataset,
        Normalization,
        build_model,
        make_unlearning_data,
        model_input_channels,
        run_unlearning,
    )

    torch.set_num_threads(spec["torch_threads"])  # as the worker sets MCU_TORCH_THREADS
    imported = time.perf_counter()
    shard = load_file(spec["shard"])
    n_train = spec["n_train"]
    train_x, test_x = shard["inputs"][:n_train], shard["inputs"][n_train:]
    train_y, test_y = shard["labels"][:n_train], shard["labels"][n_train:]
    dataset = ImageDataset(train_x, train_y, test_x, test_y, 10, Normalization((0.0,), (1.0,)))  # as declared
    model = build_model("cnn-small", 10, tuple(spec["input_shape"]))
    model.load_state_dict(load_file(spec["weights"]))
    model.eval()
    data = make_unlearning_data(
        dataset, channels=model_input_channels("cnn-small", dataset.input_shape[0]), forget_classes=[FORGET_CLASS]
    )
    loaded = time.perf_counter()

    machine_before, self_before = machine_busy_seconds(), time.process_time()
    began = time.perf_counter()
    result = run_unlearning(model, data, BASE_METHOD, CONFIG, device="cpu")
    ran = time.perf_counter()
    result.materialize(result.recommended_t)
    done = time.perf_counter()
    cpu = {
        "wall_s": round(done - began, 3),
        "cores": os.cpu_count() or 1,
        "library_cpu_s": round(time.process_time() - self_before, 3),
        "machine_busy_s": round(machine_busy_seconds() - machine_before, 3),
        "load_avg_1m": os.getloadavg()[0],
    }
    return {
        "cpu": cpu,
        "import_s": imported - started,
        "load_s": loaded - imported,
        "run_s": ran - began,
        "preamble_s": (ran - began) - result.timings["total"],
        "materialize_s": done - ran,
        "timings": result.timings,
        "recommended_t": result.recommended_t,
        "batches": result.training["batches"],
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


def run_library(spec: dict[str, Any], env: dict[str, str], log: Path) -> dict[str, Any]:
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    out = log.with_suffix(".out.json")
    process = spawn(["-m", "bench.overhead", "--library-run", str(spec_path), "--library-out", str(out)], env, log)
    try:
        process.wait(timeout=LIBRARY_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        stop(process)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"library run failed: {log.read_text()[-3000:]}")
    return json.loads(out.read_text())


# --- (a): the service ---------------------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    key: str
    api: subprocess.Popen
    worker: subprocess.Popen
    data_dir: Path

    def client(self) -> Client:
        return Client(self.url, self.key)


def start_service(env: dict[str, str], data_dir: Path, tag: str) -> Service:
    port = free_port()
    api = spawn(["-m", "cli", "serve", "--port", str(port)], env, data_dir / f"api-{tag}.log")
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", api, data_dir / f"api-{tag}.log")
        worker = spawn_worker(env, data_dir / f"worker-{tag}.log")
    except BaseException:
        stop(api)
        raise
    return Service(f"http://127.0.0.1:{port}", env["MCU_BOOTSTRAP_API_KEY"], api, worker, data_dir)


def register_model(client: Client, files: dict[str, Any]) -> str:
    """A new dataset and a model on it, validated by the worker: once its only model erased the class, the
    rows leave the dataset's storage, so every job gets its own."""
    dataset = client.create_dataset(
        "digits", Path(files["manifest"]).read_bytes(), [("digits.safetensors", Path(files["shard"]).read_bytes())]
    )
    model = client.create_model("digits-cnn", "cnn-small", 10, dataset.id, Path(files["weights"]).read_bytes(), "unit")
    return client.wait_model(model.id).id


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def service_breakdown(events: list[dict[str, Any]], created_at: str, timings: dict[str, float]) -> dict[str, float]:
    """Seconds per segment of the service's run, from the server's own timestamps.

    The `mask` phase event is written before the phase starts; the later phase events are written at the
    first progress report of their phase (after its first batch or grid point), so the phases themselves are
    taken from the curve's stored `timings` (measured inside the worker), laid end to end from the mask event.
    """
    created = _at(created_at)
    first: dict[str, float] = {}
    for event in events:
        name = event["type"] + ":" + (event["detail"] or {}).get("phase", event["state"] or "")
        first.setdefault(name, _at(event["at"]))
    claimed = first.get("claimed:running", first.get("state_changed:running", created))
    mask_started = first["phase_started:mask"]
    awaiting = first["state_changed:awaiting_selection"]
    selected = first["state_changed:materializing"]
    materializing = first.get("claimed:materializing", first.get("phase_started:materialize", selected))
    published = first["version_published:materializing"]
    succeeded = first["state_changed:succeeded"]
    segments = {
        "queue_wait_s": claimed - created,
        "load_inputs_and_preamble_s": mask_started - claimed,
        **{f"{p}_s": timings[p] for p in PHASES},
        "store_curve_and_finish_s": awaiting - (mask_started + timings["total"]),
        "run_total_s": awaiting - created,
        "materialize_queue_wait_s": materializing - selected,
        "materialize_s": published - materializing,
        "publish_and_cleanup_s": succeeded - published,
        "selection_total_s": succeeded - selected,
    }
    return {k: round(v, 3) for k, v in segments.items()}


def run_service_job(service: Service, files: dict[str, Any], profile: Path | None, poll: float) -> dict[str, Any]:
    with service.client() as client:
        model_id = register_model(client, files)
        spy = None
        if profile is not None:
            py_spy = Path(sys.executable).with_name("py-spy")
            spy = subprocess.Popen(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(service.worker.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu = CpuWindow({"api": service.api.pid, "worker": service.worker.pid, "bench": os.getpid()})
        posted = time.perf_counter()
        request_id = client.create_request(
            model_id, {"classes": [FORGET_CLASS]}, base_method=BASE_METHOD, config=CONFIG, selection="manual"
        ).id
        body = client.wait(request_id, "awaiting_selection", timeout=600, interval=poll)
        curve_ready = time.perf_counter()
        run_cpu = cpu.stop()
        cpu.start()
        selected = time.perf_counter()
        assert body.curve is not None
        client.select(request_id, body.curve.recommended_t)
        client.wait(request_id, "succeeded", timeout=600, interval=poll)
        succeeded = time.perf_counter()
        selection_cpu = cpu.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
        events = [e.model_dump(mode="json") for e in client.events(request_id)]
        detail = client.get_request(request_id)  # the job's timings and training, as GET shows them
    assert detail.timings is not None and detail.training is not None
    timings = detail.timings.model_dump()
    return {
        "request_id": request_id,
        "run_client_s": round(curve_ready - posted, 3),
        "selection_client_s": round(succeeded - selected, 3),
        "timings": timings,
        "batches": detail.training.batches,
        "breakdown": service_breakdown(events, body.created_at.isoformat(), timings),
        "cpu_run": run_cpu,
        "cpu_selection": selection_cpu,
    }


# --- orchestration ------------------------------------------------------------------------------------------


def one_setting(
    threads: int,
    repeats: int,
    base: dict[str, str],
    files: dict[str, Any],
    data_dir: Path,
    profile: Path | None,
    contention: bool,
    poll: float,
) -> dict[str, Any]:
    env = base | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
    if not threads:
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MKL_NUM_THREADS", None)
    torch_threads = threads or len(os.sched_getaffinity(0))  # the worker's and the library's alike
    env["MCU_TORCH_THREADS"] = str(torch_threads)
    tag = f"threads{threads}"
    service = start_service(env, data_dir, tag)
    rows: list[dict[str, Any]] = []
    try:
        # A cold run first: the worker's first job also builds its clients and fills its shard cache.
        cold = run_service_job(service, files, None, poll)
        for repeat in range(repeats):
            spy = profile.with_name(f"{profile.stem}-{tag}-{repeat}{profile.suffix}") if profile else None
            warm = run_service_job(service, files, spy, poll)
            spec = {**files, "torch_threads": torch_threads}
            plain = run_library(spec, env, data_dir / f"library-{tag}-{repeat}.log")
            row = {"repeat": repeat + 1, "service": warm, "library": plain}
            if contention:
                hog = spawn(["-c", "while True: pass"], env, data_dir / "hog.log")
                try:
                    row["library_with_busy_neighbour"] = run_library(spec, env, data_dir / f"library-hog-{tag}.log")
                finally:
                    stop(hog)
            rows.append(row)
    finally:
        stop(service.worker)
        stop(service.api)
    return {"threads": threads or "default", "service_cold": cold, "runs": rows}


def _other_cores(cpu: dict[str, Any], ours: tuple[str, ...]) -> float:
    """Average cores used by processes other than ours during a window: contention from outside."""
    return (cpu["machine_busy_s"] - sum(cpu[f"{name}_cpu_s"] for name in ours)) / cpu["wall_s"]


def summarize(setting: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in setting["runs"]:
        service, library = row["service"], row["library"]
        service_s = service["breakdown"]["run_total_s"] + service["breakdown"]["selection_total_s"]
        library_s = library["run_s"] + library["materialize_s"]
        inside = service["timings"]["total"] - library["timings"]["total"]  # the four phases, timed in each
        out.append(
            {
                "threads": setting["threads"],
                "repeat": row["repeat"],
                "torch_threads": library["torch_threads"],
                "service_s": round(service_s, 3),
                "service_client_s": round(service["run_client_s"] + service["selection_client_s"], 3),
                "library_s": round(library_s, 3),
                "inside_phases_s": round(inside, 3),
                "around_phases_s": round(service_s - library_s - inside, 3),
                "ratio": round(service_s / library_s, 3),
                "other_cores_service": round(_other_cores(service["cpu_run"], ("worker", "api", "bench")), 2),
                "other_cores_library": round(_other_cores(library["cpu"], ("library",)), 2),
                "library_busy_neighbour_s": round(
                    row["library_with_busy_neighbour"]["run_s"] + row["library_with_busy_neighbour"]["materialize_s"], 3
                )
                if "library_with_busy_neighbour" in row
                else None,
            }
        )
    return out


def print_report(results: list[dict[str, Any]]) -> None:
    summary = [row for setting in results for row in summarize(setting)]
    print("## Service vs library: digits, cnn-small, forget one class, rl, default config\n")
    print(
        markdown_table(
            [
                "torch threads",
                "repeat",
                "service s (server clock)",
                "service s (client)",
                "library s",
                "worker inside the phases s",
                "worker around the phases s",
                "library next to a busy process s",
                "ratio service/library",
                "other processes' cores: service / library run",
            ],
            [
                [
                    f"{r['threads']} ({r['torch_threads']})",
                    r["repeat"],
                    r["service_s"],
                    r["service_client_s"],
                    r["library_s"],
                    r["inside_phases_s"],
                    r["around_phases_s"],
                    r["library_busy_neighbour_s"] or "-",
                    f"**{r['ratio']:.2f}**",
                    f"{r['other_cores_service']:.2f} / {r['other_cores_library']:.2f}",
                ]
                for r in summary
            ],
        )
    )
    print("\ngoal: ratio <= 1.15\n")
    for setting in results:
        for row in setting["runs"]:
            s, lib = row["service"], row["library"]
            b = s["breakdown"]

            def diff(service_s: float, library_s: float) -> str:
                return f"{service_s - library_s:+.3f}"

            print(f"### Breakdown, threads {setting['threads']}, repeat {row['repeat']} (seconds)\n")
            lines = [
                ["queue wait (created -> claimed)", b["queue_wait_s"], "-", "-"],
                [
                    "load inputs + preamble (claimed -> mask)",
                    b["load_inputs_and_preamble_s"],
                    f"{lib['preamble_s']:.3f} (+ load {lib['load_s']:.3f})",
                    diff(b["load_inputs_and_preamble_s"], lib["preamble_s"] + lib["load_s"]),
                ],
            ]
            for phase in PHASES:
                lines.append(
                    [
                        f"{phase} (timings)",
                        b[f"{phase}_s"],
                        round(lib["timings"][phase], 3),
                        diff(b[f"{phase}_s"], lib["timings"][phase]),
                    ]
                )
            lines += [
                ["store θ_c + points + state (-> awaiting_selection)", b["store_curve_and_finish_s"], "-", "-"],
                [
                    "**run total**",
                    f"**{b['run_total_s']}**",
                    f"**{lib['run_s']:.3f}**",
                    diff(b["run_total_s"], lib["run_s"]),
                ],
                ["materialize queue wait", b["materialize_queue_wait_s"], "-", "-"],
                [
                    "materialize",
                    b["materialize_s"],
                    f"{lib['materialize_s']:.3f}",
                    diff(b["materialize_s"], lib["materialize_s"]),
                ],
                ["publish + cleanup", b["publish_and_cleanup_s"], "-", "-"],
                [
                    "**selection total**",
                    f"**{b['selection_total_s']}**",
                    f"**{lib['materialize_s']:.3f}**",
                    diff(b["selection_total_s"], lib["materialize_s"]),
                ],
            ]
            print(markdown_table(["segment", "service", "library", "service − library"], lines))
            inside = s["timings"]["total"] - lib["timings"]["total"]
            print(
                f"\nInside the four phases the service took {inside:+.3f} s against the library (what watching the "
                "job adds: cancel checks, progress and heartbeat writes, θ_p and checkpoint uploads; and whatever else "
                "took the CPU meanwhile: compare the worker's CPU seconds with the library's below; "
                f"{s['batches']} batches in the service, {lib['batches']} in the library)."
            )
            cpu = s["cpu_run"]
            ours = cpu["worker_cpu_s"] + cpu["api_cpu_s"] + cpu["bench_cpu_s"]
            print(
                f"CPU during the service run ({cpu['wall_s']:.2f} s wall, {cpu['cores']} cores): worker "
                f"{cpu['worker_cpu_s']:.2f} s, API {cpu['api_cpu_s']:.2f} s, bench client + moto "
                f"{cpu['bench_cpu_s']:.2f} s, every other process (Postgres, Redis, anything else) "
                f"{cpu['machine_busy_s'] - ours:.2f} s (load average {cpu['load_avg_1m']})."
            )
            c = lib["cpu"]
            print(
                f"CPU during the library run ({c['wall_s']:.2f} s wall): library process "
                f"{c['library_cpu_s']:.2f} s, every other process {c['machine_busy_s'] - c['library_cpu_s']:.2f} s "
                f"(load average {c['load_avg_1m']:.2f})."
            )
            print()


def headlines(results: list[dict[str, Any]]) -> list[str]:
    """One line per thread setting, medians over its repeats."""
    lines = []
    for setting in results:
        rows = summarize(setting)

        def median(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return round(statistics.median(r[key] for r in rows), 3)

        lines.append(
            f"overhead: threads={setting['threads']} ratio={median('ratio'):.2f} service_s={median('service_s')} "
            f"library_s={median('library_s')} inside_phases_s={median('inside_phases_s')} "
            f"around_phases_s={median('around_phases_s')}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads", default="0", help="comma-separated torch thread settings to compare; 0 = one per usable core"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds between the client's GETs")
    parser.add_argument("--contention", action="store_true", help="also time the library next to one busy process")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the worker's measured runs (raw stacks)")
    parser.add_argument("--library-run", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--library-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_run is not None:
        args.library_out.write_text(json.dumps(library_run(json.loads(args.library_run.read_text()))))
        return

    info = machine_info()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="mcu-overhead-") as tmp,
        postgres_schema("mcu_bench_overhead") as db_url,
        moto_s3() as s3,
    ):
        data_dir = Path(tmp)
        files = digits_files(data_dir)
        base = service_env(data_dir, db_url, s3, "bench-" + secrets.token_hex(8))
        for threads in (int(t) for t in args.threads.split(",")):
            print(f"threads {threads or 'default'}: service and library runs ...", file=sys.stderr)
            results.append(
                one_setting(threads, args.repeats, base, files, data_dir, args.profile, args.contention, args.poll)
            )
    print_report(results)
    write_json(
        args.json,
        {
            "benchmark": "overhead",
            "machine": info,
            "poll_seconds": args.poll,
            "forget_class": FORGET_CLASS,
            "base_method": BASE_METHOD,
            "config": CONFIG,
            "summary": [row for setting in results for row in summarize(setting)],
            "settings": results,
        },
    )
    for line in headlines(results):
        print(line)


if __name__ == "__main__":
    main()
