"""The proof-of-erasure report of a succeeded deletion request: what was erased, from which model, how,
with what result, judged by which criterion, what was deleted afterwards (artifacts, superseded versions'
weights, the rows in the stored training shards) or is still held and by what, and the audit chain's head.

Built from the database when asked for and signed then (domain/signing.py): a report states what the
service's records say at `issued_at`. It names the forget set only by a salted fingerprint, never by the
sample ids, which may identify other people.
"""

from __future__ import annotations

import html
import os
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.catalog import ModelState, get_version
from domain.coalesce import coalesced, job_positions
from domain.erasure import METRICS, judge, power
from domain.lifecycle import State
from domain.problems import Problem
from domain.requests import get
from models import CurvePoint, DeletionRequest, ErasedSample, Event, Model, ModelVersion, Sample, in_list, utcnow
from models.audit import head_hash, verify_chains

REPORT_FORMAT = "mcu-proof-of-erasure/1"
# The events worker/erasure.py records and the report reads.
WEIGHTS_DELETED, SHARDS_REWRITTEN, TRAINING_ROWS_ERASED = (
    "superseded_weights_deleted",
    "shards_rewritten",
    "training_rows_erased",
)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@lru_cache
def code_version() -> dict[str, str | None]:
    """The package version, and the git commit when known (MCU_GIT_COMMIT, set by image builds, or the
    checkout the code runs from)."""
    try:
        version: str | None = package_version("mcu-service")
    except PackageNotFoundError:
        version = None
    commit = os.environ.get("MCU_GIT_COMMIT")
    if commit is None and (PROJECT_ROOT / ".git").exists():
        try:
            commit = (
                subprocess.run(
                    ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout.strip()
                or None
            )
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"package": "mcu-service", "version": version, "git_commit": commit}


def _version(row: ModelVersion | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "version": row.version,
        "sha256": row.sha256,
        "preprocessing": row.preprocessing,
        "input_transform": row.input_transform,
        "augmentation": row.augmentation or [],
        "created_at": row.created_at.isoformat(),
        "t": row.t,
    }


def _superseded_versions(session: Session, model_id: str, published: int) -> list[dict[str, Any]]:
    """The versions before the published one (they were trained on the forget set): weights deleted, or still
    held (kept for rollback, MCU_KEEP_SUPERSEDED_VERSIONS)."""
    rows = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_id == model_id, ModelVersion.version < published)
        .order_by(ModelVersion.version)
    ).all()
    return [
        {
            "version": v.version,
            "sha256": v.sha256,
            "weights": "held" if v.weights_deleted_at is None else "deleted",
            "deleted_at": v.weights_deleted_at.isoformat() if v.weights_deleted_at else None,
            "deleted_by_request": v.weights_deleted_by,
        }
        for v in rows
    ]


def _training_data(session: Session, request: DeletionRequest, model: Model) -> dict[str, Any]:
    """The forget set's rows in the stored dataset: erased from the shards (when, which shards), or still
    stored because other models on the dataset have not erased them yet (worker/erasure.py)."""
    stored = list(
        session.scalars(
            select(Sample.position).where(
                Sample.dataset_id == model.dataset_id,
                Sample.split == "train",
                in_list(session, Sample.position, request.forget_positions, "positions"),
            )
        )
    )
    others = session.scalars(
        select(Model.id)
        .where(Model.dataset_id == model.dataset_id, Model.id != model.id, Model.state != ModelState.INVALID)
        .order_by(Model.id)
    ).all()
    erased = dict(
        session.execute(
            select(ErasedSample.model_id, func.count())
            .where(  # one query for all of them
                ErasedSample.model_id.in_(others), in_list(session, ErasedSample.position, stored, "positions")
            )
            .group_by(ErasedSample.model_id)
        ).all()
    )
    held = [{"model_id": other, "rows": len(stored) - erased.get(other, 0)} for other in others]
    rewrites = session.scalars(
        select(Event).where(Event.request_id == request.id, Event.type == TRAINING_ROWS_ERASED).order_by(Event.id)
    ).all()
    return {
        "dataset_id": model.dataset_id,
        "rows": request.forget_count,
        "erased_from_storage": sum((e.detail or {}).get("rows", 0) for e in rewrites),
        "still_stored": len(stored),
        "held_by_models": [h for h in held if h["rows"]],
        "shard_rewrites": [{"at": e.at.isoformat()} | (e.detail or {}) for e in rewrites],
        "clean_up_finished_at": request.data_erased_at.isoformat() if request.data_erased_at else None,
    }


def build_report(session: Session, request_id: str, seal_key: Ed25519PublicKey) -> dict[str, Any]:
    """The report, once the request's audit chain (and its job leader's) verifies with `seal_key`, the key
    that will sign it: no signature ever vouches for a truncated or rewritten chain."""
    request = get(session, request_id)
    if request.state != State.SUCCEEDED:
        raise Problem(
            409,
            f"a proof-of-erasure report exists only for a succeeded request (state: {request.state})",
            slug="report-not-ready",
            title="Report not ready",
        )
    for chain in dict.fromkeys(filter(None, (request.id, request.job_id))):
        broken = verify_chains(session, seal_key, chain).broken
        if broken:
            raise Problem(
                409,
                f"the audit chain of request {chain} does not verify: {broken[0].reason}; no report "
                f"is signed over it (`mcu audit verify` names every broken chain)",
                slug="audit-chain-broken",
                title="Audit chain broken",
            )
    model = session.get(Model, request.model_id)
    assert model is not None and request.curve_summary is not None
    # A coalesced job's version names its leader only: every request of the job points at it.
    assert request.selected_version is not None
    published = get_version(session, request.model_id, request.selected_version)
    assert published.metrics is not None
    targets = request.curve_summary["targets"]
    original = session.scalar(select(CurvePoint).where(CurvePoint.request_id == request.id, CurvePoint.t == 0.0))
    leader = session.get(DeletionRequest, request.job_id) if request.job_id else request
    job_rows = len(job_positions(session, leader)) if leader is not None else request.forget_count
    evidence = published.metrics.get("evidence")  # the auditor's attacks on it (none before they existed)
    original_metrics = {m: getattr(original, m) for m in METRICS} if original is not None else None
    strength = power(original_metrics, targets, job_rows, request.erasure_criterion, evidence)
    # measured on the job's rows
    judgement = judge(published.metrics, targets, job_rows, request.erasure_criterion, strength)
    # A coalesced job's artifacts were its leader's.
    deleted = session.scalar(
        select(Event)
        .where(Event.request_id == (request.job_id or request.id), Event.type == "artifacts_deleted")
        .order_by(Event.id.desc())
        .limit(1)
    )
    head, events = head_hash(session, request.id)
    return {
        "format": REPORT_FORMAT,
        "issued_at": utcnow().isoformat(),
        "service": code_version(),
        "request": {
            "id": request.id,
            "external_id": request.external_id,
            "model_id": request.model_id,
            "received_at": request.received_at.isoformat(),
            "due_at": request.due_at.isoformat(),
            "due_extension": request.due_extension,
            "created_at": request.created_at.isoformat(),
            "finished_at": request.finished_at.isoformat() if request.finished_at else None,
            "answered_in_time": request.finished_at is not None and request.finished_at <= request.due_at,
            "created_by": request.created_by,
            # The approval gate's decision, who made it and why (null: the request needed none).
            "approval": request.approval,
            "selection_mode": request.selection_mode,
            "selected_by": request.selected_by,
            "selected_at": request.selected_at.isoformat() if request.selected_at else None,
            "coalesced_job": request.job_id
            or (request.id if published.deletion_request_id == request.id and coalesced(session, request.id) else None),
        },
        "forget_set": {
            "rows": request.forget_count,
            "job_rows": job_rows,  # the union of a coalesced job's forget sets, which the metrics measure
            "salted_fingerprint": None
            if request.forget_salt is None
            else {
                "algorithm": "sha256(salt + '\\n' + sorted sample ids, one per line)",
                "salt": request.forget_salt,
                "sha256": request.forget_salted_fingerprint,
            },
        },
        "model": {
            "id": model.id,
            "name": model.name,
            "architecture": model.architecture,
            "architecture_kwargs": model.architecture_kwargs,
            # what the model sees (docs/inputs.md): every version carries the model's at its making
            "input_transform": model.input_transform,
            "augmentation": model.augmentation or [],
            "before": _version(
                get_version(session, model.id, published.parent_version) if published.parent_version else None
            ),
            "after": _version(published),
        },
        "method": {
            "name": "masked Mode Connectivity Unlearning",
            "base_method": request.base_method,
            "config": request.config,
            "seed": request.config.get("seed"),
            "batchnorm_statistics": request.curve_summary.get("batchnorm"),
        },
        "metrics": {
            "t": published.t,
            "published": {m: published.metrics.get(m) for m in METRICS},
            "targets": targets,
            "original": {m: getattr(original, m) for m in METRICS} if original is not None else None,
            # Each point's binomial standard errors and the rows it was measured on (docs/evaluation.md): the
            # published version on every row, the original as a grid point; null where measured before they were kept.
            "std_errors": {
                "published": _of_metrics(published.metrics.get("std_errors")),
                "original": _of_metrics(original.std_errors if original is not None else None),
            },
            "rows": {"published": published.metrics.get("rows"), "original": original.rows if original else None},
            "recommended": request.curve_summary.get("recommended_point"),  # φ(recommended t), on every row
            # Class-wise forgetting measures test accuracy on the other classes: the forgotten one is meant to fail.
            "test_accuracy_on": "retained classes" if "classes" in request.forget else "all classes",
        },
        "erasure_criterion": {
            "tolerances": request.erasure_criterion,
            "met": judgement.met,
            "reasons": judgement.reasons,
            "acknowledgement": request.selection_acknowledgement,
            "power": strength,
        },
        # Relearning, feature probe and per-sample membership on the published version, θ_p and the original
        # (unlearning/attacks.py; docs/evidence.md); null for a version published before they were measured.
        "evidence": evidence,
        # θ_p, θ_c and the checkpoint were trained on the forget set: when they were deleted, and which.
        "artifacts_deleted": None
        if deleted is None
        else {
            "at": deleted.at.isoformat(),
            "objects": (deleted.detail or {}).get("objects"),
            "artifacts": (deleted.detail or {}).get("artifacts"),
        },
        "superseded_versions": _superseded_versions(session, model.id, published.version),
        "training_data": _training_data(session, request, model),
        "audit": {"events": events, "head_hash": head},
    }


def render_html(document: dict[str, Any]) -> str:
    """A printable page of a signed report: every field, then the signature to check it with."""
    report, signature = document["report"], document["signature"]
    criterion = report["erasure_criterion"]
    undecidable = (criterion.get("power") or {}).get("decidable") is False  # older reports: no power
    verdict = (
        ("Erasure criterion met" + (f", but {criterion['power']['statement']}." if undecidable else "."))
        if criterion["met"]
        else "ERASURE CRITERION NOT MET: "
        + "; ".join(criterion["reasons"])
        + f". Published on the operator's acknowledgement: “{criterion['acknowledgement']}”."
    )
    sections = [
        ("Erasure criterion", criterion),
        ("Request", report["request"]),
        ("Forget set", report["forget_set"]),
        ("Model", report["model"]),
        ("Method", report["method"]),
        ("Artifacts deleted", report["artifacts_deleted"]),
        ("Superseded versions", report["superseded_versions"]),
        ("Training data", report["training_data"]),
        ("Audit trail", report["audit"]),
        ("Service", report["service"]),
        ("Signature", signature),
    ]
    body = (
        _metrics_table(report["metrics"])
        + _evidence_tables(report.get("evidence"))
        + "".join(f"<h2>{html.escape(title)}</h2>{_table(value)}" for title, value in sections)
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Proof of erasure "
        f"{html.escape(report['request']['id'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Proof of erasure</h1><p class='verdict {'ok' if criterion['met'] and not undecidable else 'bad'}'>"
        f"{html.escape(verdict)}"
        f"</p><p>Issued {html.escape(report['issued_at'])} · format {html.escape(report['format'])}. The JSON "
        f"form of this report (<code>GET /v1/deletion-requests/{html.escape(report['request']['id'])}/report"
        f"</code>) carries the signature; check it with <code>mcu reports verify FILE</code>.</p>{body}"
        f"</body></html>"
    )


def _evidence_tables(evidence: dict[str, Any] | None) -> str:
    """The attacks' results next to each other: forget accuracy while relearning (per model, per step), the
    feature probe, and per-sample membership."""
    if not evidence:
        return ""
    parts = ["<h2>Evidence against attacks</h2>"]
    relearning = evidence.get("relearning")
    if relearning:
        protocol = relearning["protocol"]
        parts.append(
            f"<p>Relearning: forget accuracy of a copy fine-tuned with SGD (lr {protocol['lr']}, batch "
            f"{protocol['batch_size']}) on {protocol['retain_rows']} retain rows"
            + (f", plus {protocol['shots_per_class']} forget rows per class (k-shot)" if "k_shot" in relearning else "")
            + ", after each number of steps.</p>"
        )
        for run in ("retain_only", "k_shot"):
            if run not in relearning:
                continue
            curves = relearning[run]
            steps = next(iter(curves.values()))["steps"]
            head = "".join(f"<th>{s} steps</th>" for s in steps)
            rows = "".join(
                f"<tr><th>{html.escape(label)}</th>"
                + "".join(f"<td>{_table(v)}</td>" for v in c["forget_accuracy"])
                + "</tr>"
                for label, c in curves.items()
            )
            parts.append(
                f"<table class='metrics'><tr><th>{html.escape(run.replace('_', ' '))}</th>{head}</tr>{rows}</table>"
            )
    for key, title in (("feature_probe", "Feature probe"), ("membership", "Per-sample membership")):
        if evidence.get(key):
            parts.append(f"<h3>{title}</h3>{_table(evidence[key])}")
    return "".join(parts)


def _of_metrics(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {m: values.get(m) for m in METRICS}


def _metric_label(name: str, metrics: dict[str, Any]) -> str:
    label = name.replace("_", " ")
    return (
        f"{label} ({metrics['test_accuracy_on']})"
        if name == "test_accuracy" and metrics.get("test_accuracy_on")
        else label
    )


def _metrics_table(metrics: dict[str, Any]) -> str:
    """The published point's metrics next to the targets and the original model's, one metric per row, each
    measured one ± its standard error; then the rows each point was measured on."""
    columns = [
        ("published", f"published (t = {metrics['t']})"),
        ("targets", "target (no retraining)"),
        ("original", "original (t = 0)"),
    ]
    errors, counts = metrics.get("std_errors") or {}, metrics.get("rows") or {}

    def cell(key: str, name: str) -> str:
        value, error = (metrics[key] or {}).get(name), (errors.get(key) or {}).get(name)
        return _table(value) + (f" ± {error:.4f}" if value is not None and error is not None else "")

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    rows = "".join(
        f"<tr><th>{html.escape(_metric_label(name, metrics))}</th>"
        + "".join(f"<td>{cell(key, name)}</td>" for key, _ in columns)
        + "</tr>"
        for name in METRICS
    )
    rows += "<tr><th>rows measured</th>" + "".join(f"<td>{_table(counts.get(key))}</td>" for key, _ in columns)
    return f"<h2>Metrics</h2><table class='metrics'><tr><th></th>{head}</tr>{rows}</tr></table>"


def _table(value: Any) -> str:
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_table(v)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{_table(v)}</li>" for v in value) + "</ul>" if value else "—"
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#111}"
    "table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.25rem .5rem;"
    "text-align:left;vertical-align:top;font-size:.9rem}th{width:14rem;background:#f5f5f5}"
    "td table th{width:10rem}.metrics td{text-align:right}.verdict{font-weight:600;padding:.5rem;border-radius:4px}"
    ".ok{background:#e6f4ea}.bad{background:#fdecea}code{font-size:.85rem}"
    "@media print{body{margin:0}}"
)
