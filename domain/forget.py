"""Forget sets: a selector (sample ids, subject ids or classes) resolved to training rows in one query, the
record of rows already erased from a model, and the tombstones of rows erased from the stored dataset."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.problems import Problem, invalid
from models import Dataset, ErasedSample, Sample, SampleTombstone, in_list

MAX_NAMED = 20


@dataclass(frozen=True)
class ForgetSet:
    sample_ids: dict[int, str]  # train position -> sample id
    # Named ids erased from the stored dataset already (tombstones): request id -> how many.
    erased_from_storage: dict[str, int] = field(default_factory=dict)

    @property
    def positions(self) -> list[int]:
        return sorted(self.sample_ids)

    @property
    def fingerprint(self) -> str:
        """sha256 of the sorted sample ids, one per line: what a caller can recompute to check the set."""
        return hashlib.sha256("\n".join(sorted(self.sample_ids.values())).encode()).hexdigest()

    def salted_fingerprint(self, salt: str) -> str:
        """The same, salted: a report can name the set without letting anyone test a guessed list of ids
        against another request's fingerprint."""
        return id_hash(salt, "\n".join(sorted(self.sample_ids.values())))

    def without(self, positions: set[int]) -> ForgetSet:
        return ForgetSet({p: s for p, s in self.sample_ids.items() if p not in positions}, self.erased_from_storage)


def id_hash(salt: str, value: str) -> str:
    """A tombstone's form of a sample or subject id: salted per dataset, so a tombstone table does not confirm
    a guessed id list by plain hashing."""
    return hashlib.sha256(f"{salt}\n{value}".encode()).hexdigest()


def tombstoned(session: Session, dataset_id: str, kind: str, values: list[str]) -> dict[str, str]:
    """Which of `values` (sample or subject ids) were erased from the stored dataset: value -> request id."""
    salt = session.scalar(select(Dataset.tombstone_salt).where(Dataset.id == dataset_id))
    if salt is None or not values:
        return {}
    hashes: dict[str | None, str] = {id_hash(salt, v): v for v in values}  # subject_hash is nullable
    column = SampleTombstone.sample_hash if kind == "sample_ids" else SampleTombstone.subject_hash
    rows = session.execute(
        select(column, SampleTombstone.request_id).where(
            SampleTombstone.dataset_id == dataset_id, in_list(session, column, list(hashes), kind)
        )
    )
    return {hashes[h]: request_id for h, request_id in rows}


def already_erased(counts: dict[str, int]) -> Problem:
    named = ", ".join(sorted(counts))
    return Problem(
        409,
        f"every sample named was already erased from this model by deletion request(s) {named}",
        slug="already-erased",
        title="Already erased",
    )


def _named(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_NAMED])
    return shown + (f" and {len(values) - MAX_NAMED} more" if len(values) > MAX_NAMED else "")


def resolve_forget(
    session: Session, dataset_id: str, num_train: int, num_classes: int, kind: str, values: list[Any]
) -> ForgetSet:
    """Rows of the training split named by the selector; 422 naming whatever is unknown or invalid."""
    wanted = list(dict.fromkeys(values))
    columns = select(Sample.sample_id, Sample.split, Sample.position, Sample.subject_id, Sample.label).where(
        Sample.dataset_id == dataset_id
    )
    if kind == "classes":
        bad = [c for c in wanted if not 0 <= c < num_classes]
        if bad:
            raise invalid(
                f"classes out of range [0, {num_classes}): {_named(bad)}",
                [{"loc": ["forget", "classes"], "msg": f"out of range: {bad[:MAX_NAMED]}"}],
            )
        rows = session.execute(
            columns.where(Sample.split == "train", in_list(session, Sample.label, wanted, kind))
        ).all()
    else:
        column = Sample.sample_id if kind == "sample_ids" else Sample.subject_id
        rows = session.execute(columns.where(in_list(session, column, wanted, kind))).all()
    gone: dict[str, str] = {}
    if kind != "classes":
        found = {r.sample_id if kind == "sample_ids" else r.subject_id for r in rows}
        unknown = [s for s in wanted if s not in found]
        gone = tombstoned(session, dataset_id, kind, unknown) if unknown else {}
        unknown = [s for s in unknown if s not in gone]
        if unknown:
            raise invalid(
                f"unknown {kind.replace('_', ' ')}: {_named(unknown)}",
                [{"loc": ["forget", kind], "msg": f"unknown: {unknown[:MAX_NAMED]}"}],
            )
    in_test = [r.sample_id for r in rows if r.split != "train"]
    if kind == "sample_ids" and in_test:
        raise invalid(
            f"sample ids in the test split cannot be forgotten (the model never trained on them): {_named(in_test)}",
            [{"loc": ["forget", "sample_ids"], "msg": "test split"}],
        )
    train = [r for r in rows if r.split == "train"]
    erased_from_storage = dict(Counter(gone.values()))
    if not train and erased_from_storage:
        raise already_erased(erased_from_storage)
    if not train:
        raise invalid("the forget set is empty: no training samples match", [{"loc": ["forget"], "msg": "empty"}])
    if len(train) >= num_train:
        raise invalid(
            "the forget set is the whole training set: nothing would be retained",
            [{"loc": ["forget"], "msg": "whole training set"}],
        )
    return ForgetSet({r.position: r.sample_id for r in train}, erased_from_storage)


def erased_by(session: Session, model_id: str, positions: list[int]) -> dict[int, str]:
    """Which of `positions` earlier requests erased from the model: position -> request id."""
    return dict(
        session.execute(
            select(ErasedSample.position, ErasedSample.request_id).where(
                ErasedSample.model_id == model_id, in_list(session, ErasedSample.position, positions, "positions")
            )
        ).all()
    )


def erased_positions(session: Session, model_id: str) -> list[int]:
    """Every training row erased from the model: they take no part in later jobs."""
    return list(
        session.scalars(
            select(ErasedSample.position).where(ErasedSample.model_id == model_id).order_by(ErasedSample.position)
        )
    )


def record_erased(session: Session, model_id: str, positions: list[int], request_id: str) -> None:
    """The rows a published version erased; rows an earlier request already erased keep that record."""
    already = erased_by(session, model_id, positions)
    session.add_all(
        ErasedSample(model_id=model_id, position=p, request_id=request_id) for p in positions if p not in already
    )


def drop_already_erased(session: Session, model_id: str, forget: ForgetSet) -> tuple[ForgetSet, dict[str, int]]:
    """Remove rows erased by the model's succeeded requests; 409 naming them when nothing is left.

    Returns the remaining set and how many rows each earlier request had already erased (from this model, or
    from the stored dataset: tombstones).
    """
    erased = erased_by(session, model_id, forget.positions)
    counts = Counter(forget.erased_from_storage) + Counter(erased.values())
    remaining = forget.without(set(erased))
    if not remaining.sample_ids:
        raise already_erased(dict(counts))
    return remaining, dict(counts)
