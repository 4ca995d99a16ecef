"""Wait until the servers named by MCU_DATABASE_URL, MCU_BROKER_URL and MCU_S3_ENDPOINT_URL accept TCP
connections, so a container started alongside Postgres, Redis and MinIO does not crash while they boot.

Standard library only (it runs before anything else in the images). Settings without a host (the
embedded SQLite file, a file:// store) have nothing to wait for. Gives up after MCU_WAIT_TIMEOUT seconds
(default 120) with exit status 1.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

SETTINGS = ("MCU_DATABASE_URL", "MCU_BROKER_URL", "MCU_S3_ENDPOINT_URL")
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379, "http": 80, "https": 443}


def endpoints(environ: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """(setting, host, port) for every setting that names a server."""
    found = []
    for name in SETTINGS:
        parts = urlsplit(environ.get(name) or "")
        if parts.hostname:
            scheme = parts.scheme.split("+")[0]  # postgresql+psycopg -> postgresql
            found.append((name, parts.hostname, parts.port or DEFAULT_PORTS.get(scheme, 80)))
    return found


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    deadline = time.monotonic() + float(os.environ.get("MCU_WAIT_TIMEOUT", "120"))
    waiting = endpoints(os.environ)
    while waiting:
        waiting = [(name, host, port) for name, host, port in waiting if not reachable(host, port)]
        if not waiting:
            break
        if time.monotonic() > deadline:
            names = ", ".join(f"{name} ({host}:{port})" for name, host, port in waiting)
            print(f"wait_for_services: gave up waiting for {names}", file=sys.stderr)
            return 1
        print("wait_for_services: waiting for " + ", ".join(f"{h}:{p}" for _, h, p in waiting), file=sys.stderr)
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
