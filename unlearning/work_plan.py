"""One progress fraction for a whole job (mask → base → curve → evaluate), so that a bar never restarts at 0%
and an ETA spans the phases.

Each phase's share is its planned work in row passes, counted from the config and the data's sizes before the
job starts: a training row costs three passes (forward and backward), a measured row one. It is an estimate
(a base method's own extra passes, BatchNorm's cost per row and the grid's refinement vary), never a promise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from unlearning.config import MCUConfig, base_method_spec
from unlearning.data import UnlearningData
from unlearning.metrics import EvalSets
from unlearning.spectrum import planned_points
from unlearning.training import JobHooks, Progress

PHASES = ("mask", "base", "curve", "evaluate")
TRAIN, MEASURE = 3, 1


@dataclass(frozen=True)
class WorkPlan:
    costs: dict[str, float]  # phase -> planned row passes

    @classmethod
    def of(cls, cfg: MCUConfig, base_method: str, data: UnlearningData, sets: EvalSets) -> WorkPlan:
        retain, forget = len(data.retain), len(data.forget)
        trains_on = base_method_spec(base_method).trains_on
        base_epoch = retain * (cfg.base.retain_ratio or 1.0) * ("retain" in trains_on) + forget * (
            "forget" in trains_on
        )
        point = len(sets.forget) + len(sets.retain) + len(sets.test) + len(sets.bn)
        full = forget + retain + len(sets.test) + len(sets.bn)  # the recommended point, measured on every row
        return cls(
            {
                "mask": TRAIN * (min(cfg.mask.retain_rows, retain) + forget),
                "base": TRAIN * (cfg.base.epochs or 0) * base_epoch,
                "curve": TRAIN * cfg.epochs * (round(cfg.retain_ratio * retain) + forget),
                "evaluate": MEASURE * (planned_points(cfg.grid_points, cfg.grid_refine) * point + full),
            }
        )

    def overall(self, progress: Progress) -> float:
        """The share of the whole job done when `progress.phase` is `progress.fraction` done."""
        total = sum(self.costs.values())
        if progress.phase not in self.costs or total <= 0:
            return 0.0
        before = sum(self.costs[p] for p in PHASES[: PHASES.index(progress.phase)])
        return round(min(1.0, (before + self.costs[progress.phase] * progress.fraction) / total), 4)

    def hooks(self, hooks: JobHooks, *, base_done: bool = False) -> JobHooks:
        """`hooks` with each report's `overall` filled in. `base_done`: a resumed job skips the base phase (its
        θ_p was stored), so the phase counts as done rather than planned."""
        plan = replace(self, costs=self.costs | {"base": 0.0}) if base_done else self
        return JobHooks(
            on_progress=lambda p: hooks.report(replace(p, overall=plan.overall(p))),
            should_cancel=hooks.should_cancel,
        )
