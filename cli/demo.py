"""`mcu demo`: the whole mission over HTTP, on sklearn's digits, in a few minutes on a laptop CPU.

Without `--url` it starts the API and a worker on the embedded default (SQLite, a local folder and a
serverless broker under MCU_DATA_DIR) and stops them afterwards. Then, as a client would: register the
dataset, train and upload a small CNN, ask to forget one digit class, follow the progress, print the
curve, select the recommended point, and print the new version. It is a client of the API like any other:
every call goes through `mcu_client`, the progress display is `mcu requests watch`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from cli.client_commands import print_curve, watch_request
from cli.digits import digits_upload
from mcu_client import Client, wait_for


@contextlib.contextmanager
def local_service(data_dir: Path, port: int, api_key: str) -> Iterator[tuple[str, Callable[[], bool]]]:
    """API and worker as subprocesses on the embedded default; logs go to data_dir/*.log."""
    env = {**os.environ, "MCU_DATA_DIR": str(data_dir), "MCU_BOOTSTRAP_API_KEY": api_key}
    for name in ("MCU_DATABASE_URL", "MCU_BROKER_URL", "MCU_STORAGE_URL"):
        env.pop(name, None)
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    processes = []
    try:
        for role, args in (("api", ["serve", "--port", str(port)]), ("worker", ["worker"])):
            log = (data_dir / f"{role}.log").open("ab")
            processes.append(subprocess.Popen([sys.executable, "-m", "cli", *args], env=env, stdout=log, stderr=log))
        url = f"http://127.0.0.1:{port}"
        alive = lambda: all(p.poll() is None for p in processes)  # noqa: E731

        def ready() -> bool:
            if not alive():
                raise RuntimeError(f"the service did not start; see {data_dir}/api.log and worker.log")
            with Client(url) as client:
                return client.ready()

        wait_for(ready, 120, f"the service; see {data_dir}/api.log and worker.log", interval=0.3)
        yield url, alive
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def register_digits(client: Client) -> tuple[str, str]:
    """Upload sklearn's digits as a dataset and a cnn-small trained on it as a model."""
    upload = digits_upload()
    dataset = client.create_dataset("sklearn-digits", upload.manifest, [(upload.SHARD_NAME, upload.shard)])
    typer.echo(f"registered dataset {dataset.id}: {dataset.num_train} train / {dataset.num_test} test")
    form = upload.model_form(dataset.id)
    uploaded = client.create_model(
        form["name"], form["architecture"], int(form["num_classes"]), dataset.id, upload.weights, form["preprocessing"]
    )
    typer.echo(f"uploaded model {uploaded.id} (cnn-small, version 1); a worker validates it ...")
    model = client.wait_model(uploaded.id)
    metrics = next(client.versions(model.id)).metrics or {}
    typer.echo(
        f"model {model.id} is ready: its weights load into cnn-small; under its declared preprocessing "
        f"({model.preprocessing.preset}: {model.input_adapter}) it scores test accuracy "
        f"{metrics['test_accuracy']:.3f}, train {metrics['retain_accuracy']:.3f}"
    )
    for warning in model.warnings:
        typer.echo(f"  warning: {warning}")
    return dataset.id, model.id


def run_demo(
    client: Client, forget_class: int, alive: Callable[[], bool] | None = None, report: Path | None = None
) -> None:
    started = time.perf_counter()
    _, model_id = register_digits(client)
    request = client.create_request(
        model_id,
        forget={"classes": [forget_class]},
        base_method="rl",
        external_id="DEMO-0001",
        idempotency_key=secrets.token_hex(8),
    )
    typer.echo(
        f"deletion request {request.id}: forget every training image of digit {forget_class} "
        f"({request.forget_count} images), MCU on top of random-label unlearning"
    )
    request = watch_request(client, request.id, ("awaiting_selection",), alive=alive)

    curve = client.curve(request.id)
    print_curve(curve, "the curve from the original (t = 0) to the base-unlearned model (t = 1)")
    recommended = curve.recommended_t

    client.select(request.id, recommended)
    typer.echo(f"selected t = {recommended:.2f}; materialising (BatchNorm statistics from retain data only)")
    request = watch_request(client, request.id, ("succeeded",), alive=alive)

    assert request.selection is not None
    version = request.selection.model_version
    published = next(v for v in client.versions(model_id) if v.version == version)
    with tempfile.TemporaryFile() as weights:
        assert client.download_weights(model_id, version, weights) == published.sha256  # type: ignore[arg-type]
    metrics = published.metrics or {}
    typer.echo(
        f"model {model_id} is now at version {version} (parent {published.parent_version}), sha256 {published.sha256}"
    )
    typer.echo(
        f"  forget accuracy {metrics['forget_accuracy']:.3f}, retain {metrics['retain_accuracy']:.3f}, "
        f"test {metrics['test_accuracy']:.3f}, MIA efficacy {metrics['mia_efficacy']:.2f}"
    )
    events = list(client.events(request.id))
    typer.echo(
        f"audit trail: {len(events)} events ({', '.join(dict.fromkeys(e.type for e in events))}), "
        f"hash-chained (head {events[-1].hash[:16]}…)"
    )
    from domain.signing import verify

    document = client.report(request.id)
    if report is not None:
        report.write_text(json.dumps(document, indent=2) + "\n")
    checked = verify(document, client.signing_keys().trusted())
    criterion = document["report"]["erasure_criterion"]
    typer.echo(
        f"proof-of-erasure report: signature {'VALID' if checked.ok else 'INVALID'} (Ed25519 key "
        f"{checked.key_id}); erasure criterion {'met' if criterion['met'] else 'NOT met'}; due "
        f"{document['report']['request']['due_at'][:10]}, "
        f"{'answered in time' if document['report']['request']['answered_in_time'] else 'answered LATE'}"
    )
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f}s")


def demo_command(
    url: str | None, api_key: str | None, forget_class: int, port: int, report: Path | None = None
) -> None:
    from settings import get_settings

    if url is not None:
        with Client(url, api_key, timeout=120) as client:
            run_demo(client, forget_class, report=report)
        return
    key = secrets.token_urlsafe(24)
    data_dir = get_settings().data_dir
    typer.echo(f"starting the API and a worker on the embedded default in {data_dir}/ ...")
    with local_service(data_dir, port, key) as (service_url, alive), Client(service_url, key, timeout=120) as client:
        typer.echo(f"service ready at {service_url}")
        run_demo(client, forget_class, alive, report)
