"""Subject-wide erasure: "erase these subjects (or samples) from every model", without naming a model.

An erasure finds every model whose training split holds the rows the ids name and files one deletion request
per model (domain/requests.py), all in the caller's one transaction. Rows a model already erased are left out
of its request, as for any request; a model that erased them all gets no request and is listed in `skipped`
(with the requests that erased them), and so is a model that failed validation (it cannot be unlearned). An id
that no model's training split holds, nor held (tombstones), is a 422 naming it; a model still validating is a
409 (retry when it is ready): an erasure never reports success while a model it could not see holds the rows.
An erasure whose every holder had erased the rows already has no request and is `succeeded`.

Bulk intake files up to MAX_BULK_ITEMS erasures in one call with set-based reads (one query for the models,
one for the rows of every item, one for the rows already erased) and multi-row inserts, each item idempotent
through its `external_id`: the same caller's external_id again returns the erasure it made (`existing`); with
another body it is a 422 for that item.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain import evidence, requests
from domain.catalog import ModelState
from domain.forget import MAX_NAMED, ForgetSet, id_hash
from domain.lifecycle import State
from domain.pagination import PageOf, newest_first, newest_page
from domain.problems import Problem, invalid, not_found
from models import (
    Dataset,
    DeletionRequest,
    ErasedSample,
    Erasure,
    ErasureRequest,
    Model,
    Sample,
    SampleTombstone,
    in_list,
    new_id,
    utcnow,
)
from models.bulk import insert_rows
from settings import Settings
from unlearning.config import DEFAULT_BASE_METHOD

MAX_BULK_ITEMS = 1_000
KINDS = ("subject_ids", "sample_ids")
REPORT_FORMAT = "mcu-erasure-report/1"
HELD_BY_NO_MODEL = "held by no model"


class ErasureState(StrEnum):
    """An erasure's state, derived from its requests' states by `aggregate_state` (never stored)."""

    RUNNING = State.RUNNING.value
    AWAITING_APPROVAL = State.AWAITING_APPROVAL.value
    AWAITING_SELECTION = State.AWAITING_SELECTION.value
    SUCCEEDED = State.SUCCEEDED.value
    FAILED = State.FAILED.value
    CANCELLED = State.CANCELLED.value


def aggregate_state(states: Iterable[str]) -> ErasureState:
    """The first that applies: `failed` when any request failed (the erasure cannot complete as asked; the
    others go on), `cancelled` when any was cancelled (or denied approval), `awaiting_approval` when any waits
    for an approver, `awaiting_selection` when any waits for an operator to choose a point, `running` while any
    other is open (queued, running, materializing, cancelling, or a state added later), `succeeded` when all
    succeeded, or when no request was needed."""
    found = set(states)
    if State.FAILED in found:
        return ErasureState.FAILED
    if State.CANCELLED in found:
        return ErasureState.CANCELLED
    if State.AWAITING_APPROVAL in found:
        return ErasureState.AWAITING_APPROVAL
    if State.AWAITING_SELECTION in found:
        return ErasureState.AWAITING_SELECTION
    if found - {State.SUCCEEDED}:
        return ErasureState.RUNNING
    return ErasureState.SUCCEEDED


# --- intake ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One erasure asked for, validated: what it names and what its requests will be asked."""

    kind: str  # subject_ids | sample_ids
    ids: list[str]  # without repeats, in the order sent
    submission: requests.Submission
    body_sha256: str

    @property
    def external_id(self) -> str | None:
        return self.submission.external_id


@dataclass
class Outcome:
    result: str  # created | existing | error
    erasure_id: str | None = None
    problem: Problem | None = None
    view: dict[str, Any] | None = None  # a created erasure as the API shows it (no need to read it back)


def prepare(spec: dict[str, Any], settings: Settings, configs: dict[str, Any] | None = None) -> Item:
    """An erasure body (api/schemas/erasures.py, as a dict) checked as a deletion request's options are; a
    Problem names what is wrong. `configs` caches validated configs across the items of one bulk call."""
    kind = next(k for k in KINDS if spec.get(k) is not None)
    base_method = spec.get("base_method") or DEFAULT_BASE_METHOD
    config = spec.get("config") or {}
    key = _sha256([base_method, config]) if config else base_method
    cache = configs if configs is not None else {}
    if key not in cache:
        cache[key] = requests.validated_config(config, base_method, settings.erasure_defaults)
    validated, criterion = cache[key]
    requests.check_callback(spec.get("callback_url"), settings)
    submission = requests.Submission(
        base_method,
        validated,
        criterion,
        spec.get("selection") or "manual",
        spec.get("external_id"),
        spec.get("callback_url"),
        requests.received_when(spec.get("received_at")),
        settings.response_days,
    )
    return Item(kind, list(dict.fromkeys(spec[kind])), submission, _sha256(spec))


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file(session: Session, items: list[Item | Problem], *, actor: str, coalescing: bool) -> list[Outcome]:
    """One outcome per item, in order; flushed, not committed. Two calls racing on one external_id: the loser's
    insert fails on the unique constraint, and it files again, finding the winner's erasure."""
    for attempt in range(2):
        try:
            outcomes = _file(session, items, actor, coalescing)
            session.flush()
            return outcomes
        except IntegrityError:
            session.rollback()  # drops this attempt's queued follow-ups too
            if attempt:
                raise
    raise AssertionError("unreachable")


def _file(session: Session, items: list[Item | Problem], actor: str, coalescing: bool) -> list[Outcome]:
    outcomes: list[Outcome | None] = [Outcome("error", problem=i) if isinstance(i, Problem) else None for i in items]
    given = [(index, item) for index, item in enumerate(items) if isinstance(item, Item)]
    external = [item.external_id for _, item in given if item.external_id is not None]
    stored = (
        {
            row.external_id: (row.id, row.body_sha256)
            for row in session.execute(
                select(Erasure.external_id, Erasure.id, Erasure.body_sha256).where(
                    Erasure.created_by == actor, in_list(session, Erasure.external_id, external, "external_ids")
                )
            )
        }
        if external
        else {}
    )
    first_of: dict[str, int] = {}  # external_id -> the item of this call that files it
    later: list[tuple[int, int]] = []  # (item, the earlier item with its external_id)
    to_file: list[tuple[int, Item]] = []
    for index, item in given:
        ext = item.external_id
        if ext is not None and ext in stored:
            erasure_id, body = stored[ext]
            outcomes[index] = Outcome("existing", erasure_id) if body == item.body_sha256 else _reused(ext)
        elif ext is not None and ext in first_of:
            later.append((index, first_of[ext]))
        else:
            if ext is not None:
                first_of[ext] = index
            to_file.append((index, item))
    holdings = Holdings.read(session, [item for _, item in to_file])
    erasures: list[dict[str, Any]] = []
    entries: list[tuple[dict[str, Any], dict[str, Any]]] = []
    links: list[dict[str, Any]] = []
    made: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []  # (item, erasure, its requests' rows)
    for index, item in to_file:
        plan = holdings.plan(item)
        if isinstance(plan, Problem):
            outcomes[index] = Outcome("error", problem=plan)
            continue
        erasure_id = new_id("era")
        erasures.append(
            {
                "id": erasure_id,
                "external_id": item.external_id,
                "created_by": actor,
                "forget_kind": item.kind,
                "forget_count": len(item.ids),
                "skipped": plan.skipped,
                "body_sha256": item.body_sha256,
                "created_at": utcnow(),
            }
        )
        rows = []
        for model, values, forget, already in plan.requests:
            row = requests.new_request(model, (item.kind, values), forget, item.submission, actor)
            entries.append((row, {"already_erased_by": already, "erasure": erasure_id}))
            links.append({"erasure_id": erasure_id, "request_id": row["id"], "model_id": model.id})
            rows.append(row)
        made.append((index, erasures[-1], rows))
    if erasures:
        # In external_id order: two calls racing on the same items wait for each other, never deadlock.
        insert_rows(session, Erasure, sorted(erasures, key=lambda e: e["external_id"] or ""))
        requests.enter(session, entries, actor=actor, coalescing=coalescing)  # sets each row's first state
        insert_rows(session, ErasureRequest, links)
    for index, erasure, rows in made:
        filed = [{"id": row["id"], "model_id": row["model_id"], "state": row["state"]} for row in rows]
        outcomes[index] = Outcome("created", erasure["id"], view=_view(erasure, filed))
    for index, earlier in later:
        first, again, original = outcomes[earlier], items[index], items[earlier]
        assert first is not None and isinstance(again, Item) and isinstance(original, Item)
        assert again.external_id is not None
        outcomes[index] = (
            (Outcome("existing", first.erasure_id, view=first.view) if first.erasure_id else first)
            if again.body_sha256 == original.body_sha256
            else _reused(again.external_id)
        )
    return [outcome for outcome in outcomes if outcome is not None]


def _reused(external_id: str) -> Outcome:
    return Outcome(
        "error",
        problem=invalid(
            f"external_id '{external_id}' already names an erasure with a different body",
            [{"loc": ["external_id"], "msg": "reused with a different body"}],
        ),
    )


@dataclass
class Plan:
    requests: list[tuple[Model, list[str], ForgetSet, dict[str, int]]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Holdings:
    """Which training rows of which datasets the items name, and which of them each model erased already:
    read for a whole bulk call at once."""

    models: dict[str, list[Model]]  # dataset id -> its models
    num_train: dict[str, int]
    rows: dict[tuple[str, str], dict[str, dict[int, str]]]  # (kind, dataset) -> id -> {train position: sample id}
    tombstoned: dict[tuple[str, str], dict[str, str]]  # (kind, dataset) -> id -> the request that erased it
    erased: dict[str, dict[int, str]]  # model -> {position: the request that erased it}

    @classmethod
    def read(cls, session: Session, items: list[Item]) -> Holdings:
        models: dict[str, list[Model]] = defaultdict(list)
        for model in session.scalars(select(Model).order_by(Model.id)):
            models[model.dataset_id].append(model)
        datasets = session.execute(
            select(Dataset.id, Dataset.num_train, Dataset.tombstone_salt).where(Dataset.id.in_(list(models)))
        ).all()
        holdings = cls(models, {d.id: d.num_train for d in datasets}, {}, {}, {})
        wanted = {kind: list({v for item in items if item.kind == kind for v in item.ids}) for kind in KINDS}
        for kind, values in wanted.items():
            if not values or not models:
                continue
            column = Sample.sample_id if kind == "sample_ids" else Sample.subject_id
            found = session.execute(
                select(Sample.dataset_id, column, Sample.position, Sample.sample_id).where(
                    in_list(session, Sample.dataset_id, list(models), "datasets"),
                    in_list(session, column, values, kind),
                    Sample.split == "train",
                )
            )
            for dataset_id, value, position, sample_id in found:
                if value is not None:  # (it matched a named id)
                    holdings.rows.setdefault((kind, dataset_id), {}).setdefault(value, {})[position] = sample_id
            for dataset in datasets:  # ids the stored dataset no longer holds: erased from it before?
                missing = [v for v in values if v not in holdings.rows.get((kind, dataset.id), {})]
                if dataset.tombstone_salt and missing:
                    holdings.tombstoned[(kind, dataset.id)] = _tombstoned(
                        session, dataset.id, dataset.tombstone_salt, kind, missing
                    )
        ready = [m.id for ms in models.values() for m in ms if m.state == ModelState.READY]
        positions = list({p for by_id in holdings.rows.values() for held in by_id.values() for p in held})
        if ready and positions:
            for model_id, position, request_id in session.execute(
                select(ErasedSample.model_id, ErasedSample.position, ErasedSample.request_id).where(
                    in_list(session, ErasedSample.model_id, ready, "models"),
                    in_list(session, ErasedSample.position, positions, "positions"),
                )
            ):
                holdings.erased.setdefault(model_id, {})[position] = request_id
        return holdings

    def plan(self, item: Item) -> Plan | Problem:
        """The requests to file for `item` (model, ids it names in that model's dataset, forget set, rows already
        erased by which request) and the models skipped; or the problem that refuses the item."""
        plan, unknown = Plan(), dict.fromkeys(item.ids)
        for dataset_id, models in self.models.items():
            rows = self.rows.get((item.kind, dataset_id), {})
            gone = self.tombstoned.get((item.kind, dataset_id), {})
            named = [v for v in item.ids if v in rows or v in gone]
            if not named:
                continue
            for v in named:
                unknown.pop(v, None)
            positions = {p: s for v in named for p, s in rows.get(v, {}).items()}
            from_storage = Counter(gone[v] for v in named if v in gone)
            for model in models:
                if model.state == ModelState.VALIDATING:
                    return Problem(
                        409,
                        f"model '{model.id}' holds these rows and is still validating: file the erasure once it "
                        "is ready (an erasure never skips a model that may become ready)",
                        slug="model-not-ready",
                        title="Model not ready",
                    )
                if model.state != ModelState.READY:
                    plan.skipped.append(
                        _skip(model, "model_invalid", f"model is {model.state}: it cannot be unlearned")
                    )
                    continue
                erased = self.erased.get(model.id, {})
                remaining = {p: s for p, s in positions.items() if p not in erased}
                already = dict(from_storage + Counter(erased[p] for p in positions if p in erased))
                if not remaining:
                    plan.skipped.append(
                        _skip(model, "already_erased", "every row was erased already") | {"already_erased_by": already}
                    )
                    continue
                if len(positions) >= self.num_train[dataset_id]:
                    return invalid(
                        f"the rows named are the whole training set of model '{model.id}': nothing would be retained",
                        [{"loc": [item.kind], "msg": "whole training set"}],
                    )
                plan.requests.append((model, named, ForgetSet(remaining, dict(from_storage)), already))
        if unknown:
            missing = list(unknown)
            shown = ", ".join(repr(v) for v in missing[:MAX_NAMED])
            more = f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
            return invalid(
                f"{item.kind.replace('_', ' ')} held by no model's training data: {shown}{more}",
                [{"loc": [item.kind], "msg": f"{HELD_BY_NO_MODEL}: {missing[:MAX_NAMED]}"}],
            )
        return plan


def held_by_no_model(problem: Problem) -> bool:
    """Whether `problem` is the 422 of ids that no model's training data holds (nor held)."""
    return problem.status == 422 and any(
        str(e.get("msg", "")).startswith(HELD_BY_NO_MODEL) for e in problem.errors or []
    )


def _skip(model: Model, reason: str, detail: str) -> dict[str, Any]:
    return {"model_id": model.id, "reason": reason, "detail": detail}


def _tombstoned(session: Session, dataset_id: str, salt: str, kind: str, values: list[str]) -> dict[str, str]:
    """Which of `values` were erased from the stored dataset: value -> request id (domain/forget.py's
    `tombstoned`, with the dataset's salt already read)."""
    hashes: dict[str | None, str] = {id_hash(salt, v): v for v in values}
    column = SampleTombstone.sample_hash if kind == "sample_ids" else SampleTombstone.subject_hash
    rows = session.execute(
        select(column, SampleTombstone.request_id).where(
            SampleTombstone.dataset_id == dataset_id, in_list(session, column, list(hashes), kind)
        )
    )
    return {hashes[h]: request_id for h, request_id in rows}


# --- reading -----------------------------------------------------------------------------------------------


def views(session: Session, erasures: list[Erasure]) -> list[dict[str, Any]]:
    """The erasures as the API answers them, with their requests' states read in one query."""
    filed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if erasures:
        rows = session.execute(
            select(ErasureRequest.erasure_id, DeletionRequest.id, DeletionRequest.model_id, DeletionRequest.state)
            .join(DeletionRequest, DeletionRequest.id == ErasureRequest.request_id)
            .where(in_list(session, ErasureRequest.erasure_id, [e.id for e in erasures], "erasures"))
        )
        for erasure_id, request_id, model_id, state in rows:
            filed[erasure_id].append({"id": request_id, "model_id": model_id, "state": state})
    columns = ("id", "external_id", "forget_kind", "forget_count", "skipped", "created_by", "created_at")
    return [_view({c: getattr(e, c) for c in columns}, filed[e.id]) for e in erasures]


def _view(erasure: dict[str, Any], filed: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": erasure["id"],
        "external_id": erasure["external_id"],
        "state": aggregate_state(r["state"] for r in filed),
        "forget": {"kind": erasure["forget_kind"], "count": erasure["forget_count"]},
        "requests": sorted(filed, key=lambda r: r["model_id"]),
        "skipped": erasure["skipped"],
        "created_by": erasure["created_by"],
        "created_at": erasure["created_at"],
    }


def shown(session: Session, outcomes: list[Outcome]) -> list[dict[str, Any] | None]:
    """Each outcome's erasure as the API shows it: created ones as filed, earlier ones read (in one query)."""
    stored = [o.erasure_id for o in outcomes if o.erasure_id is not None and o.view is None]
    found = by_ids(session, stored) if stored else {}
    return [o.view or (found[o.erasure_id] if o.erasure_id is not None else None) for o in outcomes]


def get(session: Session, erasure_id: str) -> dict[str, Any]:
    row = session.get(Erasure, erasure_id)
    if row is None:
        raise not_found("erasure", erasure_id)
    return views(session, [row])[0]


def by_ids(session: Session, erasure_ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = session.scalars(select(Erasure).where(in_list(session, Erasure.id, erasure_ids, "ids"))).all()
    return {view["id"]: view for view in views(session, list(rows))}


def page(
    session: Session, *, external_id: str | None, page_size: int, page_token: str | None
) -> PageOf[dict[str, Any]]:
    query = select(Erasure)
    if external_id is not None:
        query = query.where(Erasure.external_id == external_id)
    rows = list(session.scalars(newest_first(query, Erasure.created_at, Erasure.id, page_size, page_token)))
    found = newest_page(rows, page_size)
    return PageOf(views(session, found.items), found.next_page_token)


def report(session: Session, erasure_id: str, seal_key: Ed25519PublicKey) -> dict[str, Any]:
    """One report over the erasure and every request it filed (each request's own proof-of-erasure report,
    domain/evidence.py), for the caller to sign once; 409 until every request succeeded."""
    view = get(session, erasure_id)
    if view["state"] != ErasureState.SUCCEEDED:
        raise Problem(
            409,
            f"the report of an erasure exists once every request it filed succeeded (state: {view['state']})",
            slug="report-not-ready",
            title="Report not ready",
        )
    return {
        "format": REPORT_FORMAT,
        "issued_at": utcnow().isoformat(),
        "service": evidence.code_version(),
        "erasure": {
            "id": view["id"],
            "external_id": view["external_id"],
            "forget": view["forget"],  # how many ids were named, never which
            "created_by": view["created_by"],
            "created_at": view["created_at"].isoformat(),
            "skipped": view["skipped"],
        },
        "requests": [evidence.build_report(session, r["id"], seal_key) for r in view["requests"]],
    }
