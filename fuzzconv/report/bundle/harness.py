#!/usr/bin/env python3
"""The check a bug bundle's ``repro.py`` runs, as a template the bundle writer fills in.

The writer replaces the two marked blocks below: the finding's constants, and the fuzzconv code
the check runs — the imports in that block are replaced by the source of what they name (see
:mod:`fuzzconv.report.bundle.sources`), followed by the functions of the culprit's chain. The rest
is ``repro.py`` as it is shipped: it runs the chain (the culprit, then the plainest way to get
outputs from what it made) in a child process, so a crash, even a segfault, is observed, and
judges the outputs with fuzzconv's own oracle. Run it with fuzzconv installed and it checks the
example below (useful in tests); in a bundle it needs only numpy and the culprit's libraries.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# -- the finding --------------------------------------------------------------------------------
FINDING = "F-00000000"
#: What the finding is: label_flip, numeric, nan, crash or timeout.
SYMPTOM = "label_flip"
#: How actual is judged against expected: the symptom, or "activation" for a reduced subgraph.
COMPARE = "label_flip"
CULPRIT = "step(params)"
#: What repro.py runs on the input artifact: (step or runtime, its parameters, the file a step
#: writes; None for the runtime, which is last). The culprit is first; what follows is the
#: plainest way to get outputs from what it made.
CHAIN: list[tuple[str, dict[str, Any], str | None]] = []
#: The error class the finding recorded (crash findings).
ERROR_CLASS: str | None = None
#: The culprit's input.
INPUT = HERE / "input" / "model.onnx"
#: What each row of inputs.npy is.
INPUTS: list[str] = []
#: The model as fuzzconv's zoo describes it (what a step's ctx.model holds).
MODEL: dict[str, Any] = {"name": "example", "layout": "NCHW", "input_shape": [3, 4, 4],
                         "classes": 10}
DEVICE = "cpu"
BATCH_SIZE = 8
#: The campaign's oracle tolerances.
THRESHOLDS: dict[str, float] = {}
TIMEOUT_S = 600.0
#: What must import before anything runs; PINS installs it.
MODULES: list[str] = ["numpy"]
PINS = "numpy"
#: The plugin file that defines a plugin step in CHAIN.
PLUGIN: Path | None = None
#: The child's exit code when a package is missing.
EXIT_MISSING = 3
# -- end of the finding -------------------------------------------------------------------------


def plugin_function(name: str, apply: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A step or runtime of the plugin file: its own function, or through ``apply`` (fuzzconv's
    wrapper of an ONNX or TVM transform), imported from the file when first called."""

    def run(ctx: Any, *args: Any, **params: Any) -> Any:
        import fuzzconv_plugins_shim

        fn = fuzzconv_plugins_shim.load(PLUGIN, name, StepContext)
        return fn(ctx, *args, **params) if apply is None else apply(fn, *args, **params)

    return run


# -- fuzzconv's code ----------------------------------------------------------------------------
from fuzzconv.activations import activation_divergence  # noqa: E402
from fuzzconv.oracle import Thresholds, compare, judge, top_k  # noqa: E402
from fuzzconv.plugins import StepContext  # noqa: E402
from fuzzconv.worker_main import infer_batches  # noqa: E402

#: The function of each step and runtime in CHAIN, by name.
FUNCTIONS: dict[str, Callable[..., Any]] = {}
# -- end of fuzzconv's code ---------------------------------------------------------------------


def child(stage_file: str, actual_file: str) -> int:
    """Run the chain on the inputs, writing the index of the element running (in a child)."""
    stage = Path(stage_file)
    stage.write_text("import")
    for module in MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"cannot import {module} ({exc}): pip install {PINS}", file=sys.stderr)
            return EXIT_MISSING
    x = np.load(HERE / "inputs.npy", allow_pickle=False)
    try:
        y = run_chain(x, stage)
    except BaseException as exc:
        # the error as raised: what a library logs after its traceback must not stand for it
        first = (str(exc).strip().splitlines() or [""])[0]
        stage.with_name("error").write_text(f"{type(exc).__name__}: {first}")
        raise
    np.save(actual_file, y, allow_pickle=False)
    stage.write_text("done")
    return 0


def run_chain(x: np.ndarray, stage: Path) -> np.ndarray:
    """Every element of CHAIN in turn on the inputs; the runtime's outputs."""
    y = None
    with tempfile.TemporaryDirectory() as tmp:
        artifact = INPUT
        for i, (name, params, output) in enumerate(CHAIN):
            stage.write_text(str(i))
            if output is None:  # the runtime
                predict = FUNCTIONS[name](StepContext(MODEL, DEVICE, tmp), artifact, **params)
                y = infer_batches(predict, x, BATCH_SIZE, MODEL["classes"])
            else:
                dst = Path(tmp) / str(i) / output
                dst.parent.mkdir()
                FUNCTIONS[name](StepContext(MODEL, DEVICE, str(dst.parent)), artifact, dst,
                                **params)
                artifact = dst
    assert y is not None, "CHAIN ends with a runtime"
    return y


def run_child() -> tuple[str, int | None, str, np.ndarray | None]:
    """(stage reached, exit code or None after TIMEOUT_S, its stderr, the outputs it wrote)."""
    with tempfile.TemporaryDirectory() as tmp:
        stage, actual = Path(tmp) / "stage", Path(tmp) / "actual.npy"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(stage), str(actual)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
            code, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code = None
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        reached = stage.read_text() if stage.exists() else "start"
        y = np.load(actual, allow_pickle=False) if code == 0 else None
        raised = Path(tmp) / "error"
        if code and code > 0 and raised.exists():
            err = err.rstrip() + "\n" + raised.read_text()  # its last line is the error raised
    return reached, code, err, y


def error_of(code: int | None, err: str) -> str:
    """The error class (a signal name, or the exception's class) and its message."""
    if code is None:
        return f"Timeout: did not finish within {TIMEOUT_S:g} s"
    if code < 0:
        return f"{signal.Signals(-code).name}: killed by a signal"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {code}"


def same_class(error: str) -> bool:
    """Whether the error is of the finding's class (exception names compared unqualified)."""
    return error.split(":", 1)[0].strip().rsplit(".", 1)[-1] == ERROR_CLASS


def show(expected: np.ndarray, actual: np.ndarray) -> None:
    """Print expected against actual, one line per input."""
    diff = np.abs(actual.astype(np.float64) - expected)
    if COMPARE == "activation":
        print(f"{'input':<60} {'max |diff|':>11} {'expected range':>15}")
        for i, name in enumerate(INPUTS):
            print(f"{name:<60} {np.nanmax(diff[i]):>11.4g} {np.ptp(expected[i]):>15.4g}")
        return
    e_top = top_k(expected, 1)[:, 0]
    a_top = top_k(np.where(np.isfinite(actual), actual, -np.inf), 1)[:, 0]
    print(f"{'input':<44} {'expected top-1 (logit)':>24} {'actual top-1 (logit)':>24} "
          f"{'max |diff|':>11}")
    for i, name in enumerate(INPUTS):
        print(f"{name:<44} {f'{e_top[i]} ({expected[i, e_top[i]]:.4f})':>24} "
              f"{f'{a_top[i]} ({actual[i, a_top[i]]:.4f})':>24} {np.nanmax(diff[i]):>11.4g}")


def verdict(expected: np.ndarray, actual: np.ndarray) -> tuple[bool, str]:
    """Whether actual shows the finding against expected, and why: fuzzconv's oracle with the
    campaign's tolerances (per tensor for a reduced subgraph's activation)."""
    if expected.shape != actual.shape:
        return False, f"output shape {actual.shape} differs from the expected {expected.shape}"
    thresholds = Thresholds(**THRESHOLDS)
    if COMPARE == "activation":
        err = activation_divergence(expected, actual, thresholds)
        floor = thresholds.atol * thresholds.rtol
        return err.diverges, (
            f"max |actual - expected| = {err.max_abs:.4g}, {err.max_rel:.3g} of the expected "
            f"range (divergent past {thresholds.rtol:g} of it and {floor:g})")
    cmp = compare(expected, actual, thresholds)
    found = judge(cmp, thresholds)
    return found == SYMPTOM, (
        f"the top-1 label changed on {cmp.flips} of {cmp.images} inputs ({cmp.tie_flips} more "
        f"near-ties), {cmp.nan} hold NaN or Inf, max |actual - expected| = "
        f"{cmp.max_abs_diff:.4g} ({cmp.max_rel_diff:.3g} of the expected range): "
        + (f"{found}" if found else "they agree"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2])
    print(f"fuzzconv finding {FINDING}: {SYMPTOM} in {CULPRIT}")
    print(f"input artifact: {INPUT.relative_to(HERE)}; {len(INPUTS)} input(s) in inputs.npy")
    reached, code, err, actual = run_child()
    if code == EXIT_MISSING:
        print(err.strip())
        print("CANNOT RUN")
        return 2
    failed = code != 0
    at_culprit = reached == "0"
    if failed:
        if err.strip():
            print("".join(err.strip().splitlines(keepends=True)[-15:]))
        where = CHAIN[int(reached)][0] if reached.isdigit() else "repro.py"
        print(f"{where} failed: {error_of(code, err)}")
    if SYMPTOM == "timeout":
        reproduced = code is None and at_culprit
    elif SYMPTOM == "crash":
        reproduced = failed and code is not None and at_culprit and same_class(error_of(code, err))
        if failed and not reproduced:
            print(f"the finding's error was {ERROR_CLASS} in {CULPRIT}")
        elif not failed:
            print(f"{CULPRIT} ran to completion")
    elif failed:
        reproduced = False
        print(f"that is not the {SYMPTOM} this bundle is about")
    else:
        assert actual is not None
        if "--actual-out" in argv:
            np.save(argv[argv.index("--actual-out") + 1], actual, allow_pickle=False)
        expected = np.load(HERE / "expected.npy", allow_pickle=False)
        if expected.shape == actual.shape:
            show(expected, actual)
        reproduced, why = verdict(expected, actual)
        print(why)
    print("REPRODUCED" if reproduced else "NOT REPRODUCED")
    return 1 if reproduced else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
