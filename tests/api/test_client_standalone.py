"""`pip install ./mcu_client` in a fresh venv: the client alone, with httpx and pydantic and nothing of the
server (no torch, FastAPI, SQLAlchemy, numpy), talks to the real service on both backends; with the `verify`
extra it checks a proof-of-erasure report the service signed, and refuses an edited copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import BOOTSTRAP_KEY, Service, upload_dataset, upload_model, validated

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("torch", "fastapi", "sqlalchemy", "celery", "numpy", "api", "domain", "worker", "settings")
SCRIPT = """
import sys
from mcu_client import Client, NotFound
with Client(sys.argv[1], sys.argv[2]) as client:
    print(client.whoami().name)
    print(len(list(client.models())))
    try:
        client.get_model("00000000-0000-0000-0000-000000000000")
    except NotFound as error:
        print("not found:", error.status)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
print("server modules:", loaded)
"""


VERIFY_SCRIPT = """
import copy, json, sys
import mcu_client
from mcu_client import Client, MissingExtra, verify_report
document = json.load(open(sys.argv[2]))
try:
    with Client(sys.argv[1]) as client:  # GET /v1/signing-key needs no API key
        keys = client.signing_keys()
        online = client.verify_report(document)
except MissingExtra as error:
    print("missing:", error)
    raise SystemExit(0)
saved = json.loads(json.dumps(keys.model_dump(mode="json")))  # as an auditor keeps GET /v1/signing-key's body
edited = copy.deepcopy(document)
edited["report"]["erasure_criterion"]["met"] = not edited["report"]["erasure_criterion"]["met"]
print("online:", online.ok, online.key_id == document["signature"]["key_id"], online.reason)
print("offline:", bool(verify_report(document, saved)), bool(verify_report(document, keys.trusted())))
print("edited:", verify_report(edited, saved).ok, verify_report(edited, saved).reason)
print("server modules:", sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(","))))
"""


def _run(python: Path, script: str, *args: str) -> list[str]:
    run = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=python.parent,  # not the repository: its packages must not be importable
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder is copied first: the install proves it needs nothing beside it (and leaves no build/ here)."""
    tmp = tmp_path_factory.mktemp("client")
    source = tmp / "mcu_client"
    shutil.copytree(ROOT / "mcu_client", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    yield python


def _signed_report(service: Service) -> dict:
    """A real report: a request on a model of its own, its job and publication run in this process."""
    from worker import jobs
    from worker.services import connect

    model = validated(
        service, upload_model(service.client, upload_dataset(service.client, name="standalone").json()["id"])
    )
    fast = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}}
    body = {"model_id": model["id"], "config": fast, "selection": "auto", "forget": {"sample_ids": ["s1"]}}
    request_id = service.client.post("/v1/deletion-requests", json=body).json()["id"]
    services = connect(service.settings)
    jobs.run_request(services, request_id)
    jobs.materialize_selection(services, request_id)
    report = service.client.get(f"/v1/deletion-requests/{request_id}/report")
    assert report.status_code == 200, report.text
    return report.json()


def test_the_client_alone_verifies_a_signed_report(client_venv: Path, service: Service, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_signed_report(service), indent=2))  # re-indented, as a saved copy may be
    source = client_venv.parents[2] / "mcu_client"  # the copy the fixture installed
    pip = [str(client_venv), "-m", "pip"]
    if subprocess.run([*pip, "show", "-q", "cryptography"], capture_output=True).returncode != 0:  # first backend
        # Without the extra: one clear error naming it, at the first verification
        (missing,) = _run(client_venv, VERIFY_SCRIPT, service.url, str(report), "")
        assert missing.startswith("missing:") and "mcu-client[verify]" in missing, missing
    install = subprocess.run(
        [*pip, "install", "-q", "--disable-pip-version-check", f"{source}[verify]"],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    online, offline, edited, loaded = _run(client_venv, VERIFY_SCRIPT, service.url, str(report), ",".join(SERVER_ONLY))
    assert online == "online: True True signature valid"
    assert offline == "offline: True True"
    assert edited.startswith("edited: False the signature does not match the report"), edited
    assert loaded == "server modules: []"


def test_the_client_installs_alone_and_speaks_to_the_service(client_venv: Path, service: Service) -> None:
    installed = subprocess.run(
        [str(client_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "mcu-client==" in installed and "httpx==" in installed and "pydantic==" in installed
    assert not [name for name in ("torch", "fastapi", "sqlalchemy", "numpy") if f"\n{name}==" in f"\n{installed}"]
    run = subprocess.run(
        [str(client_venv), "-c", SCRIPT, service.url, BOOTSTRAP_KEY, ",".join(SERVER_ONLY)],
        capture_output=True,
        text=True,
        cwd=client_venv.parent,  # not the repository: its packages must not be importable
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    name, models, not_found, loaded = run.stdout.splitlines()
    assert name and int(models) >= 0
    assert not_found == "not found: 404"
    assert loaded == "server modules: []"


def test_the_client_distribution_keeps_the_service_version() -> None:
    service = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    client = tomllib.loads((ROOT / "mcu_client" / "pyproject.toml").read_text())["project"]
    assert client["version"] == service["version"]
    assert sorted(d.split(">")[0] for d in client["dependencies"]) == ["httpx", "pydantic"]
    assert [d.split(">")[0] for d in client["optional-dependencies"]["verify"]] == ["cryptography"]
