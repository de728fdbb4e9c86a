"""Standalone bug bundles: ``fuzzconv bundle ID -o DIR``.

A bundle is a directory a library's maintainers can run without fuzzconv::

    README.md                 the issue text: title, environment, steps, expected vs actual,
                              flip rate
    repro.py                  numpy + the culprit's own libraries; prints REPRODUCED (exit 1) or
                              NOT REPRODUCED (exit 0); exit 2 when a library is missing
    input/                    the culprit step's input artifact (model.onnx, model.keras,
                              model.tflite, module.json + module.constants.npz + layout.json,
                              model.torch.json + its files, lib.so), or the reduced ONNX subgraph
                              when the finding has one
    inputs.npy                the finding's minimal inputs, preprocessed for the model
    expected.npy              what those inputs gave *before* the culprit: its input artifact run
                              the plainest way (not for crash/timeout)
    actual.npy                what repro.py got when the bundle was written
    finding.json              the finding as stored, pipeline.json its minimal pipeline
    plugin/<file>.py          the plugin file, when the culprit is a plugin step
    fuzzconv_plugins_shim.py  stands in for ``fuzzconv.plugins`` so the plugin file imports alone
    model/, model.onnx,       for a generated model: the minimal model's source script and
    test_data_set_0/          weights, and the ONNX the culprit received in ONNX's backend-test
                              layout (:mod:`.model`)

How it is made
--------------
:mod:`.case` finds the culprit, the chain ``repro.py`` runs (the culprit, then the plainest
completion the culprit search judged), its input artifact and the inputs. ``repro.py`` is
:mod:`.harness` with the finding filled in and fuzzconv's own code for every step and runtime of
that chain copied from its source (:mod:`.script`, :mod:`.sources`): each step owns its recipe,
and the bundle only assembles them, so ``repro.py`` computes what fuzzconv computed. It judges with
fuzzconv's oracle: any symptom the finding names (``label_flip``, ``numeric``, ``nan``) with the
campaign's tolerances, the culprit failing with the same error class (``crash``), or not
finishing (``timeout``); a reduced subgraph is judged per tensor
(:func:`fuzzconv.activations.activation_divergence`), since its output is an activation.

Before returning, :func:`write_bundle` runs the bundle's ``repro.py`` once with this interpreter
and puts its output in the README (:mod:`.readme`); a reduced subgraph that does not reproduce on
its own is replaced by the full input artifact. Nothing is written outside the output directory
(:mod:`.outdir`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ...registry import plugin_files
from ...session import finding_session
from .case import Case, Variant, full_variant, plan, reduced_variant
from .model import write_model
from .outdir import OutDir
from .readme import readme
from .script import culprit_source, render, shim_text

__all__ = ["write_bundle"]


def write_bundle(store: Path, finding_id: str, out_dir: Path, plugins: list[Path] | tuple = (),
                 *, verify: bool = True, say: Callable[[str], None] = lambda s: None) -> Path:
    """Write the standalone bug case of a stored finding to ``out_dir``.

    Args:
        store: the store directory.
        finding_id: a finding ID or unique prefix.
        out_dir: the bundle directory (created; an existing file is refused).
        plugins: plugin files the finding's pipeline uses.
        verify: run the bundle's ``repro.py`` once (with this interpreter, which has the culprit's
            libraries) and record its output in the README. Defaults to True.
        say: progress messages.

    Returns:
        The bundle directory, resolved. The finding's ``bundle`` field is set to it.
    """
    with finding_session(store, finding_id, plugins, say) as (ex, db, f, _cfg, _corpus):
        case = plan(ex, db, f)
        out = OutDir(out_dir)
        variant, run, dists = None, None, []
        reduced = reduced_variant(case, say)
        if reduced is not None:
            run, dists = _assemble(out, case, reduced, verify, say)
            if run is None or run[0] == 1:
                variant = reduced
            else:
                say("the reduced subgraph does not reproduce on its own; bundling the full model")
        if variant is None:
            variant = full_variant(case, say)
            if reduced is not None:
                variant.note = ("The finding's reduced ONNX subgraph did not reproduce on its own "
                                "with the plainest runtime, so the full input artifact is bundled.")
            run, dists = _assemble(out, case, variant, verify, say)
        model_files = write_model(out, case, variant, say) if case.spec.generated else []
        out.write_text("README.md", readme(case, variant, dists, culprit_source(case), run,
                                           _recorded(out), model_files))
        db.set_finding_status(f["id"], f["status"], {"bundle": str(out.root)})
        out.write_text("finding.json", json.dumps(db.finding(f["id"]), indent=2, sort_keys=True,
                                                  default=str) + "\n")
    return out.root


def _assemble(out: OutDir, case: Case, variant: Variant, verify: bool,
              say: Callable[[str], None]) -> tuple[tuple[int, str] | None, list[str]]:
    """Write repro.py and its data; run it when ``verify``. Returns ((exit code, stdout) or None,
    the distributions repro.py needs)."""
    f = case.finding
    out.clear()
    for src in variant.input_files:
        out.copy(src, f"input/{src.name}")
    out.save("inputs.npy", variant.inputs.astype(np.float32))
    if variant.expected is not None:
        out.save("expected.npy", np.asarray(variant.expected, dtype=np.float32))
    if case.op.is_plugin:
        for rel, source in plugin_files(case.op.source_file or ""):  # with the helpers it imports
            out.copy(source, f"plugin/{rel}")
        out.write_text("fuzzconv_plugins_shim.py", shim_text())
    text, dists = render(case, variant)
    out.write_text("repro.py", text)
    out.write_text("pipeline.json", json.dumps(case.pipeline.to_dict(), indent=2) + "\n")
    if not verify or f["symptom"] == "timeout":
        return None, dists
    say("checking the bundle: python repro.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    limit = case.ex.timeout_for(case.element.name) + 600
    try:
        proc = subprocess.run([sys.executable, str(out.path("repro.py")), "--actual-out",
                               str(out.path("actual.npy"))], cwd=out.root, env=env,
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return (-1, f"repro.py did not finish within {limit:g} s"), dists
    return (proc.returncode, proc.stdout), dists


def _recorded(out: OutDir) -> np.ndarray | None:
    """The outputs repro.py recorded when the bundle was checked, if it got that far."""
    p = out.path("actual.npy")
    return np.load(p, allow_pickle=False) if p.exists() else None
