"""The service's log lines: JSON (one object a line, for collectors) or readable text (a terminal), each with
the bound request/model id and the current trace, and with known secrets blanked out."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from opentelemetry import trace

from settings import Settings
from telemetry.context import bound_fields

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8  # shorter values (a test's "testing") are no secret, and would blank out words
# Secrets whose values are not known when logging starts: Authorization header values, bearer tokens, API
# keys (api/auth.py: "mcu_" + 43 URL-safe characters), webhook secrets, and passwords in URLs.
_PATTERNS = (
    (re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), rf"\1{REDACTED}"),
    (re.compile(r"\bmcu_[A-Za-z0-9_-]{40,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), REDACTED),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@"), rf"\1{REDACTED}@"),
)


class Redactor:
    """Blanks out the given secret values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def known_secrets(settings: Settings, environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str | None]:
    """The secret values this process holds: settings, and the passwords in its URLs and environment."""
    values = [
        secret.get_secret_value() if secret else None
        for secret in (
            settings.bootstrap_api_key,
            settings.webhook_secret,
            settings.signing_key_passphrase,
            settings.metrics_token,
        )
    ]
    for url in (settings.database_url, settings.broker_url, settings.rate_limit_storage_url):
        if url:
            try:
                values.append(urlsplit(url).password)
            except ValueError:  # not a URL at all: nothing to pick out
                continue
    return [*values, environ.get("AWS_SECRET_ACCESS_KEY"), environ.get("AWS_SESSION_TOKEN")]


class ContextFilter(logging.Filter):
    """Adds the bound fields and the current trace and span ids to each record (as `record.mcu`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(bound_fields())
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            fields |= {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
        record.mcu = fields
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.service, self.redact = service, redact

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "service": self.service,
            **getattr(record, "mcu", {}),
        }
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "mcu", {})
        ids = " ".join(f"{name}={fields[name]}" for name in ("request_id", "model_id", "trace_id") if name in fields)
        return self.redact(super().format(record) + (f"  [{ids}]" if ids else ""))


def configure_logging(service: str, settings: Settings) -> None:
    """The root logger's one handler, on stderr; other libraries' loggers (uvicorn's, Celery's) propagate to it."""
    redact = Redactor(known_secrets(settings))
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    json_lines = settings.log_format == "json" or (settings.log_format is None and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter(service, redact) if json_lines else ConsoleFormatter(redact))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own config, if it ran first, stops them
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.captureWarnings(True)
