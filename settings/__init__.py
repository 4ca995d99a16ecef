"""The service's one settings class (pydantic-settings, env prefix `MCU_`).

With no settings at all every component falls back to the embedded default under `MCU_DATA_DIR`:
a SQLite file instead of Postgres, a local folder instead of S3, and a broker that needs no server.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCU_", extra="ignore")

    data_dir: Path = Path(".mcu")
    database_url: str | None = None  # default: sqlite file in data_dir
    broker_url: str | None = None  # default: a serverless broker in data_dir
    storage_url: str | None = None  # default: file:// folder in data_dir
    s3_endpoint_url: str | None = None
    bootstrap_api_key: SecretStr | None = None
    device: str = "auto"
    environment: Literal["development", "production"] = "development"
    max_upload_bytes: int = Field(default=4 << 30, ge=1)  # per uploaded file
    requeue_after_seconds: int = Field(default=300, ge=1)  # a queued request is re-sent after this long
    heartbeat_interval_seconds: float = Field(default=10.0, gt=0)  # a running job's "I am alive"
    heartbeat_timeout_seconds: float = Field(default=120.0, gt=0)  # silence after which a job is resumed elsewhere
    reconcile_interval_seconds: float = Field(default=30.0, gt=0)
    job_timeout_seconds: int = Field(default=7 * 24 * 3600, ge=60)  # broker visibility timeout: the longest job
    webhook_secret: SecretStr | None = None  # Standard Webhooks secret, "whsec_<base64>"
    callback_allowed_hosts: list[str] = []  # host or host:port; "*.example.com" allows subdomains
    callback_max_attempts: int = Field(default=8, ge=1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mcu.sqlite').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'objects').resolve()}"

    def callback_host_allowed(self, url: str) -> bool:
        """`url`'s host (or host:port) is on the allow-list; "*.example.com" matches its subdomains."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        candidates = {parts.hostname.lower(), f"{parts.hostname.lower()}:{parts.port}"}
        return any(fnmatch.fnmatchcase(candidate, pattern.lower())
                   for pattern in self.callback_allowed_hosts for candidate in candidates)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def is_embedded(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
