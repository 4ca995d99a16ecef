"""One source for base methods and for states (issue 28): a base method declared in one place reaches the API,
the CLI and the benchmarks; a state added to the transition table reaches GET /v1/meta, the client, the CLI,
the console and `cancel`. Both are added for one test (monkeypatched) and gone after it."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner, Result

from cli.client_commands import requests_app
from domain.lifecycle import TRANSITIONS, State
from mcu_client import Client, RequestEnded
from mcu_client.types import TERMINAL_STATES
from models import DeletionRequest
from unlearning import config as registry
from unlearning.config import BaseMethodConfig, declare_base_method

from .conftest import BOOTSTRAP_KEY, Service, assert_problem, upload_dataset, upload_model, validated

NEW_METHOD = "test_halve"
NEW_STATE = "on_legal_hold"  # a state the service does not have


@pytest.fixture(scope="module")
def model_id(service: Service) -> str:
    """A ready model of this module's own, so its requests show in no other test's lists."""
    dataset = upload_dataset(service.client, name="meta-tiny")
    assert dataset.status_code == 201, dataset.text
    return str(validated(service, upload_model(service.client, dataset.json()["id"]))["id"])


@pytest.fixture
def mcu(service: Service) -> Iterator[Client]:
    with Client(service.url, BOOTSTRAP_KEY) as client:
        yield client


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base-method registry as it is, restored after the test (whatever the test declares is dropped)."""
    monkeypatch.setattr(registry, "BASE_METHODS", dict(registry.BASE_METHODS))


def cli(service: Service, *args: str) -> Result:
    """`mcu requests ...` in this process (so it talks to this service as the test changed it)."""
    env = {"MCU_URL": service.url, "MCU_API_KEY": BOOTSTRAP_KEY, "COLUMNS": "200"}
    return CliRunner().invoke(requests_app, list(args), env=env)


def submit(service: Service, model_id: str, **body: object) -> dict:
    response = service.client.post(
        "/v1/deletion-requests", json={"model_id": model_id, "forget": {"classes": [0]}} | body
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def cancel(service: Service, request_id: str) -> dict:
    response = service.client.post(f"/v1/deletion-requests/{request_id}/cancel")
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_a_base_method_declared_in_one_place_reaches_the_api_the_cli_and_the_bench(
    service: Service, model_id: str, scratch_registry: None, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"base_method": NEW_METHOD, "config": {"base": {"lr": 0.25}}}
    refused = service.client.post(
        "/v1/deletion-requests", json={"model_id": model_id, "forget": {"classes": [0]}} | body
    )
    assert_problem(refused, 422, f"unknown base method '{NEW_METHOD}'")

    declare_base_method(NEW_METHOD, BaseMethodConfig(epochs=1, lr=0.5, batch_size=32), "test only: halves the lr")

    # The API: served with its settings, and accepted with them (and only them) in a request.
    served = {m["name"]: m for m in service.client.get("/v1/meta").json()["base_methods"]}
    assert served[NEW_METHOD]["defaults"] == {"epochs": 1, "lr": 0.5, "batch_size": 32}
    schema = served[NEW_METHOD]["config_schema"]
    assert set(schema["properties"]) == {"epochs", "lr", "batch_size"} and schema["additionalProperties"] is False
    assert schema["properties"]["lr"] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 10.0, "default": 0.5}
    assert "retrain" not in served  # declared, but not offered by the service
    request = submit(service, model_id, **body)
    assert request["base_method"] == NEW_METHOD and request["config"]["base"]["lr"] == 0.25
    assert request["config"]["base"]["momentum"] is None  # a setting the method does not use...
    unused = {"base_method": NEW_METHOD, "config": {"base": {"momentum": 0.5}}}
    assert_problem(
        service.client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"classes": [0]}} | unused),
        422,
        "base.momentum",
    )  # ...is refused

    # The CLI: lists it from the service and submits it.
    listed = cli(service, "methods")
    assert listed.exit_code == 0, listed.output
    assert NEW_METHOD in listed.output and "test only: halves the lr" in listed.output
    created = cli(service, "create", "--model", model_id, "--classes", "1", "--base-method", NEW_METHOD, "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["base_method"] == NEW_METHOD
    assert "mcu requests methods" in cli(service, "create", "--help").output  # no list of its own in the help

    # The benchmark: runs every offered method by default.
    import bench.quality

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
        patch.setattr(sys, "argv", ["bench.quality", "--help"])
        bench.quality.main()
    assert done.value.code == 0
    assert f",{NEW_METHOD}" in capsys.readouterr().out.replace("\n", "").replace(" ", "")

    for request_id in (request["id"], json.loads(created.output)["id"]):
        cancel(service, request_id)


def test_a_state_added_to_the_transition_table_reaches_meta_the_client_the_cli_and_cancel(
    service: Service, model_id: str, mcu: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = submit(service, model_id)["id"]
    unknown = cli(service, "watch", request_id, "--until", NEW_STATE)
    assert unknown.exit_code == 2 and "states of the service" in unknown.output, unknown.output

    # A request is held, then is queued or cancelled.
    monkeypatch.setitem(TRANSITIONS, NEW_STATE, frozenset({State.QUEUED, State.CANCELLED}))  # type: ignore[index]

    served = service.client.get("/v1/meta").json()
    assert served["states"][-1] == NEW_STATE and NEW_STATE in served["open_states"]
    assert served["transitions"][NEW_STATE] == ["queued", "cancelled"]
    meta = mcu.meta()
    assert NEW_STATE in meta.states and meta.transitions[NEW_STATE] == ["queued", "cancelled"]
    shown = cli(service, "states")
    assert shown.exit_code == 0, shown.output
    assert any(NEW_STATE in line and "queued, cancelled" in line for line in shown.output.splitlines()), shown.output

    # `cancel` reads its states from the table: a request waiting for approval is cancelled at once.
    with service.app.state.session_factory() as session, session.begin():  # type: ignore[attr-defined]
        session.execute(update(DeletionRequest).where(DeletionRequest.id == request_id).values(state=NEW_STATE))
    assert cancel(service, request_id)["state"] == "cancelled"

    # The CLI accepts the new state to wait for, and stops at a final one.
    watched = cli(service, "watch", request_id, "--until", NEW_STATE)
    assert watched.exit_code == 1 and "cancelled" in watched.output, watched.output


def test_the_client_stops_at_the_final_states_the_server_serves(
    service: Service, model_id: str, mcu: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not at a list of its own: here the server's table makes `queued` final."""
    request_id = submit(service, model_id)["id"]
    monkeypatch.setitem(TRANSITIONS, State.QUEUED, frozenset())
    with pytest.raises(RequestEnded) as ended:
        mcu.wait(request_id, until="awaiting_selection", timeout=10, interval=0.05)
    assert ended.value.request.state == "queued"
    monkeypatch.undo()
    cancel(service, request_id)


def test_the_clients_offline_final_states_are_the_servers(mcu: Client) -> None:
    """`DeletionRequest.finished` works without a server from the client's copy; it must not drift."""
    meta = mcu.meta()
    assert set(TERMINAL_STATES) == set(meta.terminal_states)
    assert set(meta.states) == set(meta.open_states) | set(meta.terminal_states)
    assert meta.default_base_method in {m.name for m in meta.base_methods}


def test_the_console_lists_the_served_states(
    service: Service, model_id: str, monkeypatch: pytest.MonkeyPatch, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    request_id = submit(service, model_id)["id"]
    monkeypatch.setitem(TRANSITIONS, NEW_STATE, frozenset({State.QUEUED, State.CANCELLED}))  # type: ignore[index]
    driver: Any = browser
    driver.get(f"{service.url}/console#/requests")
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_elements(By.ID, "api-key"))[0].send_keys(BOOTSTRAP_KEY)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    options = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#filter-state option"))
    assert [o.get_attribute("value") for o in options] == ["", *served_states(service)]
    assert NEW_STATE in [o.text for o in options]
    # A request's page offers to cancel it as the served transitions allow.
    driver.get(f"{service.url}/console#/requests/{request_id}")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=queued]"))
    assert driver.find_elements(By.ID, "cancel"), driver.find_element(By.ID, "main").text
    cancel(service, request_id)


def served_states(service: Service) -> list[str]:
    return list(service.client.get("/v1/meta").json()["states"])


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's chromium, headless, as tests/e2e/test_console.py drives it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium, chromedriver = "/usr/bin/chromium", "/usr/bin/chromedriver"
    if not (shutil.which(chromium) and shutil.which(chromedriver)):
        pytest.fail("the console check needs Debian's chromium and chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=DriverService(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
