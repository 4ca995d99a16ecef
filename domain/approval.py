"""The approval gate (four eyes): a deletion request on a model that requires approval, or on any model when the
deployment does (MCU_REQUIRE_APPROVAL), waits in `awaiting_approval` until a key with `requests:approve` other
than the one that submitted it approves (→ `queued`, its job is sent) or denies it (→ `cancelled`, nothing ran).

A request's job deletes superseded weights and training rows: the gate keeps one key from starting that alone.
Both decisions are recorded with the approver and the reason: on the request (`approval`), in its audit chain
(the state change's event) and in its signed report.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from domain.lifecycle import State, transition
from domain.problems import Problem, not_found
from models import DeletionRequest, Model, utcnow

EVERYWHERE = "mcu.require_approval"  # session.info: the deployment requires approval on every model
Decision = Literal["approve", "deny"]
OUTCOME: dict[str, tuple[str, State]] = {"approve": ("approved", State.QUEUED), "deny": ("denied", State.CANCELLED)}


def require_everywhere(factory: sessionmaker[Session], required: bool) -> None:
    """Sessions of `factory` (the API's) file every new request awaiting approval when `required`: the policy
    travels with the session, so every way of filing requests (one, a subject-wide erasure, a bulk) obeys it."""
    factory.configure(info={**factory.kw.get("info", {}), EVERYWHERE: required})


def required(session: Session, model_id: str) -> bool:
    """Whether a new request on the model waits for approval (the model is usually in the session already)."""
    if session.info.get(EVERYWHERE):
        return True
    model = session.get(Model, model_id)
    return model is not None and model.require_approval


def set_required(session: Session, model_id: str, required: bool) -> Model:
    """Whether the model's new requests wait for approval from now on (requests already filed keep their state:
    one awaiting approval still waits for a decision); commits."""
    model = session.get(Model, model_id, with_for_update=True)
    if model is None:
        raise not_found("model", model_id)
    model.require_approval = required
    session.commit()
    return model


def decide(session: Session, request_id: str, decision: Decision, reason: str, actor: str) -> DeletionRequest:
    """Approve (→ queued, the run task goes out after commit) or deny (→ cancelled) a request awaiting approval;
    commits. 403 for the key that submitted it, 409 unless it awaits approval."""
    row = session.get(DeletionRequest, request_id)
    if row is None:
        raise not_found("deletion request", request_id)
    if actor == row.created_by:
        raise Problem(
            403,
            f"'{actor}' submitted request '{request_id}': a request is approved or denied by another key "
            "than the one that submitted it",
            slug="own-request",
            title="Submitter cannot decide",
        )
    outcome, to = OUTCOME[decision]
    approval = {"decision": outcome, "by": actor, "at": utcnow().isoformat(), "reason": reason}
    values: dict[str, Any] = {"approval": approval}
    if to == State.CANCELLED:
        values |= {"finished_at": utcnow()}
    else:
        values |= {"progress": {"phase": State.QUEUED.value, "fraction": 0.0}}
    if not transition(
        session,
        request_id,
        to,
        actor=actor,
        from_=[State.AWAITING_APPROVAL],
        values=values,
        detail={"approval": outcome, "reason": reason},
    ):
        session.rollback()
        raise Problem(
            409, f"request '{request_id}' is {row.state}: only a request awaiting approval is approved or denied"
        )
    session.commit()
    session.refresh(row)
    return row
