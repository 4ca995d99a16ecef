"""Callbacks to the caller's `callback_url`, signed the Standard Webhooks way, every attempt audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from models import DeletionRequest, record_event
from settings import Settings


def event_body(request: DeletionRequest, state: str, message_id: str, at: datetime) -> str:
    return json.dumps({"id": message_id, "type": f"deletion_request.{state}", "created_at": at.isoformat(),
                       "data": {"id": request.id, "state": state, "external_id": request.external_id,
                                "model_id": request.model_id}})


def deliver(settings: Settings, factory, request_id: str, state: str, message_id: str, attempt: int) -> bool:
    """One delivery attempt; True on a 2xx answer. The attempt is recorded as an event either way."""
    with factory() as session:
        request = session.get(DeletionRequest, request_id)
        if request is None or not request.callback_url:
            return True
        url = request.callback_url
        at = datetime.now(UTC)
        body = event_body(request, state, message_id, at)
    headers = {"content-type": "application/json", "webhook-id": message_id,
               "webhook-timestamp": str(int(at.timestamp()))}
    if settings.webhook_secret is not None:
        headers["webhook-signature"] = Webhook(settings.webhook_secret.get_secret_value()).sign(message_id, at, body)
    status, error = None, None
    if settings.callback_host_allowed(url):
        try:
            status = httpx.post(url, content=body, headers=headers, timeout=10, follow_redirects=False).status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
    else:
        error = "host not in the callback allow-list"
    ok = status is not None and 200 <= status < 300
    with factory() as session, session.begin():
        record_event(session, request_id, "callback_attempt", state, "worker",
                     {"url": url, "message_id": message_id, "attempt": attempt, "status": status, "error": error,
                      "delivered": ok})
    return ok or error == "host not in the callback allow-list"  # a refused host is not retried
