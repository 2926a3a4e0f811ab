"""bench/run.py keeps working: a tiny run passes its own correctness checks (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_tiny_benchmark_run_changes_the_same_rows_as_the_raw_statements():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--rows", "3000",
                             "--backend", "sqlite", "--no-save"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "delete" in result.stdout and "anonymize" in result.stdout and "cascade" in result.stdout
