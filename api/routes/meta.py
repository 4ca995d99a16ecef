"""`GET /v1/meta`: the states of a deletion request and their transitions, the base methods with their
settings, and the retention policy, as this server has them: the console, the client and the CLI read them
here instead of keeping copies. Computed at each call from their sources (domain/lifecycle.py's transition
table, the base-method registry in unlearning/config.py, the settings)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from api.auth import Principal
from api.deps import SettingsDep, require
from api.schemas import MetaOut
from domain.lifecycle import TRANSITIONS
from unlearning.config import DEFAULT_BASE_METHOD, offered_base_methods

router = APIRouter(prefix="/v1/meta", tags=["meta"])


@router.get("", response_model=MetaOut)
def meta(settings: SettingsDep, _: Annotated[Principal, require("requests:read")]) -> dict[str, Any]:
    """This server's deletion-request states and transitions, the base methods it offers with their settings,
    and how many superseded versions keep their weights: read them here instead of keeping a copy."""
    return {
        "states": [str(state) for state in TRANSITIONS],
        "transitions": {
            str(state): [str(t) for t in TRANSITIONS if t in targets] for state, targets in TRANSITIONS.items()
        },
        "open_states": [str(state) for state, targets in TRANSITIONS.items() if targets],
        "terminal_states": [str(state) for state, targets in TRANSITIONS.items() if not targets],
        "base_methods": [
            {
                "name": method.name,
                "description": method.description,
                "defaults": {name: value for name, value in vars(method.defaults).items() if value is not None},
                "config_schema": method.config_schema(),
            }
            for method in offered_base_methods()
        ],
        "default_base_method": DEFAULT_BASE_METHOD,
        "keep_superseded_versions": settings.keep_superseded_versions,  # the workers apply it: set it alike
    }
