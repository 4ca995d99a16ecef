"""Validating an uploaded dataset's CSV manifest of sample locations against its shards (api/ingest.py):
every line checked, split positions assigned. Every problem found is reported together (up to a limit),
naming the manifest line."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import BinaryIO

from api.ingest import MAX_REPORTED, ShardInfo, check_shards_agree, dataset_shape
from domain.inputs import text_problem
from domain.problems import invalid

MAX_CLASSES = 100_000  # as the num_classes form fields allow
MAX_FIELD = 200  # characters of a sample or subject id, as the database columns hold
REQUIRED_COLUMNS = ("sample_id", "split", "shard", "row")


@dataclass(frozen=True)
class ParsedDataset:
    samples: list[dict]  # sample_id, subject_id, split, position, shard, row, label
    num_train: int
    num_test: int
    num_classes: int
    input_shape: tuple[int | None, ...]
    input_dtype: str
    input_encoding: str


def parse_manifest(file: BinaryIO, shards: list[ShardInfo], num_classes: int | None) -> ParsedDataset:
    """Read the manifest CSV, check every line against the shards, and assign split positions."""
    check_shards_agree(shards)
    file.seek(0)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        return _parse_lines(csv.DictReader(text), shards, num_classes)
    except UnicodeDecodeError as error:
        raise invalid("manifest is not UTF-8 text", [{"loc": ["manifest"], "msg": str(error)}]) from error
    except csv.Error as error:  # e.g. a field over the csv module's limit (128 KiB)
        raise invalid(f"manifest is not a readable CSV: {error}", [{"loc": ["manifest"], "msg": str(error)}]) from error
    finally:
        text.detach()  # leave the upload's file open for the caller


def _parse_lines(reader: csv.DictReader, shards: list[ShardInfo], num_classes: int | None) -> ParsedDataset:
    by_name = {s.name: (index, s) for index, s in enumerate(shards)}
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise invalid(
            f"manifest: missing columns {missing}; the header must be "
            "sample_id,split,shard,row with an optional subject_id",
            [{"loc": ["manifest", "header"], "msg": f"missing {missing}"}],
        )
    errors: list[dict] = []
    seen: set[str] = set()
    samples: list[dict] = []
    counts = {"train": 0, "test": 0}
    max_label = -1

    def problem(line: int, message: str) -> None:
        if len(errors) < MAX_REPORTED:
            errors.append({"loc": ["manifest", f"line {line}"], "msg": message})

    for line, record in enumerate(reader, start=2):
        sample_id, split, shard_name = record["sample_id"] or "", record["split"] or "", record["shard"] or ""
        if not sample_id:
            problem(line, "empty sample_id")
            continue
        if len(sample_id) > MAX_FIELD or len(record.get("subject_id") or "") > MAX_FIELD:
            problem(line, f"sample_id and subject_id must be at most {MAX_FIELD} characters")
            continue
        if bad := text_problem(sample_id) or text_problem(record.get("subject_id") or ""):
            problem(line, f"sample_id and subject_id must be text without control characters: {bad}")
            continue
        if sample_id in seen:
            problem(line, f"duplicate sample_id '{sample_id}'")
            continue
        seen.add(sample_id)
        if split not in counts:
            problem(line, f"split must be 'train' or 'test', got '{split}'")
            continue
        if shard_name not in by_name:
            problem(line, f"unknown shard '{shard_name}' (uploaded: {', '.join(by_name)})")
            continue
        shard_index, shard = by_name[shard_name]
        raw_row = record["row"] or ""
        if not (raw_row.isascii() and raw_row.isdigit() and len(raw_row) <= 12):  # int() would take "0_1"
            problem(line, f"row must be a non-negative integer, got '{raw_row[:40]}'")
            continue
        row = int(raw_row)
        if not 0 <= row < shard.rows:
            problem(line, f"row {row} out of range: shard '{shard_name}' has {shard.rows} rows")
            continue
        label = int(shard.labels[row])
        limit = num_classes if num_classes is not None else MAX_CLASSES
        if not 0 <= label < limit:
            problem(line, f"label {label} of shard '{shard_name}' row {row} is out of range [0, {limit})")
            continue
        max_label = max(max_label, label)
        samples.append(
            {
                "sample_id": sample_id,
                "subject_id": record.get("subject_id") or None,
                "split": split,
                "position": counts[split],
                "shard": shard_index,
                "row": row,
                "label": label,
            }
        )
        counts[split] += 1
    if errors:
        more = " (first problems shown)" if len(errors) == MAX_REPORTED else ""
        raise invalid(f"manifest has invalid lines{more}: {errors[0]['loc'][1]}: {errors[0]['msg']}", errors)
    for split, count in counts.items():
        if count == 0:
            raise invalid(f"manifest has no {split} rows", [{"loc": ["manifest"], "msg": f"no {split} rows"}])
    classes = num_classes if num_classes is not None else max_label + 1
    if classes < 2:
        raise invalid("a dataset needs at least 2 classes", [{"loc": ["manifest"], "msg": "fewer than 2 classes"}])
    return ParsedDataset(
        samples,
        counts["train"],
        counts["test"],
        classes,
        dataset_shape(shards),
        shards[0].input_dtype,
        shards[0].encoding,
    )
