"""Rate limits per client address and per API key, before a request touches the database.

The `limits` library, fixed windows: counts live in Redis when the broker is Redis (every API replica
shares them), else in this process. A key is counted by the hash of what the caller sent, so a flood of
made-up keys is still held by the limit of its address. When the counter store is unreachable requests
go through (logged): the limits protect the service, they must not take it down. The address is the
connection's peer, or the client a proxy names in X-Forwarded-For when the peer is one of
MCU_TRUSTED_PROXIES (`mcu serve` has uvicorn resolve it; anyone else's header is ignored).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from limits import RateLimitItem, parse, storage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import bearer_token
from api.errors import problem_response
from domain.problems import Problem

# Orchestrators' probes (their answer is shared and cheap: api/routes/health.py); /metrics is limited like the rest.
EXEMPT_PATHS = ("/healthz", "/readyz")
log = logging.getLogger(__name__)


def parse_limit(value: str | None) -> RateLimitItem | None:
    """ "600/minute" and the like; empty or "off" is no limit. ValueError for anything else."""
    if value is None or value.strip().lower() in ("", "off"):
        return None
    return parse(value)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, per_address: str | None, per_key: str | None, storage_url: str) -> None:
        self.app = app
        self.per_address, self.per_key = parse_limit(per_address), parse_limit(per_key)
        options = {"implementation": "redispy"} if storage_url.startswith("async+redis") else {}
        self.limiter = FixedWindowRateLimiter(storage.storage_from_string(storage_url, **options))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        checks = []
        if self.per_address is not None:
            checks.append((self.per_address, "address", (scope.get("client") or ("unknown",))[0]))
        token = bearer_token(scope)
        if self.per_key is not None and token:
            checks.append((self.per_key, "key", hashlib.sha256(token.encode("latin-1")).hexdigest()[:32]))
        for item, kind, who in checks:
            try:
                allowed = await self.limiter.hit(item, kind, who)
                reset = (await self.limiter.get_window_stats(item, kind, who)).reset_time if not allowed else 0
            except Exception as error:  # noqa: BLE001  (fail open: see the module's docstring)
                log.warning("rate limit store unavailable (%s): request not limited", type(error).__name__)
                break
            if not allowed:
                retry_after = max(1, math.ceil(reset - time.time()))
                response = problem_response(
                    Problem(
                        429,
                        f"rate limit of {item} per {'API key' if kind == 'key' else 'client address'} exceeded: "
                        f"retry in {retry_after} s",
                        headers={"Retry-After": str(retry_after)},
                    )
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
