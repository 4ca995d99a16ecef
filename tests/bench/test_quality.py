"""bench.quality's tables from runs cut short: what a stopped run measured stays usable, and says it is partial."""

import json
from pathlib import Path

from bench.quality import aggregate, merge


def _rows(*methods: str, gap: float = 1.0) -> dict:
    return {m: {"UA": 0.1, "RA": 0.9, "avg_gap": gap} for m in methods}


def test_a_seed_cut_short_leaves_only_the_methods_every_seed_has() -> None:
    rows = aggregate([_rows("retrain", "rl", "mcu(rl)", gap=1.0), _rows("retrain", "rl", gap=3.0)])
    assert [r["method"] for r in rows] == ["retrain", "rl"]
    assert rows[1]["avg_gap"] == 2.0 and rows[1]["std"]["avg_gap"] == 1.0


def test_a_merge_of_a_partial_run_is_marked_partial(tmp_path: Path) -> None:
    setting = {"dataset": "fashion", "scenario": "random50", "architecture": "cnn-small", "augmentation": "crop_flip"}
    files = []
    for seed, complete, methods in ((0, True, ("retrain", "rl", "mcu(rl)")), (1, False, ("retrain", "rl"))):
        payload = setting | {"seeds": [seed], "complete": complete, "per_seed": [_rows(*methods)]}
        files.append(tmp_path / f"seed{seed}.json")
        files[-1].write_text(json.dumps(payload))
    merge(files, tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["complete"] is False and merged["seeds"] == [0, 1]
    assert [r["method"] for r in merged["rows"]] == ["retrain", "rl"]
    files[1].write_text(json.dumps(json.loads(files[1].read_text()) | {"complete": True}))
    merge(files, tmp_path / "merged.json")
    assert json.loads((tmp_path / "merged.json").read_text())["complete"] is True
