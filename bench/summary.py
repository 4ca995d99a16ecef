"""The base → MCU summary over quality results: one cell per (table, base method), goals checked.

    python -m bench.summary docs/results/quality-*.json

Per cell: the base method's Avg. Gap, MCU's at its recommended t, the best measured point's (oracle) and
whether MCU(b) ≤ b + 0.05 points; per table the means; overall the mean of recommended − oracle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import markdown_table

TOLERANCE = 0.05  # points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    rows, misses, distance = [], [], []
    for path in args.files:
        payload = json.loads(path.read_text())
        by_method = {r["method"]: r for r in payload["rows"]}
        bases = [m for m in by_method if f"mcu({m})" in by_method]
        for base in bases:
            mcu = by_method[f"mcu({base})"]
            ok = mcu["avg_gap"] <= by_method[base]["avg_gap"] + TOLERANCE
            distance.append(mcu["avg_gap"] - mcu["oracle_gap"])
            rows.append(
                [
                    f"{payload['dataset']} {payload['scenario']}",
                    base,
                    f"{by_method[base]['avg_gap']:.2f}",
                    f"{mcu['avg_gap']:.2f}",
                    f"{mcu['oracle_gap']:.2f}",
                    f"{mcu['published_rule_gap']:.2f}",
                    "yes" if ok else "**no**",
                ]
            )
            if not ok:
                misses.append(f"{payload['dataset']} {payload['scenario']} {base}")
        base_mean = sum(by_method[b]["avg_gap"] for b in bases) / len(bases)
        mcu_mean = sum(by_method[f"mcu({b})"]["avg_gap"] for b in bases) / len(bases)
        rows.append(
            [
                f"{payload['dataset']} {payload['scenario']}",
                "**mean**",
                f"{base_mean:.2f}",
                f"{mcu_mean:.2f}",
                "",
                "",
                "yes" if mcu_mean < base_mean else "**no**",
            ]
        )
    print(
        markdown_table(
            [
                "table",
                "base",
                "base gap",
                "MCU gap",
                "MCU oracle gap",
                "published rule gap",
                f"MCU ≤ base + {TOLERANCE}",
            ],
            rows,
        )
    )
    print(f"\ncells missing MCU ≤ base + {TOLERANCE}: {misses or 'none'}")
    print(f"recommended − oracle, mean over cells: {sum(distance) / len(distance):.3f} points")


if __name__ == "__main__":
    main()
