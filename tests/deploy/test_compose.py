"""docker-compose.yml against the settings class: every MCU_* variable a service sets is a real setting,
and every setting a service needs is set (`make lint` runs `docker-compose config` for the syntax)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from settings import Settings

from .conftest import variables

APP_SERVICES = ("api", "worker", "migrate")
SETTING_NAMES = {f"MCU_{name.upper()}" for name in Settings.model_fields}
# MCU_* variables that only docker-compose.yml reads (interpolation), never the service itself.
COMPOSE_ONLY = {"MCU_GPUS_PER_WORKER", "MCU_PUBLISH_ADDR", "MCU_API_PORT", "MCU_API_IMAGE", "MCU_WORKER_IMAGE"}
NEEDS = {
    "api": {"MCU_DATABASE_URL", "MCU_BROKER_URL", "MCU_STORAGE_URL", "MCU_ENVIRONMENT"},
    "worker": {"MCU_DATABASE_URL", "MCU_BROKER_URL", "MCU_STORAGE_URL", "MCU_ENVIRONMENT", "MCU_DEVICE"},
    "migrate": {"MCU_DATABASE_URL", "MCU_ENVIRONMENT"},
}


def test_every_mcu_variable_a_service_sets_is_a_setting(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert isinstance(service.get("environment", {}), dict), f"{name}: write environment as a mapping"
        unknown = {key for key in service.get("environment", {}) if key.startswith("MCU_")} - SETTING_NAMES
        assert not unknown, f"service {name} sets {sorted(unknown)}, which settings.Settings does not read"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_gets_the_settings_it_needs(
    service: str, service_environments: dict[str, dict[str, str]]
) -> None:
    environment = service_environments[service]
    missing = {key for key in NEEDS[service] if not environment.get(key)}
    assert not missing, f"{service} lacks {sorted(missing)}"
    if environment.get("MCU_STORAGE_URL", "").startswith("s3://"):
        s3 = {"MCU_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert not {key for key in s3 if not environment.get(key)}, f"{service}: s3:// storage needs {sorted(s3)}"
    assert environment["MCU_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert service == "migrate" or environment["MCU_BROKER_URL"].startswith("redis://")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_app_service_environment_loads_as_settings(
    service: str, monkeypatch: pytest.MonkeyPatch, service_environments: dict[str, dict[str, str]]
) -> None:
    for key in [k for k in os.environ if k.startswith("MCU_")]:
        monkeypatch.delenv(key)
    for key, value in service_environments[service].items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # e.g. MCU_CALLBACK_ALLOWED_HOSTS must be JSON, not an empty string
    assert not settings.is_embedded and settings.environment == "production"
    if settings.webhook_secret is not None:
        from standardwebhooks import Webhook

        Webhook(settings.webhook_secret.get_secret_value())  # a usable Standard Webhooks secret


def test_env_example_defines_every_required_variable_and_only_known_settings(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    required = {name for name, operator in variables(compose) if operator in (":?", "?")}
    assert required <= set(env_example), f".env.example lacks {sorted(required - set(env_example))}"
    unknown = {key for key in env_example if key.startswith("MCU_")} - SETTING_NAMES - COMPOSE_ONLY
    assert not unknown, f".env.example names {sorted(unknown)}, which nothing reads"


def test_startup_order_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "minio", "api"):
        assert services[name].get("healthcheck"), f"{name} needs a healthcheck"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        for dependency in ("postgres", "redis", "minio"):
            assert depends_on[dependency]["condition"] == "service_healthy"
        for one_shot in ("migrate", "minio-init"):
            assert depends_on[one_shot]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["mcu", "db", "upgrade"]
    assert services["api"]["command"][:2] == ["mcu", "serve"]


def test_worker_reserves_nvidia_gpus(compose: dict[str, Any]) -> None:
    (device,) = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "MCU_GPUS_PER_WORKER" in device["count"]


def test_no_secret_is_written_into_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "_KEY", "DATABASE_URL", "BROKER_URL")):
                assert "${" in str(value), f"{name}.{key} must come from .env, not the compose file"


def test_workers_publish_no_host_port_so_they_scale_on_one_host(compose: dict[str, Any]) -> None:
    """`docker-compose up --scale worker=2` (docker/local/deploy_test.py) starts a second worker container on the
    same host: a published host port (the metrics endpoint's) would make it fail to start."""
    assert "ports" not in compose["services"]["worker"]
    assert compose["services"]["worker"]["environment"]["MCU_WORKER_METRICS_PORT"] == "9101"  # scraped in-network
