"""The operator console in a real browser (Debian's chromium driven by selenium through chromium-driver) against
the real service processes: sign in, read models and requests, watch a job, read the curve, choose a point
through the confirmation dialog, see the new version. Screenshots of every page go to test-artifacts/console/;
with MCU_REFRESH_SCREENSHOTS=1 the ones README shows are copied to docs/ as well.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli.digits import DigitsUpload
from mcu_client import Client
from tests.support import wait_for_state

from .conftest import FAST_JOB, Stack, add_dataset, add_model, register, submit

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_SHOTS = {"6-request-curve-hover": "console.png", "7-confirm-selection": "console-select.png"}
# A 4-point grid (t = 0, 1/3, 2/3, 1): the recommended t, searched in steps of 0.01, is never a grid point inside.
# 30 curve epochs: the job runs long enough (15 s idle) for the page to show its ETA on a loaded machine too
# (with FAST_JOB's 3, CI's busy Chromium once first drew the page after the curve was measured).
JOB = FAST_JOB | {"grid_points": 4, "epochs": 30}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIRST_TRACE_POINTS = (
    "return document.querySelectorAll('#curve .scatterlayer .trace')[0]?.querySelectorAll('path.point').length || 0"
)

CENTRE = "const r = arguments[0].getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]"
READ = "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''"
EVENTS = "return [...document.querySelectorAll('#events li')].map((li) => [li.dataset.type, li.innerText])"
TRACE_VISIBLE = "return document.getElementById('curve').data.find((t) => t.name === arguments[0]).visible"

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


def sign_in(driver: Any, url: str, key: str) -> None:
    """Through the console's own form; returns once the page shows who is signed in."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    driver.get(f"{url}/console")
    wait.until(seen.visibility_of_element_located((By.ID, "api-key"))).send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait.until(seen.visibility_of_element_located((By.ID, "who")))


def read_only_key(stack: Stack) -> str:
    from api.auth import create_api_key
    from models import make_engine, make_session_factory

    factory = make_session_factory(make_engine(stack.env["MCU_DATABASE_URL"]))
    with factory() as session, session.begin():
        _, secret = create_api_key(session, f"auditor-{stack.key[-6:]}", ["models:read", "requests:read"])
    return secret


def legend_names(driver: Any) -> list[str]:
    return driver.execute_script(
        "return document.getElementById('curve').data.filter((t) => t.showlegend !== false).map((t) => t.name)"
    )


def y_range(driver: Any) -> list[float]:
    return driver.execute_script("return document.getElementById('curve')._fullLayout.yaxis.range")


def test_console_signs_in_draws_the_curve_and_selects_a_point(
    stack: Stack, digits_upload: DigitsUpload, browser: object
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    from domain.erasure import judge, point_at

    driver: Any = browser
    # The summary and the job facts are drawn again at every poll (1 s): an element found may be gone a moment
    # later, so texts are read in one script call and clicks are retried.
    wait = WebDriverWait(driver, 30, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))

    def read(selector: str) -> str:
        return wait.until(lambda d: d.execute_script(READ, selector))

    def click(selector: str) -> None:
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)

    def css(selector: str) -> Any:
        return wait.until(seen.visibility_of_element_located((By.CSS_SELECTOR, selector)))

    def shot(name: str) -> None:
        driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        if name in DOC_SHOTS and os.environ.get("MCU_REFRESH_SCREENSHOTS") == "1":
            shutil.copyfile(ARTIFACTS / f"{name}.png", DOCS / DOC_SHOTS[name])

    def open_page(fragment: str) -> None:
        driver.get(f"{stack.url}/console#{fragment}")

    def to_curve() -> None:  # the chart at the top of the window, for the screenshots
        driver.execute_script("window.scrollTo(0, document.getElementById('curve-section').offsetTop - 8)")

    def markers(trace: int = 0) -> list[Any]:
        return driver.find_elements(By.CSS_SELECTOR, "#curve .scatterlayer .trace")[trace].find_elements(
            By.CSS_SELECTOR, "path.point"
        )

    with stack.client() as http:
        client = Client(http=http)
        _, model_id = register(http, digits_upload)
        auditor = read_only_key(stack)

        # A key that may only read: it follows the job as it runs (the whole job's share, its phase and epoch,
        # the time left), then sees the curve with its buttons unusable.
        driver.get(f"{stack.url}/console")
        css("#api-key")
        shot("1-sign-in")
        sign_in(driver, stack.url, auditor)
        request = client.create_request(model_id, forget={"classes": [3]}, config=JOB, external_id="CONSOLE-1")
        open_page(f"/requests/{request.id}")
        css("#summary [data-state]")

        def running_with_eta(d: Any) -> bool:
            finished = d.find_elements(By.CSS_SELECTOR, "#summary [data-state=awaiting_selection]")
            assert not finished, "the job measured its curve before the page showed an ETA"
            return bool(d.find_elements(By.ID, "eta"))

        WebDriverWait(driver, 120, poll_frequency=0.1).until(running_with_eta)
        progress = read("#progress-text")
        assert re.match(r"\d{1,3}% of the job · (mask|base|curve|evaluate) \d{1,3}%", progress), progress
        assert re.fullmatch(r"less than a minute left|about \d+ min left", read("#eta"))
        assert read("#duration").startswith("running for ")
        shot("2-request-running")
        WebDriverWait(driver, 240, poll_frequency=0.2).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=awaiting_selection]")
        )
        assert read("#progress-text") == "100% of the job" and not driver.find_elements(By.ID, "eta")
        css("#points button.choose")
        buttons = driver.find_elements(By.CSS_SELECTOR, "#points button.choose, #choose-t, #choose-recommended")
        assert len(buttons) >= 3 and not any(b.is_enabled() for b in buttons)
        assert not driver.find_elements(By.ID, "cancel")
        driver.find_element(By.ID, "sign-out").click()

        sign_in(driver, stack.url, stack.key)
        assert "bootstrap" in driver.find_element(By.ID, "who").text
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
        )
        assert css(f"#requests tr[data-id='{request.id}'] td.overall").text == "100%"  # the whole job, not a phase
        shot("5-requests")

        # The request page: the curve drawn point for point; a class-wise request labels its test accuracy.
        open_page(f"/requests/{request.id}")
        body = http.get(f"/v1/deletion-requests/{request.id}").json()
        curve = body["curve"]
        points = curve["points"]
        wait.until(lambda d: d.execute_script(FIRST_TRACE_POINTS) == len(points))
        assert [p["t"] for p in points] == [0.0, 0.333333, 0.666667, 1.0]
        assert legend_names(driver) == [
            "forget accuracy",
            "retain accuracy",
            "test accuracy (retained classes)",
            "test accuracy (forgotten class)",
            "MIA efficacy",
        ]
        headers = [h.get_attribute("textContent") for h in driver.find_elements(By.CSS_SELECTOR, "#points th")]
        assert "test accuracy (retained classes)" in headers and "test accuracy (forgotten class)" in headers
        assert "test accuracy" not in headers  # nowhere unlabelled
        forgotten = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#points td[data-metric^=forgotten]")]
        assert forgotten[0] == f"{points[0]['forgotten_class_test_accuracy']:.3f}"
        assert "retained classes' test rows only" in css("#curve-notes").text

        # The effective region in words, not as a list of lists.
        notes = css("#curve-notes").text
        assert "[" not in notes and "average distance to the targets" in notes and "model at t = 1" in notes
        spans = [f"t = {lo:.2f}" if lo == hi else f"t {lo:.2f}–{hi:.2f}" for lo, hi in curve["effective_region"]]
        assert (f"Effective region (shaded): {', '.join(spans)}: " if spans else "Effective region: none.") in notes

        # Events as sentences: time, actor and what happened.
        # (read in one go: the page redraws the list at every poll)
        events = driver.execute_script(EVENTS)
        first = (
            "bootstrap submitted the request: forget 152 samples (external id CONSOLE-1). The request is now queued."
        )
        assert events[0][0] == "state_changed"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC " + re.escape(first), events[0][1])
        said = [text for _, text in events]
        assert any(line.endswith(" The worker started training the curve (phase “curve”).") for line in said), said
        measured = f"The worker measured the curve: 4 points, recommended t = {curve['recommended_t']:.2f}."
        assert any(measured in line for line in said), said
        assert not [text for kind, text in events if "{" in text or kind in text], events

        # The job: its duration, heartbeat, seconds per phase, training, loss per epoch and config.
        assert read("#last-heartbeat").endswith("UTC") and "curve" in read("#timings")
        assert re.fullmatch(r"started .* UTC; the curve job took \d+ (s|min \d\d s)", read("#duration"))
        assert "β" in read("#training") and "rollbacks: none" in read("#training")
        losses = driver.execute_script(
            "return [...document.querySelectorAll('#epoch-losses tr:nth-child(2) td')].map((td) => td.textContent)"
        )
        assert len(losses) == JOB["epochs"] and all(re.fullmatch(r"-?\d+\.\d{4}", x) for x in losses), losses
        click("#config summary")
        css("#config [data-key=grid_points] dd")  # shown, and kept open by the polls that redraw it
        assert read("#config [data-key=grid_points] dd") == "4" and read("#config [data-key='base.epochs'] dd") == "4"
        assert f"base method {body['base_method']}" in read("#config summary")
        click("#config summary")  # closed again

        # The y-axis follows the data shown: all of [0, 1] here (forget accuracy falls to 0); with forget
        # accuracy, MIA efficacy and the forgotten class hidden (a legend click each), what is left is all above
        # 0.9, and the axis closes in on it instead of staying at 0–1.
        low, high = y_range(driver)
        assert low < 0.0 < 1.0 < high < 1.2

        def toggle(name: str, to: object) -> None:  # one legend click; the next waits for it to take effect
            entry = next(e for e in driver.find_elements(By.CSS_SELECTOR, "#curve .legend .traces") if e.text == name)
            ActionChains(driver).move_to_element(entry).click().perform()
            wait.until(lambda d: d.execute_script(TRACE_VISIBLE, name) == to)

        hidden = ("forget accuracy", "MIA efficacy", "test accuracy (forgotten class)")
        for name in hidden:
            toggle(name, "legendonly")
        shown = [p[k] for p in points for k in ("retain_accuracy", "test_accuracy")]
        shown += [curve["targets"][k] for k in ("retain_accuracy", "test_accuracy")]
        assert min(shown) > 0.9
        wait.until(lambda d: y_range(d)[0] > 0.85)
        low, high = y_range(driver)
        assert [low, high] != [0, 1] and low <= min(shown) and max(shown) <= high <= 1.05, (low, high, shown)
        to_curve()
        shot("6a-curve-zoomed-to-the-data")
        for name in hidden:
            toggle(name, True)
        wait.until(lambda d: y_range(d)[0] < 0.0)

        # Any t: typed in, the line under the control gives its estimate and the API's verdict.
        box = css("#t-input")
        box.clear()
        box.send_keys("0.5")
        wait.until(lambda d: d.find_element(By.ID, "t-verdict").text.startswith(("✓ t = 0.50 ", "✗ t = 0.50 ")))

        def api_judgement(t: float) -> Any:  # what the API decides on POST .../selection (domain/requests.py)
            return judge(point_at(points, t), curve["targets"], body["forget_count"], body["erasure_criterion"])

        assert css("#t-verdict").get_attribute("data-met") == str(api_judgement(0.5).met).lower()
        between = point_at(points, 0.5)  # the estimate the API judges: linear between t = 1/3 and 2/3
        line = read("#t-estimate")
        for key, label in (("retain_accuracy", "retain accuracy"), ("mia_efficacy", "MIA efficacy")):
            assert f"{label} {between[key]:.3f}" in line, (line, between)

        # t = 0 is the original model: the dialog says before confirming that it fails the erasure criterion,
        # with the API's own reasons, and asks why; sent without the acknowledgement the API refuses it (409)
        # and the dialog fills in the text the API asks for. Going back publishes nothing.
        ActionChains(driver).move_to_element(markers()[0]).click().perform()
        css("#confirm[open] #confirm-metrics")
        verdict = css("#verdict")
        expected = api_judgement(0.0)
        assert not expected.met and verdict.get_attribute("data-met") == "false"
        assert "does not meet the erasure criterion" in verdict.text
        assert all(reason in verdict.text for reason in expected.reasons), (verdict.text, expected.reasons)
        assert "on the measured point t = 0.00" in verdict.text
        assert css("#acknowledge").get_attribute("value").startswith(expected.acknowledgement)
        driver.find_element(By.ID, "acknowledge").clear()
        driver.find_element(By.ID, "confirm-yes").click()
        wait.until(lambda d: "The API refused it: forget accuracy" in d.find_element(By.ID, "confirm-error").text)
        assert driver.find_element(By.ID, "acknowledge").get_attribute("value").startswith(expected.acknowledgement)
        shot("7a-erasure-criterion-not-met")
        driver.find_element(By.ID, "confirm-no").click()
        assert client.get_request(request.id).state == "awaiting_selection"

        # Hovering a measured point shows its metrics.
        index = min(range(len(points)), key=lambda i: abs(points[i]["t"] - curve["recommended_t"]))
        # To the marker's place in the window, the chart at its top: moving to the element itself would scroll
        # (another trace's marker covers it), and the screenshot README shows is of the chart.
        to_curve()
        x, y = driver.execute_script(CENTRE, markers()[index])
        pointer = ActionBuilder(driver)
        pointer.pointer_action.move_to_location(round(x), round(y))
        pointer.perform()
        hover = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#curve .hoverlayer").text)
        assert f"forget accuracy: {points[index]['forget_accuracy']:.3f}" in hover
        assert f"test accuracy (retained classes): {points[index]['test_accuracy']:.3f}" in hover
        shot("6-request-curve-hover")

        # The recommended t lies between measured points (a 4-point grid; the search steps by 0.01): its button
        # opens the dialog at exactly that t, with the estimate the API judges, the same verdict, and as the
        # original the curve's t = 0 point (the report's reference), not version 1's validation numbers.
        recommended = curve["recommended_t"]
        assert recommended not in [p["t"] for p in points], "premise: the recommended t is not a grid point"
        estimate = point_at(points, recommended)
        css("#choose-recommended").click()
        css("#confirm[open] #confirm-metrics")
        assert f"t = {recommended:.2f}" in driver.find_element(By.ID, "confirm-title").text
        heads = [h.get_attribute("textContent") for h in driver.find_elements(By.CSS_SELECTOR, "#confirm-metrics th")]
        assert heads[1] == f"t = {recommended:.2f} (estimate)" and heads[-1] == "original (t = 0)"
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"):
            cells = driver.find_element(By.CSS_SELECTOR, f"#confirm-metrics tr[data-metric={key}]").text.split()
            assert cells[-len(heads) + 1] == f"{estimate[key]:.3f}", (key, cells)
            assert cells[-1] == f"{points[0][key]:.3f}", (key, cells)  # the original: t = 0
        label = driver.find_element(By.CSS_SELECTOR, "#confirm-metrics tr[data-metric=test_accuracy] td").text
        assert label == "test accuracy (retained classes)"
        assert driver.find_elements(By.CSS_SELECTOR, "#confirm-metrics tr[data-metric=forgotten_class_test_accuracy]")
        verdict = css("#verdict")
        expected = api_judgement(recommended)
        assert verdict.get_attribute("data-met") == str(expected.met).lower(), (verdict.text, expected)
        low_t, high_t = (
            max(p["t"] for p in points if p["t"] < recommended),
            min(p["t"] for p in points if p["t"] > recommended),
        )
        assert f"linear between the measured points t = {low_t:.2f} and t = {high_t:.2f}" in verdict.text
        if not expected.met:  # then the operator says why, as the API asks
            box = driver.find_element(By.ID, "acknowledge")
            assert box.is_displayed() and box.get_attribute("value").startswith(expected.acknowledgement)
            box.send_keys("the recommended point, chosen in the console test")
        shot("7-confirm-selection")
        driver.find_element(By.ID, "confirm-yes").click()

        WebDriverWait(driver, 120, poll_frequency=0.2).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#summary [data-state=succeeded]")
        )
        assert read("#published-version") == "version 2"
        assert css("#report-json").is_enabled() and css("#report-html").is_enabled()  # the proof of erasure
        assert not driver.find_elements(By.CSS_SELECTOR, "#points button.choose, #choose-t, #choose-recommended")
        # The chosen t is marked in the table (a row of its own, with the published version's metrics) and on
        # the chart.
        wait.until(lambda d: "chosen → version 2" in d.execute_script(READ, "#points tr.chosen"))
        assert float(css("#points tr.chosen").get_attribute("data-t")) == recommended
        assert "every row (published)" in read("#points tr.chosen")
        marks = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#curve .annotation-text")]
        assert f"chosen t = {recommended:.2f}" in marks, marks
        to_curve()
        shot("8-request-succeeded")
        assert stack.key not in driver.current_url and auditor not in driver.current_url
        errors = [
            e
            for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not ("/selection" in e["message"] and "409" in e["message"])
        ]  # the refusal of t = 0 above
        assert not errors, errors  # no CSP violation, no failed script

        done = client.get_request(request.id)
        assert done.state == "succeeded" and done.selection is not None
        assert (done.selection.t, done.selection.model_version) == (recommended, 2)
        assert (done.selection.acknowledgement is None) == expected.met
        assert client.get_model(model_id).current_version == 2
        # The model page labels the class-wise version's test accuracy.
        open_page(f"/models/{model_id}")
        cell = css("#versions tr[data-version='2'] td[data-metric=test_accuracy]")
        assert cell.text.endswith("retained classes")
        assert "retained classes" not in css("#versions tr[data-version='1'] td[data-metric=test_accuracy]").text
    for log in stack.data_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert stack.key not in text and auditor not in text, log


def test_a_coin_flip_attack_leaves_mia_unjudged_on_the_curve_and_in_the_report(
    stack: Stack, digits_upload: DigitsUpload, browser: object
) -> None:
    """A model whose membership attack is a coin flip (an untrained one: members and non-members look alike) gets
    no MIA target (docs/algorithm.md §4). The user sees why on the curve page, and the signed report says the
    criterion did not judge MIA efficacy, instead of a target drawn from one side of the coin."""
    from safetensors.torch import save
    from selenium.webdriver.support.ui import WebDriverWait

    from unlearning.architectures import seeded_init

    driver: Any = browser
    untrained = seeded_init("cnn-small", 10, digits_upload.input_shape, seed=0)
    coin_flip = replace(digits_upload, weights=save(untrained.state_dict()))
    with stack.client() as http:
        model_id = add_model(http, add_dataset(http, digits_upload), coin_flip)
        forget = {"sample_ids": [f"d{row}" for row in range(0, 400, 4)]}
        request = submit(http, model_id, forget=forget, config=FAST_JOB)
        curve = wait_for_state(http, request["id"], ("awaiting_selection",), timeout=180)["curve"]
        assert curve["targets"]["mia_efficacy"] is None
        assert all(isinstance(curve["targets"][k], float) for k in ("retain_accuracy", "forget_accuracy"))

        sign_in(driver, stack.url, stack.key)
        driver.get(f"{stack.url}/console#/requests/{request['id']}")
        notes = WebDriverWait(driver, 30).until(lambda d: d.execute_script(READ, "#curve-notes"))
        assert "MIA efficacy has no target (the original model's attack called the same rows non-member" in notes
        assert "Targets (dotted" in notes and "MIA efficacy 0." not in notes.split("Recommended")[0]

        selected = http.post(
            f"/v1/deletion-requests/{request['id']}/selection",
            json={"t": curve["recommended_t"], "acknowledge": "erasure criterion not met: the coin-flip test"},
        )
        assert selected.status_code == 202, selected.text
        wait_for_state(http, request["id"], ("succeeded",), timeout=180)
        report = http.get(f"/v1/deletion-requests/{request['id']}/report").json()["report"]
    criterion = report["erasure_criterion"]
    assert "mia_efficacy" not in criterion["power"]["checks"], criterion
    assert "MIA efficacy is not judged" in criterion["power"]["statement"]
