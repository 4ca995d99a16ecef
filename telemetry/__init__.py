"""Logs and traces of the service's processes (docs/telemetry.md).

`configure(service, settings)` is called once, first thing, by `mcu serve` (service "mcu-api") and
`mcu worker` ("mcu-worker"): log lines as JSON or readable text with the bound request id and trace id, and
OpenTelemetry tracing with the FastAPI, Celery, SQLAlchemy, httpx and botocore instrumentations.
"""

from __future__ import annotations

from settings import Settings
from telemetry.context import (
    bind,
    bind_from_headers,
    bound,
    bound_fields,
    clear,
    in_background,
    task_headers,
)
from telemetry.logs import configure_logging
from telemetry.traces import PhaseSpans, configure_tracing, span, traced
from telemetry.web import instrument_app

__all__ = [
    "PhaseSpans",
    "bind",
    "bind_from_headers",
    "bound",
    "bound_fields",
    "clear",
    "configure",
    "in_background",
    "instrument_app",
    "span",
    "task_headers",
    "traced",
]
_configured: set[str] = set()  # the service this process configured as, once


def configure(service: str, settings: Settings) -> None:
    """Logging, then tracing; once per process (a second call changes nothing)."""
    if _configured:
        return
    _configured.add(service)
    configure_logging(service, settings)
    configure_tracing(service, settings)
