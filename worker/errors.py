"""What a failed job tells its caller: a problem a user can act on, without internals."""

from __future__ import annotations

from domain.problems import problem_type
from storage import ObjectNotFound, StorageUnavailable
from unlearning.config import ConfigError
from unlearning.data import ForgetSetError
from unlearning.training import DivergenceError
from worker.data_parallel import DataParallelError

KNOWN: dict[type, tuple[str, str]] = {
    ConfigError: ("invalid-config", "Invalid configuration"),
    ForgetSetError: ("invalid-forget-set", "Invalid forget set"),
    DivergenceError: ("diverged", "Training diverged; lower lr or beta, or tighten guard.forget_loss_cap"),
    DataParallelError: ("training-processes-failed", "The job's training processes failed"),
    ObjectNotFound: ("artifact-missing", "A stored artifact is missing"),
    # After the store client's own retries; the request can be submitted again once the store is back.
    StorageUnavailable: ("storage-unavailable", "The object store could not be reached"),
}


def known_problem(error: Exception) -> dict[str, str] | None:
    """The problem of an error this module names a cause for; None for any other."""
    if isinstance(error, DataParallelError) and error.problem is not None:
        return error.problem  # a rank's own known problem
    for kind, (slug, title) in KNOWN.items():
        if isinstance(error, kind):
            return {"type": problem_type(slug), "title": title, "detail": str(error)}
    return None


def problem_for(error: Exception) -> dict[str, str]:
    known = known_problem(error)
    if known is not None:
        return known
    return {
        "type": problem_type("job-failed"),
        "title": "Unlearning job failed",
        "detail": f"{type(error).__name__}: {error}"[:2000],
    }
