"""What a log line is about: the deletion request (or model) a piece of work serves, bound in a context
variable, so every line logged while it runs carries it; and its way through Celery's message headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from functools import partial
from types import MappingProxyType

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

FIELDS = ("request_id", "model_id")
HEADER_PREFIX = "mcu_"  # a task message's header "mcu_request_id" carries the field "request_id"
_EMPTY: Mapping[str, str] = MappingProxyType({})
_bound: ContextVar[Mapping[str, str]] = ContextVar("mcu_log_fields", default=_EMPTY)


def bind(**fields: str | None) -> None:
    """Add fields (None: left out) to this context's log lines, and to its current span as `mcu.<field>`."""
    given = {name: value for name, value in fields.items() if value is not None}
    _bound.set(MappingProxyType({**_bound.get(), **given}))
    span = trace.get_current_span()
    for name, value in given.items():
        span.set_attribute(f"mcu.{name}", value)


def clear() -> None:
    _bound.set(_EMPTY)


def bound_fields() -> Mapping[str, str]:
    return _bound.get()


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """The fields bound for the duration of a block, then what was bound before."""
    token = _bound.set(_bound.get())
    try:
        bind(**fields)
        yield
    finally:
        _bound.reset(token)


@contextmanager
def fresh() -> Iterator[None]:
    """Nothing bound for the duration of a block, then what was bound before."""
    token = _bound.set(_EMPTY)
    try:
        yield
    finally:
        _bound.reset(token)


def task_headers(**fields: str) -> dict[str, str]:
    """The message headers that carry fields (a task's subject) to the worker."""
    return {HEADER_PREFIX + name: value for name, value in fields.items()}


def bind_from_headers(request: object) -> None:
    """The fields a task's message carries (Celery copies a message's headers onto the task's request as
    attributes); the worker clears them when the task ends."""
    bind(**{name: _text(getattr(request, HEADER_PREFIX + name, None)) for name in FIELDS})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def in_background(target: Callable[[], None]) -> Callable[[], None]:
    """`target` for a thread a job starts (heartbeat, cancel poll): its log lines carry the job's fields and
    trace (a new thread starts with an empty context), and its polls make no spans (one every 0.2 s would
    bury the job's trace). Called in the job's thread, when the thread is made."""
    carried = copy_context()

    def quietly() -> None:
        with suppress_instrumentation():
            target()

    return partial(carried.run, quietly)
