"""`mcu demo`: the whole mission over HTTP, on sklearn's digits, in a few minutes on a laptop CPU.

Without `--url` it starts the API and a worker on the embedded default (SQLite, a local folder and a
serverless broker under MCU_DATA_DIR) and stops them afterwards. Then, as a client would: register the
dataset, train and upload a small CNN, ask to forget one digit class, follow the progress, print the
curve, select the recommended point, and print the new version.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import typer

from cli.digits import digits_upload
from domain.catalog import ModelState
from domain.lifecycle import State

POLL_SECONDS = 0.5


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
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the service did not start; see {data_dir}/api.log and worker.log")
            time.sleep(0.3)
        yield url, lambda: all(p.poll() is None for p in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _check(response: httpx.Response, expected: int) -> dict:
    if response.status_code != expected:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                           f"{response.text[:500]}")
    return response.json()


def register_digits(client: httpx.Client) -> tuple[str, str]:
    """Upload sklearn's digits as a dataset and a cnn-small trained on it as a model."""
    upload = digits_upload()
    dataset = _check(client.post("/v1/datasets", data={"name": "sklearn-digits"}, files=upload.files()), 201)
    typer.echo(f"registered dataset {dataset['id']}: {dataset['num_train']} train / {dataset['num_test']} test")
    uploaded = _check(client.post("/v1/models", data=upload.model_form(dataset["id"]),
                                  files={"weights": ("model.safetensors", upload.weights)}), 201)
    typer.echo(f"uploaded model {uploaded['id']} (cnn-small, version 1); a worker validates it ...")
    model = uploaded
    while model["state"] == ModelState.VALIDATING:
        time.sleep(0.2)
        model = _check(client.get(f"/v1/models/{uploaded['id']}"), 200)
    if model["state"] != ModelState.READY:
        raise RuntimeError(f"the model is {model['state']}: {model['error']}")
    metrics = client.get(f"/v1/models/{model['id']}/versions").json()["items"][0]["metrics"]
    typer.echo(f"model {model['id']} is ready: its weights load into cnn-small; under its declared preprocessing "
               f"({model['preprocessing']['preset']}: {model['input_adapter']}) it scores test accuracy "
               f"{metrics['test_accuracy']:.3f}, train {metrics['retain_accuracy']:.3f}")
    for warning in model["warnings"]:
        typer.echo(f"  warning: {warning}")
    return dataset["id"], model["id"]


def follow(client: httpx.Client, request_id: str, until: tuple[str, ...], alive: Callable[[], bool]) -> dict:
    """Poll the request, drawing a progress bar, until it reaches one of `until` (or fails)."""
    last_line = ""
    while True:
        if not alive():
            raise RuntimeError("the local API or worker stopped; see the logs in MCU_DATA_DIR")
        request = _check(client.get(f"/v1/deletion-requests/{request_id}"), 200)
        progress = request["progress"]
        filled = int(progress["fraction"] * 30)
        epoch = f" epoch {progress['epoch']}/{progress['epochs']}" if progress.get("epoch") else ""
        line = f"  {request['state']:<18} {progress['phase']:<11} [{'#' * filled}{'.' * (30 - filled)}]{epoch}"
        if line != last_line:
            typer.echo("\r" + line.ljust(len(last_line)), nl=False)
            last_line = line
        if request["state"] in until or request["state"] in (State.FAILED, State.CANCELLED):
            typer.echo("")
            if request["state"] == State.FAILED:
                raise RuntimeError(f"request failed: {request['error']}")
            return request
        time.sleep(POLL_SECONDS)


def run_demo(client: httpx.Client, forget_class: int, alive: Callable[[], bool] = lambda: True) -> None:
    started = time.perf_counter()
    _, model_id = register_digits(client)
    request = _check(client.post("/v1/deletion-requests", json={
        "model_id": model_id, "forget": {"classes": [forget_class]}, "base_method": "rl",
        "external_id": "DEMO-0001"}, headers={"Idempotency-Key": secrets.token_hex(8)}), 202)
    typer.echo(f"deletion request {request['id']}: forget every training image of digit {forget_class} "
               f"({request['forget_count']} images), MCU on top of random-label unlearning")
    request = follow(client, request["id"], (State.AWAITING_SELECTION,), alive)

    curve = _check(client.get(f"/v1/deletion-requests/{request['id']}/curve"), 200)
    typer.echo("\n     t  forget_acc  retain_acc  test_acc   MIA")
    recommended = curve["recommended_t"]
    nearest = min(curve["points"], key=lambda p: abs(p["t"] - recommended))
    for p in curve["points"]:
        mark = "  <- nearest grid point to the recommended t" if p is nearest else ""
        typer.echo(f"  {p['t']:4.2f}  {p['forget_accuracy']:10.3f}  {p['retain_accuracy']:10.3f}  "
                   f"{p['test_accuracy']:8.3f}  {p['mia_efficacy']:4.2f}{mark}")
    targets = curve["targets"]
    typer.echo(f"targets: retain {targets['retain_accuracy']:.3f}, forget {targets['forget_accuracy']:.3f}; "
               f"recommended t = {recommended:.2f}; effective region {curve['effective_region']}")

    _check(client.post(f"/v1/deletion-requests/{request['id']}/selection", json={"t": recommended}), 202)
    typer.echo(f"selected t = {recommended:.2f}; materialising (BatchNorm statistics from retain data only)")
    request = follow(client, request["id"], (State.SUCCEEDED,), alive)

    version = request["selection"]["model_version"]
    versions = _check(client.get(f"/v1/models/{model_id}/versions"), 200)["items"]
    published = next(v for v in versions if v["version"] == version)
    weights = client.get(f"/v1/models/{model_id}/versions/{version}/weights")
    assert hashlib.sha256(weights.content).hexdigest() == published["sha256"]
    metrics = published["metrics"]
    typer.echo(f"model {model_id} is now at version {version} (parent {published['parent_version']}), "
               f"sha256 {published['sha256']}")
    typer.echo(f"  forget accuracy {metrics['forget_accuracy']:.3f}, retain {metrics['retain_accuracy']:.3f}, "
               f"test {metrics['test_accuracy']:.3f}, MIA efficacy {metrics['mia_efficacy']:.2f}")
    events = _check(client.get(f"/v1/deletion-requests/{request['id']}/events", params={"page_size": 500}),
                    200)["items"]
    typer.echo(f"audit trail: {len(events)} events ({', '.join(dict.fromkeys(e['type'] for e in events))})")
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f}s")


def demo_command(url: str | None, api_key: str | None, forget_class: int, port: int) -> None:
    from settings import get_settings

    if url is not None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as client:
            run_demo(client, forget_class)
        return
    key = secrets.token_urlsafe(24)
    data_dir = get_settings().data_dir
    typer.echo(f"starting the API and a worker on the embedded default in {data_dir}/ ...")
    with local_service(data_dir, port, key) as (service_url, alive), \
            httpx.Client(base_url=service_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        typer.echo(f"service ready at {service_url}")
        run_demo(client, forget_class, alive)
