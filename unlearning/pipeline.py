"""The library's entry point: one MCU job from θ_o to a curve of measured candidate models.

    result = run_unlearning(model, data, "rl", {"epochs": 10})
    result.points, result.recommended_t, result.recommended_point
    weights, metrics = result.materialize(result.recommended_t)

Grid points are measured on sampled retain and test rows, the recommended point and materialised points on
every row (unlearning/metrics.py `EvalSets`).

Phases (each timed and reported through `JobHooks`): mask → base → curve → evaluate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import nn

from unlearning.attacks import run_attacks
from unlearning.base_methods import MethodContext, run_base_method
from unlearning.config import MCUConfig, Targets, resolve_config
from unlearning.curve import BezierCurve, StateDict
from unlearning.data import UnlearningData, seeded_generator
from unlearning.distributed import Ranks
from unlearning.mask import compute_mask
from unlearning.mcu import Checkpoint, train_control_point
from unlearning.metrics import EvalSets, PointCounts, PointMetrics, attack_spread, count, evaluate, predict
from unlearning.spectrum import (
    REFERENCE_WINDOW,
    coarse_to_fine,
    effective_region,
    forget_noise,
    planned_points,
    recommend_t,
)
from unlearning.training import JobHooks, Progress, prepare_model, resolve_device
from unlearning.work_plan import WorkPlan

# Most a θ_o's MIA target may move between resamples of its attack's rows and still count (docs/algorithm.md §4):
# 10× the 0.000–0.010 measured on digits and MNIST-5k; Fashion-MNIST's coin flips measure 0.20–0.35.
MIA_TARGET_MAX_SPREAD = 0.05


def derive_targets(model: nn.Module, data: UnlearningData, sets: EvalSets, batch_size: int) -> Targets:
    """Estimates, from θ_o alone, of what a model retrained without the forget set would show: θ_o's metrics
    with the test rows standing in for the forget rows (to a retrained model the forget rows are as unseen as
    test rows), measured as every point is.

    Retain and test accuracy: θ_o's own. Forget accuracy: θ_o's test accuracy for random forgetting, 0 for
    class-wise forgetting (docs/algorithm.md §4). MIA efficacy: for random forgetting, the share of test rows
    that the points' attack (its SVC trained on the same retain and test rows) calls non-member; for class-wise
    forgetting, 1. An attack trained on half the test rows and applied to the other half, as before 2026-12-04,
    was 0.17 from the retrained models' efficacy on Fashion-MNIST on average and 0.66 once; this, 0.04
    (docs/benchmarks.md, "The MIA target").

    No MIA target (None: the recommended t then weighs RA, FA and TA only) where θ_o's attack is a coin flip:
    where SVCs trained on resamples of its rows disagree by more than MIA_TARGET_MAX_SPREAD (`attack_spread`).
    On Fashion-MNIST, θ_o's test rows are called non-member 15–25% or 75–90% of the time depending on the
    resample; a quarter-width ResNet-10t's target came out 0.945 where its retrained model's efficacy was 0.159,
    and the rule kept θ_p (gap 4.7–7.2) on curves whose best points were 0.5–0.7 from retraining.
    """
    unseen = evaluate(model, replace(sets, forget=sets.test), data.adapter, batch_size)
    if data.scenario == "classwise":
        return Targets(unseen.retain_accuracy, 0.0, unseen.test_accuracy, 1.0)
    members, nonmembers = (predict(model, rows, data.adapter, batch_size)[1] for rows in sets.attack_rows())
    stable = attack_spread(members, nonmembers) <= MIA_TARGET_MAX_SPREAD
    return Targets(
        unseen.retain_accuracy, unseen.test_accuracy, unseen.test_accuracy, unseen.mia_efficacy if stable else None
    )


def measure_point(
    curve: BezierCurve, t: float, data: UnlearningData, sets: EvalSets, config: MCUConfig
) -> PointMetrics:
    """The metrics of φ(t) with BatchNorm statistics from retain rows; φ(t) stays in `curve.model`."""
    return count_point(curve, t, data, sets, config).metrics()


def count_point(curve: BezierCurve, t: float, data: UnlearningData, sets: EvalSets, config: MCUConfig) -> PointCounts:
    """The counts behind `measure_point`; on a part of the rows (`EvalSets.share`) the part's."""
    curve.set_point(t, sets.bn, data.adapter, config.eval.batch_size)
    return count(curve.model, sets, data.adapter, config.eval.batch_size, t)


@dataclass
class CurveResult:
    points: list[PointMetrics]
    recommended_t: float
    recommended_point: PointMetrics | None  # φ(recommended_t) on every row; None when its metrics are not finite
    recommended_t_reference_window: float  # the published code's [0.75, 1] search, for comparison
    effective_region: list[list[float]]
    targets: Targets
    timings: dict[str, float]  # seconds per phase
    config: MCUConfig  # every value used, defaults included
    mask: dict[str, Any]
    training: dict[str, Any]
    base_method: str
    curve: BezierCurve = field(repr=False)
    data: UnlearningData = field(repr=False)
    sets: EvalSets = field(repr=False)
    full_sets: EvalSets = field(repr=False)

    def materialize(self, t: float) -> tuple[StateDict, PointMetrics]:
        """Any t in [0, 1], on the grid or not: CPU weights with retain-only BN statistics, and metrics measured
        on every row."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        metrics = measure_point(self.curve, t, self.data, self.full_sets, self.config)
        return {k: v.cpu() for k, v in self.curve.weights().items()}, metrics

    def attack(self, t: float, original: nn.Module, hooks: JobHooks | None = None) -> dict[str, Any]:
        """The auditor's attacks on φ(t) (`attack`); `original` is θ_o as the caller loaded it."""
        return attack(self.curve, t, original, self.data, self.full_sets, self.config, hooks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_method": self.base_method,
            "points": [p.to_dict() for p in self.points],
            "recommended_t": self.recommended_t,
            "recommended_point": self.recommended_point.to_dict() if self.recommended_point else None,
            "recommended_t_reference_window": self.recommended_t_reference_window,
            "effective_region": self.effective_region,
            "targets": asdict(self.targets),
            "timings": self.timings,
            "config": self.config.to_dict(),
            "mask": self.mask,
            "training": self.training,
        }


class GridFanout(Protocol):
    """Shares the grid's measurements with other processes (worker/grid.py). They rebuild the curve from θ_o, θ_p and
    `control` (θ_c) and measure on the same seeded rows (`PointMeter`), so what is shared equals what one process
    would measure."""

    def measure(
        self, ts: list[float], control: StateDict, measure_here: Callable[[float], PointMetrics | None]
    ) -> dict[float, PointMetrics | None]:
        """A pass of the grid: some of `ts` measured elsewhere, the rest by `measure_here`; every t's metrics (None:
        rejected)."""
        ...

    def measure_full(self, t: float, control: StateDict, count_here: Callable[[int, int], PointCounts]) -> PointCounts:
        """φ(t) on every row, in parts (`EvalSets.share`) measured elsewhere or by `count_here(part, parts)`; the
        parts' sum."""
        ...


class PointMeter:
    """φ(t) of a stored curve measured as `UnlearningJob.measure` measures it (same seeded rows, on `device`): what
    another process does with its share of a `GridFanout`."""

    def __init__(
        self,
        model: nn.Module,
        data: UnlearningData,
        curve_tensors: dict[str, StateDict],
        config: dict[str, Any] | MCUConfig,
        base_method: str,
        *,
        device: str | torch.device | None = "auto",
    ) -> None:
        self.cfg = resolve_config(config, base_method)
        self.curve, self.data, _ = _stored_curve(model, data, curve_tensors, device)
        self.sets = EvalSets.draw(self.data, self.cfg.eval, self.cfg.seed)
        self.full_sets = self.sets.every_row(self.data)

    def point(self, t: float) -> PointMetrics:
        """A grid point: on the grid's sampled rows."""
        return measure_point(self.curve, t, self.data, self.sets, self.cfg)

    def part(self, t: float, part: int, parts: int) -> PointCounts:
        """Part `part` of `parts` of φ(t) on every row."""
        share = self.full_sets.share(part, parts, self.cfg.eval.batch_size)
        return count_point(self.curve, t, self.data, share, self.cfg)


def _stored_curve(
    model: nn.Module, data: UnlearningData, curve_tensors: dict[str, StateDict], device: str | torch.device | None
) -> tuple[BezierCurve, UnlearningData, nn.Module]:
    """A stored curve (`theta_o`, `theta_p`, `theta_c`) rebuilt on `device`, the data's batches there too, and θ_o
    prepared for it. Its model's mode does not matter: `set_point` leaves φ(t) in eval mode."""
    device = resolve_device(device)
    on_device = {name: {k: v.to(device) for k, v in tensors.items()} for name, tensors in curve_tensors.items()}
    original = prepare_model(model, device)
    curve = BezierCurve(original, on_device["theta_o"], on_device["theta_p"], on_device["theta_c"])
    return curve, data.batches_on(device), original


@dataclass
class TrainedCurve:
    """The curve after training (θ_c in `curve.control`), with what its measurement and summary need."""

    curve: BezierCurve
    targets: Targets
    mask: dict[str, Any]  # ParameterMask.report()
    training: dict[str, Any]
    timings: dict[str, float]


class UnlearningJob:
    """One MCU job, set up once: θ_o prepared on `device`, the data's batches there, the evaluation rows drawn and
    the progress planned. `train` then `measure` is `run_unlearning`; a data-parallel job trains in other processes
    (worker/data_parallel.py) and its caller rebuilds the trained curve (`trained_from`) to measure it."""

    def __init__(
        self,
        model: nn.Module,
        data: UnlearningData,
        base_method: str = "rl",
        config: dict[str, Any] | MCUConfig | None = None,
        *,
        device: str | torch.device | None = "auto",
        hooks: JobHooks | None = None,
        base_done: bool = False,
    ) -> None:
        self.base_method = base_method
        self.cfg = resolve_config(config, base_method)
        self.device = resolve_device(device)
        self.data = data.batches_on(self.device)
        self.original = prepare_model(copy.deepcopy(model), self.device).eval()
        self.sets = EvalSets.draw(self.data, self.cfg.eval, self.cfg.seed)
        plan = WorkPlan.of(self.cfg, base_method, self.data, self.sets)
        self.hooks = plan.hooks(hooks or JobHooks(), base_done=base_done)

    def train(
        self,
        theta_p: StateDict | None = None,
        resume: Checkpoint | None = None,
        on_theta_p: Callable[[StateDict], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> TrainedCurve:
        """Mask, base method (skipped with a stored `theta_p`) and θ_c (resumed from `resume`)."""
        cfg, data, original, hooks = self.cfg, self.data, self.original, self.hooks
        targets = cfg.targets or derive_targets(original, data, self.sets, cfg.eval.batch_size)
        timings: dict[str, float] = {}

        started = time.perf_counter()
        hooks.report(Progress("mask", 0.0))
        mask_retain = data.retain.sample(cfg.mask.retain_rows, seeded_generator(cfg.seed, 5))
        mask = compute_mask(original, mask_retain, data.forget, data.adapter, cfg.mask, cfg.eval.batch_size, hooks)
        timings["mask"] = time.perf_counter() - started

        started = time.perf_counter()
        if theta_p is None:
            hooks.report(Progress("base", 0.0))
            base = run_base_method(self.base_method, original, data, cfg.base, MethodContext(cfg.seed, hooks))
            theta_p = {k: v.detach().cpu().contiguous() for k, v in base.state_dict().items()}  # storable as is
            if on_theta_p is not None:
                on_theta_p(theta_p)
        timings["base"] = time.perf_counter() - started

        started = time.perf_counter()
        curve = self._curve(theta_p)
        stats = train_control_point(curve, data, mask, cfg, targets, hooks, resume, on_checkpoint)
        timings["curve"] = time.perf_counter() - started
        training = {
            "batches": stats.batches,
            "skipped_nonfinite_batches": stats.skipped_nonfinite,
            "beta_counts": stats.beta_counts,
            "rollbacks": stats.rollbacks,
            "epoch_losses": stats.epoch_losses,
            "final_lr": stats.final_lr,
            "resumed_from_epoch": resume.epoch if resume is not None else 0,
            "processes": (Ranks.current() or Ranks(0, 1)).world,
            "device": str(self.device),
        }
        return TrainedCurve(curve, targets, mask.report(), training, timings)

    def trained_from(self, theta_p: StateDict, theta_c: StateDict, summary: dict[str, Any]) -> TrainedCurve:
        """A curve trained elsewhere: its stored θ_p and θ_c, and the `summary` (`TrainedCurve` fields but the
        curve, as JSON) its trainer wrote."""
        curve = self._curve(theta_p, theta_c)
        targets = Targets(**summary["targets"])
        return TrainedCurve(curve, targets, summary["mask"], summary["training"], summary["timings"])

    def _curve(self, theta_p: StateDict, theta_c: StateDict | None = None) -> BezierCurve:
        """From θ_o to `theta_p` (through `theta_c`), on the job's device; BezierCurve copies them into place."""
        return BezierCurve(self.original, self.original.state_dict(), theta_p, theta_c)

    def measure(self, trained: TrainedCurve, grid_fanout: GridFanout | None = None) -> CurveResult:
        """The grid (coarse to fine; shared with other processes by `grid_fanout`) and the recommended point."""
        cfg, data, sets, hooks = self.cfg, self.data, self.sets, self.hooks
        curve, targets = trained.curve, trained.targets
        timings = dict(trained.timings)
        started = time.perf_counter()
        rejected: list[PointMetrics] = []
        measured: list[float] = []
        expected = planned_points(cfg.grid_points, cfg.grid_refine)

        def noise_of(pts: list[PointMetrics]) -> float:
            return forget_noise(pts, targets, len(sets.forget))

        def measure(t: float) -> PointMetrics | None:
            hooks.check_cancel()
            metrics = measure_point(curve, t, data, sets, cfg)
            hooks.report(Progress("evaluate", min(1.0, (len(measured) + 1) / expected)))
            measured.append(t)
            if metrics.is_finite():
                return metrics
            rejected.append(metrics)
            return None

        def measure_pass(ts: list[float]) -> dict[float, PointMetrics | None]:
            if grid_fanout is None:
                return {t: measure(t) for t in ts}
            return grid_fanout.measure(ts, curve.control, measure)

        points = coarse_to_fine(
            cfg.grid_points, measure_pass, lambda pts: recommend_t(pts, targets, noise=noise_of(pts)), cfg.grid_refine
        )
        if not points:
            raise RuntimeError("every grid point had non-finite metrics: the curve diverged")
        noise = noise_of(points)
        recommended_t = recommend_t(points, targets, noise=noise)
        hooks.check_cancel()
        full_sets = sets.every_row(data)
        if grid_fanout is None:
            recommended = measure_point(curve, recommended_t, data, full_sets, cfg)  # what a job publishes by default
        else:
            recommended = grid_fanout.measure_full(
                recommended_t,
                curve.control,
                lambda part, parts: count_point(
                    curve, recommended_t, data, full_sets.share(part, parts, cfg.eval.batch_size), cfg
                ),
            ).metrics()
        hooks.report(Progress("evaluate", 1.0))
        timings["evaluate"] = time.perf_counter() - started
        timings["total"] = sum(timings.values())

        return CurveResult(
            points=points,
            recommended_t=recommended_t,
            recommended_point=recommended if recommended.is_finite() else None,
            recommended_t_reference_window=recommend_t(points, targets, REFERENCE_WINDOW, noise=noise),
            effective_region=effective_region(points, targets, margin=noise),
            targets=targets,
            timings={k: round(v, 3) for k, v in timings.items()},
            config=cfg,
            mask=trained.mask,
            training=trained.training
            | {
                "rejected_nonfinite_points": [p.t for p in rejected],
                "points_measured": len(measured),
                "gap_noise": round(noise, 6),
                "eval_sizes": {
                    "retain": len(sets.retain),
                    "forget": len(sets.forget),
                    "test": len(sets.test),
                    "bn": len(sets.bn),
                },
            },
            base_method=self.base_method,
            curve=curve,
            data=data,
            sets=sets,
            full_sets=full_sets,
        )


def run_unlearning(
    model: nn.Module,
    data: UnlearningData,
    base_method: str = "rl",
    config: dict[str, Any] | MCUConfig | None = None,
    *,
    device: str | torch.device | None = "auto",
    hooks: JobHooks | None = None,
    theta_p: StateDict | None = None,
    resume: Checkpoint | None = None,
    on_theta_p: Callable[[StateDict], None] | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    grid_fanout: GridFanout | None = None,
) -> CurveResult:
    """Masked MCU on `model` (θ_o, left untouched).

    For crash recovery a caller may pass the θ_p it stored from `on_theta_p` (the base phase is then
    skipped) and the last `Checkpoint` it stored from `on_checkpoint` (curve training resumes there).
    A `grid_fanout` shares each pass of the grid with other processes (`GridFanout`).
    """
    job = UnlearningJob(model, data, base_method, config, device=device, hooks=hooks, base_done=theta_p is not None)
    return job.measure(job.train(theta_p, resume, on_theta_p, on_checkpoint), grid_fanout)


def materialize_point(
    model: nn.Module,
    data: UnlearningData,
    curve_tensors: dict[str, StateDict],
    config: dict[str, Any] | MCUConfig,
    base_method: str,
    t: float,
    *,
    device: str | torch.device | None = "auto",
    hooks: JobHooks | None = None,
) -> tuple[StateDict, PointMetrics, dict[str, Any]]:
    """φ(t) of a stored curve (`theta_o`, `theta_c`, `theta_p`), in another process than the one that trained it.

    Recomputes BatchNorm statistics on the same retain rows as `run_unlearning` (same seed) and measures the
    point on every row (`EvalSets.every_row`): a published version's metrics are full-set. Then the auditor's attacks
    on it (`attack`). Returns CPU weights, the metrics and the attacks' evidence.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    cfg = resolve_config(config, base_method)
    curve, data, original = _stored_curve(model, data, curve_tensors, device)
    sets = EvalSets.draw(data, cfg.eval, cfg.seed).every_row(data)
    metrics = measure_point(curve, t, data, sets, cfg)
    weights = {k: v.cpu() for k, v in curve.weights().items()}
    return weights, metrics, attack(curve, t, original, data, sets, cfg, hooks)


def attack(
    curve: BezierCurve,
    t: float,
    original: nn.Module,
    data: UnlearningData,
    sets: EvalSets,
    config: MCUConfig,
    hooks: JobHooks | None = None,
) -> dict[str, Any]:
    """The auditor's attacks of `config.evidence` (unlearning/attacks.py) on φ(t), and for comparison on θ_p and
    θ_o: each point with retain-only BatchNorm statistics, as a published one has (θ_o: its own). Leaves φ(t) in
    `curve.model`."""
    models = {}
    for label, at in (("base", 1.0), ("published", t)):
        curve.set_point(at, sets.bn, data.adapter, config.eval.batch_size)
        models[label] = copy.deepcopy(curve.model)
    return run_attacks(
        {"published": models["published"], "base": models["base"], "original": original},
        data,
        config.evidence,
        config.seed,
        hooks,
    )
