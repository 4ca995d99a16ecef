"""The stack `make deploy-test` runs: docker-compose.yml with docker-compose.local.yml's images, as
`docker-compose config` renders it, less the worker's GPU reservation (Compose 1.29 merges an override's
device list into the base one, so no override can remove it).

    python docker/local/compose_local.py ENV_FILE OUT_FILE   # writes the rendered file (mode 0600)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = [ROOT / "docker-compose.yml"]
LOCAL = [*PRODUCTION, ROOT / "docker-compose.local.yml"]


def render(env_file: Path, files: list[Path]) -> dict[str, Any]:
    """What Compose itself makes of `files` with `env_file` standing in for .env."""
    args = ["docker-compose", "--env-file", str(env_file), "--project-directory", str(ROOT)]
    for file in files:
        args += ["-f", str(file)]
    done = subprocess.run([*args, "config"], capture_output=True, text=True, check=True)
    return yaml.safe_load(done.stdout)


def local_config(env_file: Path) -> dict[str, Any]:
    config = render(env_file, LOCAL)
    config["services"]["worker"].pop("deploy")  # the GPU reservation: no GPU (nor NVIDIA runtime) here
    return config


def main(env_file: str, out_file: str) -> None:
    text = yaml.safe_dump(local_config(Path(env_file)), sort_keys=False)  # holds .env's secrets
    descriptor = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
