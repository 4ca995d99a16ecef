"""Log lines and their context (telemetry/): the bound request id and trace in every line, secrets blanked
out, and the request id carried from the dispatcher through a Celery message to the task that runs it.
(Real processes and their traces: tests/e2e/test_telemetry.py.)"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

import telemetry
from domain.tasks import GPU_QUEUE, MEASURE_MODEL, RUN_REQUEST
from settings import Settings
from telemetry.logs import REDACTED, ConsoleFormatter, ContextFilter, JsonFormatter, Redactor, configure_logging
from worker.dispatch import Dispatcher

REQUEST_ID = "req_0123456789abcdef0123"


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own whose handler is set up as telemetry's (the filter, then the formatter)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.telemetry.{id(out)}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger, out


@pytest.fixture(autouse=True)
def unbound() -> None:
    """Each test starts with no ids bound: a suite's earlier test may have filed a request in this thread
    (domain/requests.py binds its id for the rest of the API call; the API and worker reset it per call)."""
    telemetry.clear()


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_bound_request_id_and_the_current_trace() -> None:
    logger, out = capture(JsonFormatter("mcu-worker", Redactor()))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("job") as span, telemetry.bound(request_id=REQUEST_ID):
        logger.info("phase %s started", "curve")
        try:
            raise RuntimeError("broken")
        except RuntimeError:
            logger.exception("job failed")
    logger.warning("after the job")

    started, failed, after = lines(out)
    context = span.get_span_context()
    assert started["message"] == "phase curve started" and started["service"] == "mcu-worker"
    assert (started["request_id"], started["trace_id"], started["span_id"]) == (
        REQUEST_ID,
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert (
        failed["level"] == "error" and failed["exception"].startswith("Traceback") and "broken" in failed["exception"]
    )
    assert "exception" not in started
    assert not {"request_id", "trace_id"} & after.keys()  # unbound once the block ends


def test_console_lines_name_the_ids_after_the_message() -> None:
    logger, out = capture(ConsoleFormatter(Redactor()))
    with telemetry.bound(model_id="mdl_0123456789abcdef0123"):
        logger.info("validated")
    assert out.getvalue().rstrip().endswith(f"INFO    {logger.name}: validated  [model_id=mdl_0123456789abcdef0123]")


def test_known_secrets_and_credential_shapes_are_blanked_out() -> None:
    from telemetry.logs import known_secrets

    settings = Settings(
        bootstrap_api_key="bootstrap-key-0123456789abcdef",
        database_url="postgresql+psycopg://mcu:db-password-42@db:5432/mcu",
        webhook_secret="whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
    )
    logger, out = capture(
        JsonFormatter("mcu-api", Redactor(known_secrets(settings, {"AWS_SECRET_ACCESS_KEY": "aws-s3cr3t-value"})))
    )
    api_key = "mcu_" + "A" * 43
    logger.warning("key %s and %s", settings.bootstrap_api_key.get_secret_value(), api_key)  # type: ignore[union-attr]
    logger.warning("headers: {'Authorization': 'Bearer abc.def'} url redis://:redis-pass@redis:6379/0")
    try:
        raise ValueError(f"cannot connect to {settings.database_url} with aws-s3cr3t-value")
    except ValueError:
        logger.exception("webhook whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ= refused")

    text = out.getvalue()
    for secret in (
        "bootstrap-key-0123456789abcdef",
        api_key,
        "abc.def",
        "redis-pass",
        "db-password-42",
        "aws-s3cr3t-value",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQ",
    ):
        assert secret not in text, secret
    assert text.count(REDACTED) >= 7
    assert "postgresql+psycopg://mcu:[redacted]@db:5432/mcu" in text  # what is left still says where


def test_the_log_settings_take_any_case_and_refuse_other_values() -> None:
    assert (Settings(log_level="debug").log_level, Settings(log_format="JSON").log_format) == ("DEBUG", "json")
    assert Settings().log_format is None  # chosen by the terminal: readable on one, JSON lines otherwise
    with pytest.raises(ValidationError):
        Settings(log_format="xml")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, as it was again afterwards (pytest's own capture hangs on it)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:], root.level = handlers, level


def test_the_root_logger_writes_json_lines_where_stderr_is_no_terminal(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()  # isatty() is False, as in a container
    monkeypatch.setattr("sys.stderr", err)
    configure_logging("mcu-api", Settings(log_level="warning"))
    logging.getLogger("uvicorn.error").warning("port in use")
    logging.getLogger("uvicorn.error").info("below the level")
    (line,) = lines(err)
    assert (line["logger"], line["message"], line["service"]) == ("uvicorn.error", "port in use", "mcu-api")


def test_a_jobs_threads_carry_its_fields_and_make_no_spans() -> None:
    seen: dict[str, object] = {}

    def poll() -> None:
        seen.update(telemetry.bound_fields(), instrumented=is_instrumentation_enabled())

    with telemetry.bound(request_id=REQUEST_ID):
        thread = threading.Thread(target=telemetry.in_background(poll))
    thread.start()
    thread.join()
    assert seen == {"request_id": REQUEST_ID, "instrumented": False}
    assert is_instrumentation_enabled()  # only in that thread


def test_a_task_runs_with_the_subject_its_message_carries() -> None:
    """The dispatcher puts the request (or model) id in the message's headers; the worker's task_prerun
    handler (worker/celery_app.py) binds it for the task's lines, and task_postrun clears it before the
    next task (both run in the worker's one thread)."""
    import worker.celery_app  # noqa: F401  (connects the worker's signal handlers)

    app = Celery("telemetry-test", broker="memory://", set_as_current=False)
    app.conf.update(task_default_queue=GPU_QUEUE, worker_hijack_root_logger=False)
    seen: list[dict[str, str]] = []
    done = threading.Event()

    @app.task(name=RUN_REQUEST)
    def run_request(request_id: str) -> None:
        seen.append(dict(telemetry.bound_fields()))

    @app.task(name=MEASURE_MODEL)  # a model's task on the gpu queue, the one this worker consumes
    def measure_model(model_id: str) -> None:
        seen.append(dict(telemetry.bound_fields()))
        done.set()

    dispatcher = Dispatcher("memory://")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert dispatcher.send(RUN_REQUEST, REQUEST_ID)
        assert dispatcher.send(MEASURE_MODEL, "mdl_0123456789abcdef0123")
        assert done.wait(30)
    assert seen == [{"request_id": REQUEST_ID}, {"model_id": "mdl_0123456789abcdef0123"}]  # nothing left over


def test_an_http_request_starts_with_nothing_of_the_context_it_is_called_in() -> None:
    """uvicorn may run a connection's next request in the context the previous one left (see
    telemetry/web.py FreshContext): the app's requests start from none, with only their path's id bound."""
    import asyncio

    import httpx
    from fastapi import FastAPI
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    app, seen = FastAPI(), {}

    @app.get("/v1/models/{model_id}")
    async def read(model_id: str) -> dict[str, str]:
        seen.update(trace_id=trace.get_current_span().get_span_context().trace_id, **telemetry.bound_fields())
        return {}

    telemetry.instrument_app(app)
    leftover = NonRecordingSpan(SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False))

    async def call() -> int:
        token = context.attach(trace.set_span_in_context(leftover))
        try:
            with telemetry.bound(request_id=REQUEST_ID):
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mcu") as client:
                    return (await client.get("/v1/models/mdl_0123456789abcdef0123")).status_code
        finally:
            context.detach(token)

    assert asyncio.run(call()) == 200
    assert seen["trace_id"] != 0xABC and seen == {"trace_id": seen["trace_id"], "model_id": "mdl_0123456789abcdef0123"}
