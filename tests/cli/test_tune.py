"""``fuzzconv tune`` refuses bad input before any work: one line on stderr, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fuzzconv.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args, says", [
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--model", "tiny_keras", "--target", "cuda"], "bad target 'cuda'"),
    (["--model", "tiny_keras", "--target", '{"kind": "llvm"'], "not JSON"),
    (["--model", "tiny_keras", "--target", '{"kind": "cuda"}'], "LLVM (CPU) target"),
    (["--model", "tiny_keras", "--budget", "0"], "must be positive"),
    (["--model", "tiny_keras", "--budget", "soon"], "bad budget 'soon'"),
    (["--budget", "5m"], "--model"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    store = tmp_path / "store"
    r = runner.invoke(app, ["tune", *args, "--store", str(store)])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and says in lines[0], lines
    assert "Traceback" not in r.output
    assert not store.exists()  # refused before the store was touched
