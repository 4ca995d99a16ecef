"""What GET of one deletion request adds to it (docs/api.md): how long its job's phases
took, when a worker last reported on it, and how the curve training went. Listed and changed requests
(`DeletionRequestOut`) leave them out: the last report is looked up in the audit events, per request."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas.base import Out
from api.schemas.requests import DeletionRequestOut


class TimingsOut(Out):
    """Seconds per phase of the job that trained and measured the curve, in its last run (a job resumed after
    its worker died counts from the resume; `base` is then near 0, θ_p being kept). Materialising and publishing
    the chosen point are not timed here."""

    mask: float = Field(description="the parameter mask (saliency over forget and retain rows)")
    base: float = Field(description="the base unlearning method, θ_o → θ_p")
    curve: float = Field(description="training the curve's control point θ_c")
    evaluate: float = Field(description="measuring the curve's points and the recommended point")
    total: float = Field(description="the sum of the four")


class RollbackOut(Out):
    epoch: int = Field(description="the epoch whose weights became non-finite (1-based); it was trained again")
    lr: float = Field(description="the halved learning rate training went on with")


class TrainingOut(Out):
    """The curve training (θ_c): its loss per epoch, the β it used, and the divergence rollbacks."""

    epoch_losses: list[float | None] = Field(
        default_factory=list,
        description="mean loss per epoch, first to last: CE(retain) − β·CE(forget) over the epoch's stepped "
        "batches; null for an epoch with no batch stepped (empty: a job from before losses were kept)",
    )
    beta_counts: dict[str, int] = Field(
        description='batches trained with each β value, e.g. {"0.5": 40, "0.0": 8} (adaptive β: 0.5 while the '
        "forget accuracy is far above its target, 0.01 near it, 0.0 once reached)"
    )
    rollbacks: list[RollbackOut] = Field(
        default_factory=list, description="back to the last good epoch with the lr halved, after a divergence"
    )
    batches: int = Field(description="batches stepped over all epochs")
    skipped_nonfinite_batches: int = Field(description="batches skipped for a non-finite loss")
    final_lr: float | None = Field(default=None, description="the learning rate at the end")
    device: str | None = Field(
        default=None, description='where the job trained: cpu, cuda, ...; "cuda × 4": data-parallel on 4 devices'
    )
    processes: int | None = Field(
        default=None, description="processes that trained the base method and the curve (MCU_DEVICES_PER_JOB)"
    )
    rank_restarts: int | None = Field(
        default=None, description="times the data-parallel processes were started again after one of them died"
    )
    resumed_from_epoch: int | None = Field(
        default=None, description="the checkpoint's epoch the last run of the curve training began at (0: none)"
    )
    grid_points_by_worker: dict[str, int] | None = Field(
        default=None, description="with MCU_GRID_FANOUT: the grid points each worker measured, by worker name"
    )
    recommended_point_parts_by_worker: dict[str, int] | None = Field(
        default=None,
        description="with MCU_GRID_FANOUT: the parts of the recommended point's full-set measurement each worker "
        "measured (empty when no other worker helped with the grid: the job's worker measured it whole)",
    )


class DeletionRequestDetailOut(DeletionRequestOut):
    timings: TimingsOut | None = Field(description="null until the job measured its curve")
    last_heartbeat_at: datetime | None = Field(
        description="when a worker last reported on the request: its heartbeat while it holds the job, afterwards "
        "its last recorded step; null before a worker took it"
    )
    training: TrainingOut | None = Field(description="null until the job trained its curve")
