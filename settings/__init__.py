"""The service's one settings class (pydantic-settings, env prefix `MCU_`).

With no settings at all every component falls back to the embedded default under `MCU_DATA_DIR`:
a SQLite file instead of Postgres, a local folder instead of S3, and a broker that needs no server.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every secret in .env.example contains this marker; production refuses to start while one is left in place.
EXAMPLE_SECRET_MARKER = "change-me"
MIN_BOOTSTRAP_KEY_LENGTH = 32


class ExampleSecretError(RuntimeError):
    """MCU_ENVIRONMENT=production, but a secret still holds its example value from .env.example."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCU_", extra="ignore")

    data_dir: Path = Path(".mcu")
    database_url: str | None = None  # default: sqlite file in data_dir
    broker_url: str | None = None  # default: a serverless broker in data_dir
    storage_url: str | None = None  # default: file:// folder in data_dir
    s3_endpoint_url: str | None = None
    bootstrap_api_key: SecretStr | None = None
    device: str = "auto"
    # CPU threads of one worker's PyTorch. One per worker: scale with more workers (one per GPU or core);
    # two threads on a shared 2-core host slowed jobs 5-38x whenever anything else needed the CPU.
    torch_threads: int = Field(default=1, ge=1)
    worker_jemalloc: bool = True  # `mcu worker` runs on jemalloc where installed (worker/allocator.py)
    environment: Literal["development", "production"] = "development"
    max_upload_bytes: int = Field(default=4 << 30, ge=1)  # per uploaded file
    min_free_bytes: int = Field(default=256 << 20, ge=0)  # /readyz fails when the data directory has less free
    max_model_parameters: int = Field(default=500_000_000, ge=1)  # checked before a worker allocates a model
    validation_samples: int = Field(default=1000, ge=1)  # test and train rows a model is measured on at registration
    # The data path (unlearning/rows.py, worker/inputs.py). A dataset of at most `in_memory_bytes` of inputs is
    # read into memory once (fast on small sets); a larger one is streamed: rows are read from the cached shards a
    # batch at a time, by `loader_workers` DataLoader processes (0: in the worker itself). The worker's cache of
    # shards and weights keeps at most `cache_bytes` (least recently used files evicted).
    in_memory_bytes: int = Field(default=64 << 20, ge=0)
    loader_workers: int = Field(default=0, ge=0, le=64)
    cache_bytes: int = Field(default=16 << 30, ge=1)
    # A job's grid passes shared with the other workers of the queue (worker/grid.py, docs/scaling.md); off by
    # default: on one worker the helpers' tasks only wait for the job to end.
    grid_fanout: bool = False
    # Devices one job trains on (worker/data_parallel.py, docs/scaling.md): N torchrun ranks, data-parallel, on the
    # first N visible GPUs (CPU processes without any); "all": every visible GPU. 1 trains in the worker itself.
    devices_per_job: Annotated[int, Field(ge=1, le=64)] | Literal["all"] = 1
    requeue_after_seconds: int = Field(default=300, ge=1)  # a queued request is re-sent after this long
    heartbeat_interval_seconds: float = Field(default=10.0, gt=0)  # a running job's "I am alive"
    heartbeat_timeout_seconds: float = Field(default=120.0, gt=0)  # silence after which a job is resumed elsewhere
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    job_timeout_seconds: int = Field(default=7 * 24 * 3600, ge=60)  # broker visibility timeout: the longest job
    webhook_secret: SecretStr | None = None  # Standard Webhooks secret, "whsec_<base64>"
    # host (its default port only), host:port, or host:* (any port); "*.example.com" allows subdomains.
    callback_allowed_hosts: list[str] = []
    callback_max_attempts: int = Field(default=8, ge=1)
    # Fides (domain/fides.py, docs/integrations.md): its API's base URL, where paused privacy requests are
    # resumed (unset: the webhook is off), and how an identity's email becomes a dataset's subject id.
    fides_url: str | None = None  # e.g. http://fides:8080/api/v1
    fides_identity: Literal["email", "email_sha256"] = "email_sha256"
    fides_identity_salt: SecretStr = SecretStr("")
    # Requests per client address and per API key (api/ratelimit.py): "N/second|minute|hour", or "off".
    rate_limit_per_address: str = "1200/minute"
    rate_limit_per_key: str = "600/minute"
    rate_limit_storage_url: str | None = None  # default: the broker's Redis, else this process's memory
    # Compliance evidence (domain/erasure.py, domain/evidence.py).
    response_days: int = Field(default=30, ge=1, le=365)  # due_at = received_at + this (GDPR Art. 12(3): a month)
    erasure_forget_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)  # FA allowed above its target
    erasure_mia_tolerance: float = Field(default=0.10, ge=0.0, le=1.0)  # MIA efficacy allowed below its target
    # The stronger checks (unlearning/attacks.py) as criteria: measured on every published version, required
    # only where these say so; and what an undecidable criterion does (docs/evidence.md).
    erasure_relearn_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    erasure_membership_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    erasure_require_relearning: bool = False
    erasure_require_membership: bool = False
    erasure_undecidable: Literal["publish", "withhold"] = "publish"
    # The Ed25519 key that signs reports: a PEM file (made on first start when missing; the embedded default's
    # is data_dir/signing-key.pem), or else kept in the database, encrypted with the passphrase (required
    # then in production).
    signing_key_file: Path | None = None
    signing_key_passphrase: SecretStr | None = None
    # Retention (worker/erasure.py): once a version that erased rows is published, every earlier version still
    # remembers them; the newest this many keep their weights for rollback, older ones lose them.
    keep_superseded_versions: int = Field(default=0, ge=0)
    # Coalescing (domain/coalesce.py), 0 = off: a request waits this long before its job starts, and requests
    # for the same model (same method and config) arriving while it is queued join its job.
    coalesce_seconds: float = Field(default=0.0, ge=0.0, le=86400.0)
    # Every deletion request waits in awaiting_approval for a second key's decision, on every model (a model can
    # require it on its own: `require_approval`); domain/approval.py.
    require_approval: bool = False
    public_url: str | None = None  # e.g. https://mcu.example.com: callbacks then carry absolute report URLs
    # Limits before authentication (api/admission.py, `mcu serve`): a larger body is refused unread (413), and
    # X-Forwarded-For / X-Forwarded-Proto are honoured only from these proxies' addresses or networks (CIDR).
    max_request_bytes: int = Field(default=16 << 30, ge=1)
    # Threads of one API process that run routes' database work (api/deps.py). More threads only fight over
    # the GIL: at 40 (AnyIO's default) a busy process spent twice the CPU per request that it did at 4.
    api_db_threads: int = Field(default=4, ge=1, le=64)
    trusted_proxies: list[str] = []
    metrics_token: SecretStr | None = None  # when set, /metrics wants `Authorization: Bearer <it>`
    # `mcu worker` serves its Prometheus metrics on this port, all interfaces, no token (worker/metrics.py); unset:
    # no endpoint. Each worker process on a host needs its own port (docker/mcu-workers.sh adds the GPU's index).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Worker validation (worker/sandbox.py): a model's constructor runs in a child process with this much wall
    # (and CPU) time, including starting Python, and this much address space on top of the loaded libraries;
    # a model whose validation started this many times without a verdict (its worker died) becomes invalid.
    validation_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    validation_memory_bytes: int = Field(default=2 << 30, ge=64 << 20)
    validation_max_attempts: int = Field(default=3, ge=1, le=100)
    # Crash leftovers (worker/sweeper.py): stored objects no row references, incomplete S3 multipart uploads and
    # scratch files older than this are deleted by the reconciler; an upload in progress is always younger.
    orphan_grace_seconds: float = Field(default=3600.0, ge=1)
    sweep_interval_seconds: float = Field(default=3600.0, gt=0)
    # Logs and traces of `mcu serve` and `mcu worker` (telemetry/, docs/telemetry.md): JSON lines or readable
    # lines (default: readable on a terminal, JSON otherwise) at this level; spans go to OTLP when the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT is set, and as JSON lines to `traces_file` when it is set.
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    traces_file: Path | None = None

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for proxy in value:
            ipaddress.ip_network(proxy, strict=False)  # ValueError: "does not appear to be an IPv4 or IPv6 network"
        return value

    @field_validator("rate_limit_per_address", "rate_limit_per_key")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        if value.strip().lower() not in ("", "off"):
            limits.parse(value)  # ValueError: "couldn't parse rate limit string"
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mcu.sqlite').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def resolved_rate_limit_storage_url(self) -> str:
        if self.rate_limit_storage_url:
            return self.rate_limit_storage_url
        broker = self.resolved_broker_url
        return f"async+{broker}" if broker.startswith(("redis://", "rediss://")) else "async+memory://"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'objects').resolve()}"

    def callback_host_allowed(self, url: str) -> bool:
        """`url`'s host:port is on the allow-list. A pattern without a port allows the scheme's default port
        only, "host:*" any port (an IPv6 literal is written "[::1]:port"); "*.example.com" matches subdomains."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a port out of range or not a number
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname.lower()
        target = f"[{host}]:{port or default}" if ":" in host else f"{host}:{port or default}"
        patterns = [p.lower() if ":" in p else f"{p.lower()}:{default}" for p in self.callback_allowed_hosts]
        # "*" is the only wildcard (fnmatch would read the brackets of "[::1]" as a character class).
        return any(re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), target) for pattern in patterns)

    def check_production_secrets(self, environ: Mapping[str, str] | None = None) -> None:
        """In production, refuse secrets that still hold .env.example's example values (they contain
        "change-me"; a webhook secret's is base64 after "whsec_"). The URLs carry the database and Redis
        passwords; AWS_SECRET_ACCESS_KEY, read by boto3 from the environment, is MinIO's root password."""
        if self.environment != "production":
            return
        environ = os.environ if environ is None else environ
        secrets = {
            "MCU_DATABASE_URL": self.database_url,
            "MCU_BROKER_URL": self.broker_url,
            "MCU_BOOTSTRAP_API_KEY": self.bootstrap_api_key.get_secret_value() if self.bootstrap_api_key else None,
            "MCU_WEBHOOK_SECRET": _webhook_secret_text(self.webhook_secret),
            "AWS_SECRET_ACCESS_KEY": environ.get("AWS_SECRET_ACCESS_KEY"),
            "MCU_SIGNING_KEY_PASSPHRASE": (
                self.signing_key_passphrase.get_secret_value() if self.signing_key_passphrase else None
            ),
        }
        examples = [name for name, value in secrets.items() if value and EXAMPLE_SECRET_MARKER in value.lower()]
        if examples:
            raise ExampleSecretError(
                f"MCU_ENVIRONMENT=production, but {', '.join(examples)} still hold the example values of "
                f".env.example (containing {EXAMPLE_SECRET_MARKER!r}): set real secrets"
            )
        if not self.is_embedded and self.signing_key_file is None and self.signing_key_passphrase is None:
            raise ExampleSecretError(
                "MCU_ENVIRONMENT=production, but reports would be signed with a key stored unencrypted in the "
                "database: set MCU_SIGNING_KEY_PASSPHRASE (or MCU_SIGNING_KEY_FILE)"
            )
        bootstrap = secrets["MCU_BOOTSTRAP_API_KEY"]
        if bootstrap and len(bootstrap) < MIN_BOOTSTRAP_KEY_LENGTH:  # it carries every scope
            raise ExampleSecretError(
                f"MCU_ENVIRONMENT=production, but MCU_BOOTSTRAP_API_KEY is {len(bootstrap)} characters long: use "
                f"at least {MIN_BOOTSTRAP_KEY_LENGTH} random ones (e.g. `openssl rand -hex 32`), or none"
            )

    @property
    def resolved_signing_key_file(self) -> Path | None:
        return self.signing_key_file or (self.data_dir / "signing-key.pem" if self.is_embedded else None)

    @property
    def erasure_defaults(self) -> dict[str, Any]:
        keys = ("forget_tolerance", "mia_tolerance", "relearn_tolerance", "membership_tolerance")
        flags = ("require_relearning", "require_membership", "undecidable")
        return {key: getattr(self, f"erasure_{key}") for key in (*keys, *flags)}

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def is_embedded(self) -> bool:
        return self.database_url is None


def _webhook_secret_text(secret: SecretStr | None) -> str | None:
    """The secret as written, plus its decoded payload (a Standard Webhooks secret is "whsec_<base64>")."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    try:
        decoded = base64.b64decode(value.removeprefix("whsec_") + "==").decode("utf-8", "replace")
    except ValueError:  # binascii.Error: not base64
        decoded = ""
    return f"{value} {decoded}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
