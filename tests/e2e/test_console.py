"""The operator console in a real browser (Debian's chromium driven by selenium through chromium-driver) against
the real service processes: sign in, read models and requests, watch a job, read the curve, choose a point
through the confirmation dialog, see the new version. Screenshots of every page go to test-artifacts/console/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.digits import DigitsUpload
from mcu_client import Client

from .conftest import FAST_JOB, Stack, register

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIRST_TRACE_POINTS = (
    "return document.querySelectorAll('#curve .scatterlayer .trace')[0]?.querySelectorAll('path.point').length || 0"
)

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(
            "the console test needs Debian's chromium and chromium-driver: "
            "apt-get install -y chromium chromium-driver (.ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.save_screenshot(str(ARTIFACTS / "last.png"))  # where a failure left the page
        (ARTIFACTS / "browser.log").write_text("\n".join(str(e) for e in driver.get_log("browser")))
        driver.quit()


def read_only_key(stack: Stack) -> str:
    from api.auth import create_api_key
    from models import make_engine, make_session_factory

    factory = make_session_factory(make_engine(stack.env["MCU_DATABASE_URL"]))
    with factory() as session, session.begin():
        _, secret = create_api_key(session, f"auditor-{stack.key[-6:]}", ["models:read", "requests:read"])
    return secret


def test_console_signs_in_draws_the_curve_and_selects_a_point(
    stack: Stack, digits_upload: DigitsUpload, browser: object
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 30, poll_frequency=0.1)  # type: ignore[arg-type]

    def css(selector: str) -> object:
        return wait.until(seen.visibility_of_element_located((By.CSS_SELECTOR, selector)))

    def shot(name: str) -> None:
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))  # type: ignore[attr-defined]

    def sign_in(key: str) -> None:
        driver.get(f"{stack.url}/console")  # type: ignore[attr-defined]
        css("#api-key").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()  # type: ignore[attr-defined]
        wait.until(seen.text_to_be_present_in_element((By.ID, "who"), ""))
        css("#who")

    def open_page(fragment: str) -> None:
        driver.get(f"{stack.url}/console#{fragment}")  # type: ignore[attr-defined]

    with stack.client() as http:
        client = Client(http=http)
        _, model_id = register(http, digits_upload)
        request = client.create_request(model_id, forget={"classes": [3]}, config=FAST_JOB, external_id="CONSOLE-1")
        auditor = read_only_key(stack)

        # A key that may only read: the curve is there, its buttons are not usable.
        driver.get(f"{stack.url}/console")  # type: ignore[attr-defined]
        css("#api-key")
        shot("1-sign-in")
        sign_in(auditor)
        open_page(f"/requests/{request.id}")
        css("#summary [data-state]")
        shot("2-request-running")
        WebDriverWait(driver, 240, poll_frequency=0.2).until(  # type: ignore[arg-type]
            lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=awaiting_selection]")
        )
        css("#points button.choose")
        assert all(not b.is_enabled() for b in driver.find_elements(By.CSS_SELECTOR, "#points button.choose"))  # type: ignore[attr-defined]
        assert not driver.find_elements(By.ID, "cancel")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "sign-out").click()  # type: ignore[attr-defined]

        sign_in(stack.key)
        assert "bootstrap" in driver.find_element(By.ID, "who").text  # type: ignore[attr-defined]
        css(f"#models tr[data-id='{model_id}']")
        shot("3-models")
        open_page(f"/models/{model_id}")
        css("#versions tr[data-version='1'] button.download")
        shot("4-model")
        open_page("/requests?state=awaiting_selection")
        css(f"#requests tr[data-id='{request.id}']")
        assert all(
            b.get_attribute("data-state") == "awaiting_selection"
            for b in driver.find_elements(By.CSS_SELECTOR, "#requests [data-state]")
        )  # type: ignore[attr-defined]
        shot("5-requests")

        # The request page: the curve drawn point for point, with the events timeline.
        open_page(f"/requests/{request.id}")
        curve = client.curve(request.id)
        wait.until(lambda d: d.execute_script(FIRST_TRACE_POINTS) == len(curve.points))
        assert len(curve.points) == 5
        assert len(driver.find_elements(By.CSS_SELECTOR, "#curve .scatterlayer .trace")) == 4  # type: ignore[attr-defined]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#points tbody tr")) == len(curve.points)  # type: ignore[attr-defined]
        events = [e.get_attribute("data-type") for e in driver.find_elements(By.CSS_SELECTOR, "#events li")]  # type: ignore[attr-defined]
        assert events[0] == "state_changed" and "phase_started" in events

        # t = 0 is the original model: it fails the erasure criterion, and the dialog asks why before it would
        # publish it; going back publishes nothing.
        first = driver.find_elements(By.CSS_SELECTOR, "#curve .scatterlayer .trace")[0].find_elements(
            By.CSS_SELECTOR, "path.point"
        )[0]  # type: ignore[attr-defined]
        ActionChains(driver).move_to_element(first).click().perform()  # type: ignore[arg-type]
        css("#confirm[open] #confirm-metrics")
        driver.find_element(By.ID, "confirm-yes").click()  # type: ignore[attr-defined]
        wait.until(lambda d: d.find_element(By.ID, "acknowledge-block").is_displayed())
        assert "forget accuracy" in css("#confirm-error").text
        assert (
            driver.find_element(By.ID, "acknowledge")
            .get_attribute("value")
            .startswith(  # type: ignore[attr-defined]
                "erasure criterion not met"
            )
        )
        shot("7a-erasure-criterion-not-met")
        driver.find_element(By.ID, "confirm-no").click()  # type: ignore[attr-defined]
        assert client.get_request(request.id).state == "awaiting_selection"

        # Hovering a point shows its metrics; clicking it opens the confirmation with point, targets, original.
        index = min(range(len(curve.points)), key=lambda i: abs(curve.points[i].t - curve.recommended_t))
        point = curve.points[index]
        marker = driver.find_elements(By.CSS_SELECTOR, "#curve .scatterlayer .trace")[0].find_elements(
            By.CSS_SELECTOR, "path.point"
        )[index]  # type: ignore[attr-defined]
        ActionChains(driver).move_to_element(marker).perform()  # type: ignore[arg-type]
        hover = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#curve .hoverlayer").text)
        assert f"forget accuracy: {point.forget_accuracy:.3f}" in hover
        shot("6-request-curve-hover")
        ActionChains(driver).move_to_element(marker).click().perform()  # type: ignore[arg-type]
        css("#confirm[open] #confirm-metrics")
        row = driver.find_element(By.CSS_SELECTOR, "#confirm-metrics tr[data-metric=retain_accuracy]").text  # type: ignore[attr-defined]
        original = next(client.versions(model_id)).metrics or {}
        assert row.split()[-3:] == [
            f"{point.retain_accuracy:.3f}",
            f"{curve.targets['retain_accuracy']:.3f}",
            f"{original['retain_accuracy']:.3f}",
        ]
        assert f"t = {point.t:.2f}" in driver.find_element(By.ID, "confirm-title").text  # type: ignore[attr-defined]
        shot("7-confirm-selection")
        driver.find_element(By.ID, "confirm-yes").click()  # type: ignore[attr-defined]

        WebDriverWait(driver, 120, poll_frequency=0.2).until(  # type: ignore[arg-type]
            lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=succeeded]")
        )
        assert css("#published-version").text == "version 2"
        assert css("#report-json").is_enabled() and css("#report-html").is_enabled()  # the proof of erasure
        assert not driver.find_elements(By.CSS_SELECTOR, "#points button.choose")  # type: ignore[attr-defined]
        shot("8-request-succeeded")
        assert stack.key not in driver.current_url and auditor not in driver.current_url  # type: ignore[attr-defined]
        errors = [
            e
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE"  # type: ignore[attr-defined]
            and not ("/selection" in e["message"] and "409" in e["message"])
        ]  # the refusal of t = 0 above
        assert not errors, errors  # no CSP violation, no failed script

        done = client.get_request(request.id)
        assert done.state == "succeeded" and done.selection is not None
        assert (done.selection.t, done.selection.model_version) == (point.t, 2)
        assert client.get_model(model_id).current_version == 2
    for log in stack.data_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert stack.key not in text and auditor not in text, log
