"""Callbacks to the caller's `callback_url`, signed the Standard Webhooks way, every attempt audited."""

from __future__ import annotations

import ipaddress
import json
import socket
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import update
from standardwebhooks import Webhook

from domain.inputs import check_url
from domain.lifecycle import State
from models import Callback, DeletionRequest, record_event, utcnow
from settings import Settings

OVERDUE = "overdue"  # the one callback event that is not a state: the request passed its due_at unanswered


def state_of(request: DeletionRequest, event: str) -> str:
    """The state a callback reports: the one it announces (even if the request moved on), or, for an
    OVERDUE notice, the request's state now."""
    return request.state if event == OVERDUE else event


def event_body(settings: Settings, request: DeletionRequest, event: str, message_id: str, at: datetime) -> str:
    """`event` is the state entered, or OVERDUE. A `succeeded` callback names the new version and the report,
    so recipients holding copies of the model (GDPR Art. 19) can replace them and keep the evidence."""
    data: dict[str, Any] = {
        "id": request.id,
        "state": state_of(request, event),
        "external_id": request.external_id,
        "model_id": request.model_id,
        "due_at": request.due_at.isoformat(),
    }
    if event == State.SUCCEEDED:
        report = f"/v1/deletion-requests/{request.id}/report"
        data |= {
            "model_version": request.selected_version,
            "report_url": f"{settings.public_url.rstrip('/')}{report}" if settings.public_url else report,
        }
    return json.dumps(
        {"id": message_id, "type": f"deletion_request.{event}", "created_at": at.isoformat(), "data": data}
    )


def deliver(settings: Settings, factory, request_id: str, event: str, message_id: str) -> tuple[bool, int]:
    """One delivery attempt of an owed callback (the `callbacks` outbox): (done, its attempt number). Done when
    nothing is left to try: delivered (2xx), refused by the allow-list, already done, or the last attempt.
    The outbox numbers the attempts, so a task the reconciler re-sends continues the count and the budget
    (MCU_CALLBACK_MAX_ATTEMPTS) instead of starting both afresh. The attempt is recorded as an event."""
    with factory() as session, session.begin():
        owed = session.get(Callback, message_id, with_for_update=True)
        if owed is None:  # sent before the outbox existed
            owed = Callback(message_id=message_id, request_id=request_id, event=event, attempts=0)
            session.add(owed)
        request = session.get(DeletionRequest, request_id)
        if request is None or not request.callback_url or owed.delivered_at or owed.abandoned_at:
            return True, owed.attempts
        owed.attempts, owed.attempted_at = owed.attempts + 1, utcnow()
        attempt = owed.attempts
        url, state = request.callback_url, state_of(request, event)
        at = owed.created_at or utcnow()  # the same message on every attempt: id, timestamp and body
        body = event_body(settings, request, event, message_id, at)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
    }
    if settings.webhook_secret is not None:
        headers["webhook-signature"] = Webhook(settings.webhook_secret.get_secret_value()).sign(message_id, at, body)
    status, (address, error) = None, vetted_address(settings, url)
    if error is None:
        try:
            status = post_pinned(url, address, body, headers).status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = type(exc).__name__
    ok = status is not None and 200 <= status < 300
    done = ok or error in REFUSALS or attempt >= settings.callback_max_attempts  # a refusal is not retried
    with factory() as session, session.begin():
        session.execute(
            update(Callback)
            .where(Callback.message_id == message_id)
            .values(delivered_at=utcnow() if ok else None, abandoned_at=None if ok or not done else utcnow())
        )
        record_event(
            session,
            request_id,
            "callback_attempt",
            state,
            "worker",
            {
                "url": url,
                "event": event,
                "message_id": message_id,
                "attempt": attempt,
                "status": status,
                "error": error,
                "delivered": ok,
            },
        )
    return done, attempt


MAX_BACKOFF = 600  # seconds: the longest wait between two attempts (worker/celery_app.py)
REFUSALS = (
    "host not in the callback allow-list",
    "host resolves to a non-public address not in the allow-list",
    "the callback URL is malformed",
)


def malformed(url: str) -> bool:
    """A URL stored before the API refused it (whitespace, control characters, a bad port): never callable,
    so refused and recorded like any refusal instead of failing before the attempt is written, forever."""
    try:
        check_url(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return True
    return parts.scheme not in ("http", "https") or not parts.hostname


def vetted_address(settings: Settings, url: str) -> tuple[str | None, str | None]:
    """(the address to call, None), or (None, why the service will not call `url`). An allow-listed name that
    resolves to a loopback, private, link-local or otherwise non-public address is refused unless the
    allow-list names that address itself: a DNS record must not turn the service against its own network.
    The name is resolved once, here; the call goes to the address vetted (`post_pinned`), so a second,
    different answer (DNS rebinding) is never used. An unresolvable name gives (None, None): the attempt
    fails, is recorded and retried."""
    if malformed(url):
        return None, REFUSALS[2]
    if not settings.callback_host_allowed(url):
        return None, REFUSALS[0]
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}[parts.scheme]
    try:
        addresses = [str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)]
    except OSError:
        return None, None
    for address in addresses:
        literal = f"[{address}]" if ":" in address else address
        if not ipaddress.ip_address(address.split("%")[0]).is_global and not settings.callback_host_allowed(
            f"{parts.scheme}://{literal}:{port}/"
        ):
            return None, REFUSALS[1]
    return addresses[0] if addresses else None, None


def post_pinned(url: str, address: str | None, body: str, headers: dict[str, str]) -> httpx.Response:
    """POST to `url`, connecting to `address` (when given) instead of resolving the name again. The Host
    header and TLS (SNI and certificate check) still use the URL's name."""
    parts = urlsplit(url)
    extensions = {}
    if address is not None and address != parts.hostname:
        literal = f"[{address}]" if ":" in address else address
        headers = headers | {"host": parts.netloc.rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": parts.hostname}
        url = parts._replace(netloc=literal + (f":{parts.port}" if parts.port else "")).geturl()
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        return client.send(client.build_request("POST", url, content=body, headers=headers, extensions=extensions))
