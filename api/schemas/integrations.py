"""What Fides posts to a policy webhook (its PrivacyRequestWebhookPayload) and what the service answers
(domain/fides.py). Fields this service does not read are ignored, not refused: Fides adds fields across versions."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from api.schemas.base import Out, Strict
from domain.inputs import Line

LENIENT = ConfigDict(extra="ignore", allow_inf_nan=False)


class FidesIdentityIn(Strict):
    model_config = LENIENT
    email: Line | None = Field(default=None, max_length=320)


class FidesWebhookIn(Strict):
    model_config = LENIENT
    privacy_request_id: Line = Field(max_length=200)
    direction: Line = Field(max_length=20, description="one_way | two_way")
    callback_type: Line = Field(max_length=20, description="pre | post")
    policy_action: Line | None = Field(default=None, max_length=40, description="erasure, access, consent, ...")
    identity: FidesIdentityIn = Field(default_factory=FidesIdentityIn)


class FidesWebhookOut(Out):
    halt: bool = Field(description="true: Fides pauses the privacy request until the service resumes it")
