"""The deployment files, read as data: docker-compose.yml, .env.example and the scripts in docker/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_DIR = ROOT / "docker"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; "$$" is a literal "$".
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads an env file (no quotes in ours; '#' starts a comment line)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution; a missing required variable raises KeyError."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        present = env.get(name)
        unset = present is None or (present == "" and operator is not None and operator.startswith(":"))
        if operator and operator.endswith("?") and unset:
            raise KeyError(f"{name}: {argument}")
        if operator and operator.endswith("-") and unset:
            return argument
        return present or ""

    return _VARIABLE.sub(substitute, value)


def variables(value: Any) -> set[tuple[str, str | None]]:
    """(name, operator) of every ${...} in a loaded compose value."""
    if isinstance(value, dict):
        return set().union(*(variables(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables(v) for v in value)) if value else set()
    if isinstance(value, str):
        return {(m.group(1), m.group(2)) for m in _VARIABLE.finditer(value) if m.group(1)}
    return set()


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # YAML merge keys (<<) and anchors resolved here


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def service_environments(compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each service's environment as its container gets it when .env is a copy of .env.example."""
    return {
        name: {key: interpolate(str(value), env_example) for key, value in service.get("environment", {}).items()}
        for name, service in compose["services"].items()
    }
