"""Installing is quiet: the package builds without deprecation warnings, and setup.sh says one
line per phase, showing a phase's output only when it fails."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def source_copy(tmp: Path) -> Path:
    """What the build reads, copied so that build outputs never land in the checkout."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fuzzconv", src / "fuzzconv",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def test_the_package_builds_without_a_deprecation_warning(tmp_path: Path) -> None:
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX licences (needs >= 77)")
    src = source_copy(tmp_path)
    out = tmp_path / "dist"
    # -v shows everything the build backend prints; --no-build-isolation needs no network
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps",
                            "--no-build-isolation", "--disable-pip-version-check", "-w", str(out),
                            str(src)], capture_output=True, text=True)
    sdist = subprocess.run([sys.executable, "-W", "default", "-c",
                            "import sys; from setuptools import build_meta as b; "
                            "print(b.build_sdist(sys.argv[1]))", str(out)],
                           cwd=src, capture_output=True, text=True)
    for build in (wheel, sdist):
        assert build.returncode == 0, build.stdout + build.stderr
        text = build.stdout + build.stderr
        assert "deprecat" not in text.lower(), text
    assert sorted(p.suffix for p in out.iterdir()) == [".gz", ".whl"]


def fake_python(tmp: Path) -> Path:
    """A stand-in interpreter: `-m venv D` makes D/bin/python (itself); pip prints what pip and
    setuptools print, and fails when FAKE_PIP_FAILS is set."""
    exe = tmp / "fakebin" / "python-fake"
    exe.parent.mkdir()
    exe.write_text("""#!/usr/bin/env bash
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip")
    echo "WARNING: Location 'file:///opt/x' is ignored"
    echo "SetuptoolsDeprecationWarning: License classifiers are deprecated." >&2
    if [ -n "${FAKE_PIP_FAILS:-}" ]; then echo "ERROR: No matching distribution" >&2; exit 1; fi ;;
esac
exit 0
""")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    chromium = exe.parent / "chromium"  # present: setup.sh installs nothing with apt
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    return exe


def setup_sh(src: Path, exe: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(src / "scripts" / "setup.sh")], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": str(exe),
                                          "PATH": f"{exe.parent}:{os.environ['PATH']}", **env})


def test_setup_prints_one_line_a_phase_and_the_output_only_of_a_failure(tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    (src / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", src / "scripts" / "setup.sh")
    exe = fake_python(tmp_path)

    failed = setup_sh(src, exe, FAKE_PIP_FAILS="1")
    assert failed.returncode != 0
    assert "failed: upgrading pip" in failed.stderr and "No matching distribution" in failed.stderr
    assert not (src / ".venv" / ".fuzzconv-installed").exists()

    first = setup_sh(src, exe)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == ""
    phases = first.stdout.splitlines()
    assert phases[0].startswith("upgrading pip")  # the venv was made by the failed run
    assert len(phases) == 3 and "Warning" not in first.stdout and "WARNING" not in first.stdout

    again = setup_sh(src, exe)
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout.splitlines() == ["fuzzconv is already installed in .venv"]
