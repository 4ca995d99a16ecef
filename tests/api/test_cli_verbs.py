"""Smaller CLI items of issue 26: `mcu models upload` prints validation's verdict and version 1's accuracies,
`requests create --help` shows what a sample id looks like, `requests select` warns which weights the
retention policy will delete, `signing-key list` shows the keys that verify reports. The CLI runs as a real
subprocess against the API; validation and jobs run in this process (no worker here)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcu_client import Client
from tests.support import QUICK_EVIDENCE
from worker import jobs
from worker.services import Services, connect

from .conftest import BOOTSTRAP_KEY, Service, mlp_weights, upload_dataset, upload_model, validated

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}
ACKNOWLEDGE = "erasure criterion not met: a test of the CLI"  # ignored for a point that meets it


def mcu(service: Service, *args: str, terminal: bool = False) -> subprocess.Popen[str]:
    """`mcu ARGS` piped, or as in an 80-column terminal."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCU_", "FORCE_COLOR"))}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args, "--url", service.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean
        | {"MCU_API_KEY": BOOTSTRAP_KEY, "COLUMNS": "80", "NO_COLOR": "1", "TTY_COMPATIBLE": str(int(terminal))},
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    return process.returncode, out, err


@pytest.fixture(scope="module")
def services(service: Service) -> Services:
    return connect(service.settings)


@pytest.fixture(scope="module")
def dataset_id(service: Service) -> str:
    response = upload_dataset(service.client, name="cli-verbs")
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def validate_when_registered(service: Service, services: Services, name: str) -> str:
    """The id of the model the CLI registers as `name`, once it is validated here, as a worker would."""
    from worker.validation import validate_model

    def registered() -> str | None:
        listed = service.client.get("/v1/models", params={"page_size": 500}).json()["items"]
        return next((m["id"] for m in listed if m["name"] == name), None)

    deadline = time.monotonic() + 60
    while (model_id := registered()) is None:
        assert time.monotonic() < deadline, f"the CLI did not register {name}"
        time.sleep(0.2)
    validate_model(services, model_id)
    return model_id


@pytest.mark.parametrize("num_classes", [3, 4], ids=["ready", "invalid"])
def test_models_upload_prints_the_validation_verdict(
    service: Service, services: Services, dataset_id: str, tmp_path: Path, num_classes: int
) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(mlp_weights(seed=200 + num_classes))  # 3-class weights: 4 classes do not load
    name = f"verdict-{secrets.token_hex(4)}"
    upload = ("models", "upload", str(weights), "--name", name, "--architecture", "mlp", "--dataset", dataset_id)
    process = mcu(service, *upload, "--num-classes", str(num_classes), "--preprocessing", "unit")
    model_id = validate_when_registered(service, services, name)
    code, out, err = finished(process)
    if num_classes == 4:
        assert code == 1, out + err
        assert f"model {model_id} is invalid: weights do not" in err, err  # and what is wrong
        assert f"mcu models delete {model_id}" in err
        return
    assert code == 0, err
    metrics = service.client.get(f"/v1/models/{model_id}/versions").json()["items"][0]["metrics"]
    assert (
        f"validation: ready; version 1 test accuracy {metrics['test_accuracy']:.3f}, "
        f"train accuracy {metrics['retain_accuracy']:.3f}"
    ) in " ".join(out.split()), out


def test_requests_create_help_shows_what_a_sample_id_looks_like(service: Service) -> None:
    code, out, _ = finished(mcu(service, "requests", "create", "--help", terminal=True))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out).replace("│", " ")  # no styles, no box
    help_text = " ".join(plain.split())  # wrapped at 80 columns
    assert code == 0 and "the manifest's sample_id column, e.g. s0001,s0002" in help_text, out


def _awaiting_selection(service: Service, services: Services, model_id: str, sample: str) -> str:
    body = {"model_id": model_id, "config": FAST, "forget": {"sample_ids": [sample]}}
    response = service.client.post("/v1/deletion-requests", json=body)
    assert response.status_code == 202, response.text
    jobs.run_request(services, response.json()["id"])
    request = service.client.get(f"/v1/deletion-requests/{response.json()['id']}").json()
    assert request["state"] == "awaiting_selection", request
    return str(request["id"])


def test_select_warns_which_weights_the_retention_policy_deletes(
    service: Service, services: Services, dataset_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = validated(service, upload_model(service.client, dataset_id, mlp_weights(seed=210)))
    assert service.client.get("/v1/meta").json()["keep_superseded_versions"] == 0  # the default

    # Keeping one superseded version: publishing version 2 deletes nothing yet
    monkeypatch.setattr(service.settings, "keep_superseded_versions", 1)
    first = _awaiting_selection(service, services, model["id"], "s1")
    code, out, err = finished(mcu(service, "requests", "select", first, "--recommended", "--acknowledge", ACKNOWLEDGE))
    assert code == 0 and "selected t" in out and "warning" not in err, err
    jobs.materialize_selection(services, first)
    assert service.client.get(f"/v1/models/{model['id']}").json()["current_version"] == 2

    # Keeping none: publishing version 3 deletes the weights of both versions it supersedes
    monkeypatch.setattr(service.settings, "keep_superseded_versions", 0)
    second = _awaiting_selection(service, services, model["id"], "s2")
    code, _, err = finished(mcu(service, "requests", "select", second, "--recommended", "--acknowledge", ACKNOWLEDGE))
    warning = " ".join(err.split())
    assert code == 0 and f"deletes the weights of version(s) 1, 2 of model {model['id']}" in warning, err
    assert "MCU_KEEP_SUPERSEDED_VERSIONS" in warning and f"mcu models download {model['id']} --version 2" in warning


def test_signing_key_list_shows_the_keys_that_verify_a_report(
    service: Service, services: Services, dataset_id: str, tmp_path: Path
) -> None:
    model = validated(service, upload_model(service.client, dataset_id, mlp_weights(seed=220)))
    body = {"model_id": model["id"], "config": FAST, "selection": "auto", "forget": {"sample_ids": ["s3"]}}
    request_id = service.client.post("/v1/deletion-requests", json=body).json()["id"]
    jobs.run_request(services, request_id)
    jobs.materialize_selection(services, request_id)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(service.client.get(f"/v1/deletion-requests/{request_id}/report").json()))

    published = service.anonymous().get("/v1/signing-key").json()
    code, out, _ = finished(mcu(service, "signing-key", "list", terminal=True))
    assert code == 0
    current = next(line for line in out.splitlines() if published["current"]["key_id"] in line)
    assert published["current"]["public_key"] in current and "current" in current, out  # whole, at 80 columns
    assert all(key["key_id"] in out for key in published["keys"])

    code, out, _ = finished(mcu(service, "signing-key", "list", "--json"))
    keys = tmp_path / "keys.json"
    keys.write_text(out)
    assert code == 0 and json.loads(out)["current"]["key_id"] == published["current"]["key_id"]
    checked = subprocess.run(
        [sys.executable, "-m", "cli", "reports", "verify", str(report), "--public-key", str(keys)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0 and "VALID" in checked.stdout, checked.stdout + checked.stderr
    with Client(service.url) as client:  # the same check in Python, with the keys the service publishes
        assert client.verify_report(json.loads(report.read_text())).ok
