"""README's first command, `make run` (`mcu demo`): the whole flow on the embedded default, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import free_port


def test_the_demo_runs_the_whole_flow_and_its_report_verifies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")} | {"MCU_DATA_DIR": str(tmp_path / "data")}
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--port", str(free_port()), "--report", str(report)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-2]
    assert "signature VALID" in last and "erasure criterion met" in last and "answered in time" in last, last
    document = json.loads(report.read_text())
    assert document["report"]["erasure_criterion"]["met"] is True
    assert "is now at version 2 (parent 1)" in done.stdout
