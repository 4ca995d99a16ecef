"""MCU_ENVIRONMENT=production refuses .env.example's example secrets: in Settings and in the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from settings import ExampleSecretError, Settings

from .conftest import ROOT

EXAMPLE_SECRETS = [
    "MCU_DATABASE_URL",
    "MCU_BROKER_URL",
    "MCU_BOOTSTRAP_API_KEY",
    "MCU_WEBHOOK_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "MCU_SIGNING_KEY_PASSPHRASE",
]
REAL = {
    "MCU_DATABASE_URL": "postgresql+psycopg://mcu:Xq7-secret@postgres:5432/mcu",
    "MCU_BROKER_URL": "redis://:Rt9-secret@redis:6379/0",
    "MCU_BOOTSTRAP_API_KEY": "b0otstrap-4f1c9e0a7d3b5c8e2f6a9d1b4c7e0f3a",
    "MCU_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "AWS_SECRET_ACCESS_KEY": "m1nio-8d2e7a",
    "MCU_SIGNING_KEY_PASSPHRASE": "s1gning-5be0c2",
}


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Settings]:
    """Settings read from `env` exactly as a container reads its environment."""

    def load(env: dict[str, str]) -> Settings:
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("MCU_")]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            return Settings()

    return load


def test_production_refuses_every_example_secret_and_names_them(
    env_example: dict[str, str], settings_from: Callable
) -> None:
    settings = settings_from(env_example)
    assert settings.environment == "production"
    with pytest.raises(ExampleSecretError) as refused:
        settings.check_production_secrets(env_example)
    for name in EXAMPLE_SECRETS:
        assert name in str(refused.value)


@pytest.mark.parametrize("left_over", EXAMPLE_SECRETS)
def test_one_example_secret_left_is_enough_to_refuse(
    left_over: str, env_example: dict[str, str], settings_from: Callable
) -> None:
    env = env_example | REAL | {left_over: env_example[left_over]}
    with pytest.raises(ExampleSecretError, match=left_over):
        settings_from(env).check_production_secrets(env)


def test_a_short_bootstrap_key_is_refused_in_production(settings_from: Callable) -> None:
    env = REAL | {"MCU_ENVIRONMENT": "production", "MCU_BOOTSTRAP_API_KEY": "k" * 31}
    with pytest.raises(ExampleSecretError, match="31 characters long"):
        settings_from(env).check_production_secrets(env)
    settings_from(env | {"MCU_ENVIRONMENT": "development"}).check_production_secrets(env)  # a demo may use "k"


def test_real_secrets_pass_and_development_accepts_examples(
    env_example: dict[str, str], settings_from: Callable
) -> None:
    settings_from(env_example | REAL).check_production_secrets(env_example | REAL)
    development = env_example | {"MCU_ENVIRONMENT": "development"}
    settings_from(development).check_production_secrets(development)
    Settings(environment="production").check_production_secrets({})  # embedded default: no secrets at all


def test_production_refuses_a_report_signing_key_stored_unencrypted(settings_from: Callable) -> None:
    env = REAL | {"MCU_ENVIRONMENT": "production"}
    without = {k: v for k, v in env.items() if k != "MCU_SIGNING_KEY_PASSPHRASE"}
    with pytest.raises(ExampleSecretError, match="MCU_SIGNING_KEY_PASSPHRASE"):
        settings_from(without).check_production_secrets(without)
    with_file = without | {"MCU_SIGNING_KEY_FILE": "/run/secrets/signing-key.pem"}
    settings_from(with_file).check_production_secrets(with_file)


def mcu(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCU_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean | env | {"MCU_DATA_DIR": str(tmp_path)},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"], ["db", "upgrade"]])
def test_commands_refuse_to_start_with_example_secrets(
    command: list[str], env_example: dict[str, str], tmp_path: Path
) -> None:
    done = mcu(command, env_example, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to start" in done.stderr and "MCU_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_db_upgrade_runs_in_production_with_real_secrets(tmp_path: Path) -> None:
    env = {
        "MCU_ENVIRONMENT": "production",
        "MCU_DATABASE_URL": f"sqlite:///{tmp_path / 'mcu.sqlite'}",
        "MCU_BOOTSTRAP_API_KEY": REAL["MCU_BOOTSTRAP_API_KEY"],
        "MCU_SIGNING_KEY_PASSPHRASE": REAL["MCU_SIGNING_KEY_PASSPHRASE"],
    }
    done = mcu(["db", "upgrade"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mcu.sqlite").exists()
