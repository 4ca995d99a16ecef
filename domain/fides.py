"""Fides (ethyca-fides) policy webhooks: a compliance team's privacy requests erase people from models too.

An erasure policy in Fides gets a two-way, pre-execution webhook whose connection points at
`POST /v1/integrations/fides/webhook` (its `authorization` secret: `Bearer <an API key with requests:write>`).
For each privacy request Fides posts the identity; the service maps its email to a subject id (MCU_FIDES_IDENTITY:
the email itself, or sha256 of MCU_FIDES_IDENTITY_SALT + the email, lower-cased), files the subject-wide erasure
(domain/subject_erasure.py, external_id `fides:<privacy request id>`), answers `{"halt": true}` (Fides pauses the
request), and owes a resume: a `fides_resumes` row, the outbox worker/fides.py delivers from once the erasure
succeeded, with the reply-to token Fides sent. A subject no model holds, or whose rows every model erased
already, has nothing to wait for: `{"halt": false}`, and Fides goes on. docs/integrations.md.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy.orm import Session

from domain import subject_erasure
from domain.problems import Problem, invalid
from models import FidesResume
from settings import Settings

# The only path Fides' reply-to header may name: the resume call is made to MCU_FIDES_URL + it.
REPLY_TO = re.compile(r"/privacy-request/[A-Za-z0-9_\-]{1,100}/resume")


def subject_id(email: str, settings: Settings) -> str:
    """The subject id an identity's email stands for in the datasets' manifests."""
    normal = email.strip().lower()
    if settings.fides_identity == "email":
        return normal
    return hashlib.sha256((settings.fides_identity_salt.get_secret_value() + normal).encode()).hexdigest()


def accept(
    session: Session, hook: dict[str, Any], reply_to: str | None, token: str | None, settings: Settings, actor: str
) -> dict[str, Any]:
    """The webhook's answer to Fides for one call (`hook`: api/schemas FidesWebhookIn as a dict)."""
    if not settings.fides_url:
        raise Problem(404, "the Fides integration is off: set MCU_FIDES_URL to Fides' API", slug="integration-off")
    if hook["policy_action"] != "erasure" or hook["callback_type"] != "pre" or hook["direction"] != "two_way":
        return {"halt": False}  # access or consent policies, post-execution or one-way hooks: nothing to erase
    email = (hook.get("identity") or {}).get("email")
    if not email:
        raise invalid(
            "the privacy request's identity has no email: the service maps an email to a subject id",
            [{"loc": ["identity", "email"], "msg": "missing"}],
        )
    if not reply_to or not REPLY_TO.fullmatch(reply_to) or not token:
        raise invalid(
            "a two-way webhook call carries reply-to (/privacy-request/<id>/resume) and reply-to-token headers",
            [{"loc": ["header", "reply-to"], "msg": "missing or not a resume path"}],
        )
    privacy_request_id = hook["privacy_request_id"]
    owed = session.get(FidesResume, privacy_request_id)
    if owed is not None:  # Fides called again (a requeued request): the same erasure, the newest token
        if owed.resumed_at is None:
            owed.reply_to, owed.token, owed.abandoned_at, owed.outcome = reply_to, token, None, None
        return {"halt": owed.resumed_at is None}
    item = subject_erasure.prepare(
        {"subject_ids": [subject_id(email, settings)], "external_id": f"fides:{privacy_request_id}"}, settings
    )
    (outcome,) = subject_erasure.file(session, [item], actor=actor, coalescing=settings.coalesce_seconds > 0)
    if outcome.problem is not None:
        if subject_erasure.held_by_no_model(outcome.problem):
            return {"halt": False}
        raise outcome.problem
    if outcome.view is not None and outcome.view["state"] == subject_erasure.ErasureState.SUCCEEDED:
        return {"halt": False}  # every model erased the rows already: nothing to wait for
    session.add(
        FidesResume(
            privacy_request_id=privacy_request_id,
            erasure_id=outcome.erasure_id,
            reply_to=reply_to,
            token=token,
            attempts=0,
        )
    )
    return {"halt": True}
