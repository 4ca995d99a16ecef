"""The deploy test's stack (docker-compose.local.yml, docker/local/compose_local.py) is production's
docker-compose.yml except for the images that cannot be had here and the GPU reservation."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import DOCKER_DIR, ENV_EXAMPLE

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")

SWAPPED_IMAGES = {("services", name, "image") for name in ("postgres", "redis", "minio", "minio-init")}
GPU_RESERVATION = ("services", "worker", "deploy")


@pytest.fixture(scope="module")
def compose_local() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_local", DOCKER_DIR / "local" / "compose_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(value: Any, path: tuple = ()) -> dict[tuple, Any]:
    """Every scalar (and empty container) of a loaded YAML document, by its path of keys and indices."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in leaves(item, (*path, key)).items()}
    if isinstance(value, list) and value:
        return {k: v for index, item in enumerate(value) for k, v in leaves(item, (*path, index)).items()}
    return {path: value}


def test_local_stack_differs_from_production_only_in_images_and_the_gpu_reservation(compose_local: ModuleType) -> None:
    production = leaves(compose_local.render(ENV_EXAMPLE, compose_local.PRODUCTION))
    local = leaves(compose_local.local_config(ENV_EXAMPLE))
    changed = {path for path in production.keys() | local.keys() if production.get(path) != local.get(path)}
    assert {path[:3] for path in changed} == SWAPPED_IMAGES | {GPU_RESERVATION}
    assert all(path in local for path in SWAPPED_IMAGES)  # swapped, not removed
    assert not any(path[:3] == GPU_RESERVATION for path in local)
    gpu = {path: value for path, value in production.items() if path[:3] == GPU_RESERVATION}
    assert "nvidia" in gpu.values() and "gpu" in gpu.values()  # production keeps its reservation
    for path in SWAPPED_IMAGES:
        assert local[path].startswith("mcu-local/") and not production[path].startswith("mcu-local/")


def test_rendered_file_is_private_and_loads_back(compose_local: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "compose.yml"
    compose_local.main(str(ENV_EXAMPLE), str(out))
    assert out.stat().st_mode & 0o077 == 0  # it holds the secrets of the env file
    assert compose_local.render(ENV_EXAMPLE, [out]) == compose_local.local_config(ENV_EXAMPLE)
