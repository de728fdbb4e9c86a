"""Hunt every injected fault of ``benchmarks/faults/`` and score what the hunt found against it.

    python benchmarks/run_faults.py [--models tiny,mobilenetv2] [--faults conv_padding,...]
                                    [--budget-tiny 8m] [--budget 10m] [--quick] [--stop-early] [--no-write]
                                    [--cache DIR] [--slowdown FACTOR]

Each fault is a plugin file holding ``GROUND_TRUTH`` (the culprit step and parameters, steps the
minimal pipeline must also hold, the symptom, whether it is subtle or flaky, and optionally
``min_budget``, a floor on its hunts' budget) and
``affected_node(onnx_model)``, the node it changes. For every model and fault, ``fuzzconv hunt``
runs twice: without ``--focus`` (the fault step is one option among all the built-in ones) and
with ``--focus`` on the culprit step. Each hunt gets its own store and so starts from a cold
artifact cache (the calibrated source models come from the per-user cache, built once): times and
evaluation counts are those of a first hunt with the plugin.

A finding is *injected* when its culprit is one of the fault's steps. It is scored:

- detected: an injected finding with the ground truth's symptom exists (a subtle fault may list
  ``label_flip`` and ``numeric``: whether any image flips depends on the model and corpus);
- time to first finding: campaign start → the evaluation that first showed it;
  time to minimized: campaign start → the finding stored, shrunk and localized;
- culprit exact: the culprit step and parameters are the ground truth's, and the minimal pipeline
  holds the ``also`` steps;
- node match: ``first_divergent_node`` is ``affected_node`` of the ONNX graph the fault was applied
  to (for a TVM culprit: the ONNX graph the module was imported from);
- flaky: the finding's ``flaky`` flag against the ground truth's.

The other findings are either *stack* findings — the minimal pipeline holds no fault step and the
culprit is a built-in step: a real divergence of the framework stack (TFLite's DEFAULT
quantisation, ...) that the hunt is right to report — or *false*: a finding that blames the fault
step at a setting where it does nothing, or that holds a fault step at a setting that fires but
blames another step.

``--quick`` (what CI runs) hunts the tiny model only, skips the unfocused hunts of faults that
need two changes at once, and stops each hunt once the injected finding is stored (Ctrl-C, which the hunt handles gracefully), so false findings there are counted only up
to that point; a full run (the default) spends the whole budget on each hunt.

``--cache DIR`` gives every hunt one artifact cache (``fuzzconv hunt --cache``) instead of a cold one
each: a hunt reuses the conversions earlier hunts made of the same model, which shortens the suite
(the test suite runs it so) but makes its times and fresh/cached counts those of warm hunts. What is
found is the same: outputs are cached by what computed them, and timeouts are never cached.

``--slowdown FACTOR`` is passed to every hunt: a large factor keeps timing-based findings out of a
suite run on a shared, loaded machine (the test suite does so), where they measure the load, not
the faults.

The exit code is 1 when the tiny model misses a goal (see :func:`goal_met`).

Results go to the console (rich), to ``benchmarks/RESULTS.md`` between the ``faults`` markers (not
with ``--no-write``), and with ``--json FILE`` to a file.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fuzzconv.campaign import parse_budget
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

HERE = Path(__file__).resolve().parent
FAULTS = HERE / "faults"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
ALIASES = {"tiny": "tiny_keras"}
console = Console()


@dataclass
class Fault:
    name: str
    path: Path
    truth: dict[str, Any]
    steps: set[str]

    @classmethod
    def load(cls, path: Path) -> "Fault":
        """Read the ground truth without running the plugin (it is a literal)."""
        tree = ast.parse(path.read_text())
        consts: dict[str, Any] = {}
        steps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and \
                    node.targets[0].id == "GROUND_TRUTH":
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            if isinstance(node, ast.FunctionDef):
                for d in node.decorator_list:
                    if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant):
                        steps.add(d.args[0].value)
        if "GROUND_TRUTH" not in consts:
            raise SystemExit(f"{path}: no GROUND_TRUTH")
        return cls(path.stem, path, consts["GROUND_TRUTH"], steps)

    def module(self) -> Any:
        """The plugin module, loaded as fuzzconv loads plugins (into a registry of its own, so
        the steps never land in the process-wide registry and clash with a later session)."""
        from fuzzconv.registry import fresh_registry

        fresh_registry([str(self.path)])
        return next(m for m in list(sys.modules.values())
                    if getattr(m, "__file__", None) == str(self.path.resolve()))


def all_faults() -> list[Fault]:
    return [Fault.load(p) for p in sorted(FAULTS.glob("*.py")) if not p.name.startswith("_")]


@dataclass
class Run:
    model: str
    fault: str
    focus: bool
    wall_s: float = 0.0
    evaluations: int = 0
    detected: bool = False
    t_first: float | None = None
    t_minimized: float | None = None
    fresh: int = 0
    cached: int = 0
    culprit_exact: bool = False
    node_expected: str | None = None
    node_found: str | None = None
    node_match: bool | None = None
    flaky_expected: bool = False
    flaky_found: bool | None = None
    flip_rate: float | None = None
    stack: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)
    error: str | None = None

    def row(self) -> list[str]:
        def t(x: float | None) -> str:
            return "—" if x is None else f"{x:.0f}"

        node = "n/a" if self.node_match is None else ("yes" if self.node_match else
                                                     f"no ({self.node_found})")
        return [self.model, self.fault, "on" if self.focus else "off",
                "yes" if self.detected else "**no**", t(self.t_first), t(self.t_minimized),
                f"{self.fresh}/{self.cached}", "yes" if self.culprit_exact else "no", node,
                "—" if self.flip_rate is None else f"{self.flip_rate:.1%}",
                ("yes" if self.flaky_found else "no") + (" (expected)" if self.flaky_expected else ""),
                str(len(self.stack)), str(len(self.false)), f"{self.wall_s:.0f}"]


HEADER = ["model", "fault", "focus", "detected", "first (s)", "minimized (s)", "fresh/cached",
          "culprit exact", "node match", "flip rate", "flaky", "stack", "false", "wall (s)"]


def _fuzzconv() -> list[str]:
    return [sys.executable, "-c", "from fuzzconv.cli import main; main()"]


def _injected(store: Path, steps: set[str], finished: bool) -> bool:
    """Whether the store holds a minimized finding blamed on one of ``steps`` (and, with
    ``finished``, one the hunt also finished: reduced and re-run cold, which is what sets
    ``flaky``)."""
    db = store / "fuzzconv.sqlite"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT data FROM findings").fetchall()
    except sqlite3.Error:
        return False
    for (data,) in rows:
        f = json.loads(data)
        if ((f.get("culprit") or {}).get("step") in steps and f.get("minimal_pipeline")
                and not (finished and f.get("pending"))):
            return True
    return False


def hunt(fault: Fault, model: str, focus: bool, budget: str, work: Path, stop_early: bool,
         seed: int, cache: Path | None = None, slowdown: float | None = None
         ) -> tuple[Path, float, str, int]:
    """Run one hunt; returns its store, wall time, the tail of its output and its exit code (0 or
    130 when it was stopped at its injected finding: it stops gracefully)."""
    store = work / model / fault.name / ("focus" if focus else "nofocus")
    shutil.rmtree(store, ignore_errors=True)
    cmd = [*_fuzzconv(), "hunt", "--model", model, "--plugin", str(fault.path), "--budget", budget,
           "--seed", str(seed), "--store", str(store), "--json"]
    if focus:
        cmd += ["--focus", fault.truth["culprit"]["step"]]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    if slowdown is not None:
        cmd += ["--slowdown", str(slowdown)]
    log = work / f"{model}-{fault.name}-{'focus' if focus else 'nofocus'}.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        # A shell without job control starts background jobs with SIGINT ignored, and Python keeps
        # an ignored SIGINT ignored: restore it, or the hunt could not be stopped like Ctrl-C.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while proc.poll() is None:
            time.sleep(2)
            if stop_early and _injected(store, fault.steps, bool(fault.truth.get("flaky"))):
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
        proc.wait()
    return store, time.monotonic() - t0, log.read_text()[-2000:], proc.returncode


def _wall(store: Path) -> float:
    """A finished hunt's wall time from its campaign (start-up before the campaign not counted)."""
    with sqlite3.connect(f"file:{store / 'fuzzconv.sqlite'}?mode=ro", uri=True) as con:
        started, finished = con.execute("SELECT started, finished FROM campaigns").fetchone()
    return (finished or started) - started


def _params_match(want: dict[str, Any], got: dict[str, Any]) -> bool:
    return all(got.get(k) == v for k, v in want.items())


def _holds(pipeline: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    steps = (pipeline or {}).get("steps", [])
    return any(s.get("step") == want["step"] and _params_match(want["params"], s.get("params", {}))
               for s in steps)


def expected_node(fault: Fault, store: Path, finding: dict[str, Any],
                  cache: Path | None = None) -> str | None:
    """``affected_node`` of the ONNX graph the culprit was applied to (or imported from)."""
    import onnx

    from fuzzconv.distributed import use_cache_dir
    from fuzzconv.executor import Evaluation
    from fuzzconv.pipeline import Pipeline
    from fuzzconv.session import open_session
    from fuzzconv.shrink.chain import upstream_onnx

    with open_session(store, [fault.path]) as ex:
        if cache is not None:
            use_cache_dir(ex, cache)
        pipe = Pipeline.from_dict(finding["minimal_pipeline"], ex.registry)
        index = next(i for i, s in enumerate(pipe.steps, 1) if s.name == finding["culprit"]["step"])
        n = upstream_onnx(ex.registry, pipe, index)
        if n is None:
            return None
        path = ex.artifact(pipe, n, Evaluation(pipe, None))
        if path is None:
            return None
        return fault.module().affected_node(onnx.load(str(path)))


def score(fault: Fault, model: str, focus: bool, store: Path, wall: float,
          cache: Path | None = None) -> Run:
    run = Run(model, fault.name, focus, wall_s=wall, flaky_expected=bool(fault.truth.get("flaky")))
    truth = fault.truth
    with sqlite3.connect(f"file:{store / 'fuzzconv.sqlite'}?mode=ro", uri=True) as con:
        camp = con.execute("SELECT id, started FROM campaigns").fetchone()
        if camp is None:
            run.error = "no campaign"
            return run
        cid, started = camp
        run.evaluations, run.fresh, run.cached = con.execute(
            "SELECT COUNT(*), COALESCE(SUM(fresh), 0), COALESCE(SUM(cached), 0) FROM evaluations "
            "WHERE campaign = ?", (cid,)).fetchone()
        findings = [(json.loads(d), first) for d, first in
                    con.execute("SELECT data, first_seen FROM findings ORDER BY first_seen")]
        created = dict(con.execute("SELECT seq, created FROM evaluations WHERE campaign = ?", (cid,)))
    injected = []
    for f, first in findings:
        culprit = f.get("culprit") or {}
        # only a fault step at a setting that fires can make a divergence (a focused hunt keeps
        # its focus step, at its harmless default, in every pipeline)
        armed = [truth["culprit"], *truth.get("also", [])]
        in_pipeline = any(_holds(f.get("minimal_pipeline") or f["pipeline"], a) for a in armed)
        if culprit.get("step") in fault.steps:
            if culprit.get("step") == truth["culprit"]["step"] and \
                    not _params_match(truth["culprit"]["params"], culprit.get("params", {})):
                run.false.append(f["id"])  # blames the fault step where it does nothing
            else:
                injected.append((f, first))
        elif in_pipeline:
            run.false.append(f["id"])
        else:
            run.stack.append(f["id"])
    want = truth["symptom"] if isinstance(truth["symptom"], list) else [truth["symptom"]]
    hits = [(f, first) for f, first in injected if f["symptom"] in want]
    if not hits:
        return run
    f, first = hits[0]
    run.detected = True
    seq = f["evaluations"]["hunt"] - 1  # the hunt's count of evaluations so far; seq is 0-based
    run.t_first = created.get(seq, first) - started
    run.t_minimized = first - started if f.get("minimal_pipeline") else None
    run.flip_rate = f.get("flip_rate")
    run.culprit_exact = (f["culprit"]["step"] == truth["culprit"]["step"]
                         and _params_match(truth["culprit"]["params"], f["culprit"]["params"])
                         and all(_holds(f.get("minimal_pipeline"), a) for a in truth.get("also", [])))
    run.flaky_found = bool(f.get("flaky"))
    run.node_found = f.get("first_divergent_node")
    if f.get("minimal_pipeline") and f["symptom"] not in ("crash", "timeout"):
        try:
            run.node_expected = expected_node(fault, store, f, cache)
        except Exception as exc:  # scored as a miss, with the reason
            run.error = f"expected node: {type(exc).__name__}: {exc}"
        run.node_match = run.node_expected is not None and run.node_found == run.node_expected
    return run


def goal_met(r: Run) -> bool:
    """The tiny-model goal: no false findings, an exact culprit whenever the fault is found, and
    found for sure with ``--focus`` on its step. Without the focus a fault that needs two changes
    from the defaults at once (two steps, or a pass and a setting) is left to the mutation phase,
    which a short budget may not reach: those runs are reported, not required. A run with an error
    (the hunt died, the store could not be read) misses the goal."""
    if r.false or (r.detected and not r.culprit_exact) or r.error:
        return False
    return r.detected or not r.focus


def versions() -> str:
    from fuzzconv.versions import stack_versions

    v = stack_versions()
    return ", ".join(f"{k} {v[k]}" for k in sorted(v))


def markdown(runs: list[Run], args: argparse.Namespace, started: str) -> str:
    lines = [BEGIN, "## Injected-fault suite (`benchmarks/run_faults.py`)", "",
             f"Run {started}; {'quick: tiny model only; ' if args.quick else ''}"
             f"{'each hunt stopped once its injected finding was stored (false findings counted up to then)' if args.quick or args.stop_early else 'each hunt ran its whole budget'}; "
             f"budgets: tiny {args.budget_tiny}, other models {args.budget}; seed {args.seed}"
             f"{'; one artifact cache for every hunt (warm hunts)' if args.cache else ''}. "
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.1f} at the end. Stack: {versions()}.", "",
             *([args.note, ""] if args.note else []),
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.row()) + " |" for r in runs]
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        det = sum(r.detected for r in mine)
        exact = sum(r.culprit_exact for r in mine)
        nodes = [r for r in mine if r.node_match is not None]
        lines += ["", f"**{model}**: detected {det}/{len(mine)}, exact culprit {exact}/{len(mine)}, "
                      f"node match {sum(bool(r.node_match) for r in nodes)}/{len(nodes)}, "
                      f"false findings {sum(len(r.false) for r in mine)}, goal met "
                      f"{sum(goal_met(r) for r in mine)}/{len(mine)}, "
                      f"stack findings {sum(len(r.stack) for r in mine)}."]
    errors = [f"- {r.model}/{r.fault}/{'focus' if r.focus else 'nofocus'}: {r.error}"
              for r in runs if r.error]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(lines + [END])


def write_results(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in RESULTS.md, replacing
    the section between those markers, or at the end of the file the first time."""
    sys.path.insert(0, str(HERE / "perf"))
    from results_section import write_section  # benchmarks/perf/

    write_section(text, begin, end, RESULTS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,mobilenetv2")
    ap.add_argument("--faults", default=None, help="comma-separated fault names (default: all)")
    ap.add_argument("--modes", default="off,on", help="focus modes to run: off, on or both")
    ap.add_argument("--budget-tiny", default="8m")
    ap.add_argument("--budget", default="10m", help="budget per hunt for the full-size models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="tiny model only; stop each hunt at its injected finding")
    ap.add_argument("--stop-early", action="store_true",
                    help="stop each hunt once its injected finding is stored (implied by --quick)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the stores already in --work again instead of hunting")
    ap.add_argument("--work", type=Path, default=None, help="keep stores here (default: temporary)")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--note", default="", help="a paragraph to put above the table")
    ap.add_argument("--json", type=Path, default=None, help="also write the runs as JSON here")
    ap.add_argument("--cache", type=Path, default=None,
                    help="one artifact cache for every hunt (warm hunts: a shorter suite)")
    ap.add_argument("--slowdown", type=float, default=None,
                    help="the hunts' slowdown factor (large: no timing findings on a loaded machine)")
    args = ap.parse_args(argv)
    models = ["tiny_keras"] if args.quick else [ALIASES.get(m, m) for m in args.models.split(",")]
    faults = all_faults()
    if args.faults:
        wanted = set(args.faults.split(","))
        unknown = wanted - {f.name for f in faults}
        if unknown:
            console.print(f"unknown fault(s): {', '.join(sorted(unknown))}")
            return 2
        faults = [f for f in faults if f.name in wanted]
    modes = [m == "on" for m in args.modes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="fuzzconv-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    runs: list[Run] = []
    # --quick leaves out the unfocused hunts of faults that need two changes at once: within a
    # short budget they are not expected to be found (see goal_met), so they would only spend it
    jobs = [(m, f, focus) for m in models for f in faults for focus in modes
            if focus or not (args.quick and f.truth.get("also"))]
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("faults", total=len(jobs))
        for model, fault, focus in jobs:
            progress.update(task, description=f"{model} {fault.name} focus={'on' if focus else 'off'}")
            budget = args.budget_tiny if model == "tiny_keras" else args.budget
            if "min_budget" in fault.truth and \
                    parse_budget(fault.truth["min_budget"]) > parse_budget(budget):
                budget = fault.truth["min_budget"]
            if args.rescore:
                store = work / model / fault.name / ("focus" if focus else "nofocus")
                if not (store / "fuzzconv.sqlite").exists():
                    progress.advance(task)
                    continue  # not hunted in that run
                wall, tail, code = _wall(store), "", 0
            else:
                store, wall, tail, code = hunt(fault, model, focus, budget, work,
                                         args.quick or args.stop_early, args.seed, args.cache,
                                         args.slowdown)
            try:
                run = score(fault, model, focus, store, wall, args.cache)
            except sqlite3.Error as exc:
                run = Run(model, fault.name, focus, wall_s=wall, error=f"{exc}; hunt said: {tail[-300:]}")
            if code not in (0, 130) and not run.error:  # 130: stopped by the SIGINT it was sent
                # the hunt died: what it found so far is scored, and the run misses its goal
                last = (tail.strip().splitlines() or [""])[-1]
                run.error = f"the hunt exited with {code}: {last[:300]}"
            runs.append(run)
            progress.console.print(" | ".join(run.row()) + (f" | error: {run.error}" if run.error else ""),
                                   soft_wrap=True)
            progress.advance(task)
    table = Table(*HEADER, title="injected faults")
    for r in runs:
        table.add_row(*r.row())
    console.print(table)
    text = markdown(runs, args, started)
    if not args.no_write:
        write_results(text)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    missed = [r for r in runs if r.model == "tiny_keras" and not goal_met(r)]
    for r in missed:
        console.print(f"goal missed: {r.fault} focus={'on' if r.focus else 'off'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
