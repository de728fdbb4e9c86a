"""`benchmarks/run_faults.py --quick`: with ``--focus`` every injected fault is found on the tiny
model and blamed on exactly its step and parameters, and no hunt makes a false finding (the suite's
goals), through real hunts.

This is the tiny-model part of the fault benchmark that CI runs; it takes a while (twenty short
hunts), so it is one test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import needs

ROOT = Path(__file__).resolve().parents[2]


@needs("tf", "ort", "torch", "tvm")
def test_quick_fault_suite_meets_its_goals(tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_faults.py"), "--quick",
                          "--no-write", "--work", str(tmp_path / "work"), "--json", str(out)],
                         capture_output=True, text=True, timeout=3600)
    runs = json.loads(out.read_text())
    faults = {r["fault"] for r in runs}
    assert len(faults) >= 10
    assert {r["fault"] for r in runs if r["focus"]} == faults  # every fault focused
    assert len([r for r in runs if not r["focus"]]) >= len(faults) - 2  # and most unfocused
    # with --focus every fault is found and blamed exactly; nowhere a false finding
    focused = [r for r in runs if r["focus"]]
    missed = [r["fault"] for r in focused if not (r["detected"] and r["culprit_exact"])]
    assert not missed, res.stdout[-3000:]
    assert not [r["false"] for r in runs if r["false"]]
    assert all(r["culprit_exact"] for r in runs if r["detected"])
    assert res.returncode == 0
    # the nondeterministic fault must come out flaky; localization names the modified node
    assert all(r["flaky_found"] for r in runs if r["fault"] == "flaky_noise")
    matched = [r for r in runs if r["node_match"] is not None]
    assert matched and all(r["node_match"] for r in matched), \
        [(r["fault"], r["node_expected"], r["node_found"], r["error"]) for r in matched if not r["node_match"]]
