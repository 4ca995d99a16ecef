"""OpenTelemetry traces: a tracer provider per process (service mcu-api or mcu-worker), the instrumentations
of FastAPI, Celery, SQLAlchemy, httpx and botocore, and the service's own spans (a task's send, a job's
phases, a publication).

Spans are exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, and as JSON
lines to MCU_TRACES_FILE when that is set. With neither, nothing is sampled: spans are not recorded, but
trace ids are still made and propagated, so log lines of one request share one trace_id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import Token
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode

from settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


def tracer() -> trace.Tracer:
    return trace.get_tracer("mcu")


class JsonLinesExporter(SpanExporter):
    """Spans appended to a file as JSON lines; each line is one write to a file opened for appending, so the
    API and the workers of one host can share the file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            os.write(self._fd, (json.dumps(span_record(span), default=str) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self._fd)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    own = span.get_span_context()
    assert own is not None
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": f"{own.trace_id:032x}",
        "span_id": f"{own.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events],
    }


def configure_tracing(service: str, settings: Settings) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporters: list[SpanExporter] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())  # its endpoint, headers and timeout from the OTEL_* variables
    if settings.traces_file is not None:
        exporters.append(JsonLinesExporter(settings.traces_file))
    # Exporting: the SDK's sampler (OTEL_TRACES_SAMPLER, by default the parent's decision, else always).
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), sampler=None if exporters else ALWAYS_OFF
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument_libraries()


def _instrument_libraries() -> None:
    """Before any engine or client is made: SQLAlchemy's instrumentation wraps `create_engine`."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its declared range ends before SQLAlchemy 2.1, whose engine events it uses are 2.0's; the e2e test
    # (tests/e2e/test_telemetry.py) checks that the database spans are there, from both processes.
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    HTTPXClientInstrumentor().instrument()
    BotocoreInstrumentor().instrument()
    _celery_instrumentor()().instrument()


def _celery_instrumentor() -> type:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    class TaskInstrumentor(CeleryInstrumentor):
        """Celery's instrumentation for a task's run (its span, a child of the context in its message). Its
        publish hooks find a task by name in the current app, which the API's dispatcher does not have (it
        sends by name): their span would never end. So publishing only puts the caller's context in the
        message's headers, and worker/dispatch.py makes the span of the send."""

        def _trace_before_publish(self, *args: object, **kwargs: Any) -> None:
            headers = kwargs.get("headers")
            if headers is not None:
                inject(headers)

        @staticmethod
        def _trace_after_publish(*args: object, **kwargs: object) -> None:
            return None

    return TaskInstrumentor


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: str) -> Iterator[Span]:
    with tracer().start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def traced(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A function's calls, each in a span of this name."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name):
                return function(*args, **kwargs)

        return call

    return decorate


class PhaseSpans:
    """A job's phases (mask, base, curve, evaluate, materialize) as spans under its task's span: a phase ends
    when the next starts or the job ends. The phase's span is the current one meanwhile, so the phase's
    database and store calls are its children."""

    def __init__(self) -> None:
        self._span: Span | None = None
        self._token: Token[Context] | None = None

    def start(self, phase: str) -> None:
        self.end()
        self._span = tracer().start_span(f"phase {phase}", attributes={"mcu.phase": phase})
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, error: BaseException | None = None) -> None:
        if self._span is None:
            return
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(StatusCode.ERROR, type(error).__name__)
        if self._token is not None:
            context.detach(self._token)
        self._span.end()
        self._span, self._token = None, None
