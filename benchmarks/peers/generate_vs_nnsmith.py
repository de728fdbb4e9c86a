"""Generated-model fuzzing side by side: fuzzconv's ``gen:torch`` hunt against NNSmith, ONNX Runtime
only, on the same machine in the same minutes.

    .venv/bin/python benchmarks/peers/generate_vs_nnsmith.py [--store DIR] [--minutes 60]
        [--seed 0] [--one-after-the-other] [--no-bundles] [--no-write] [--json FILE]
    .venv/bin/python benchmarks/peers/generate_vs_nnsmith.py --render STORE/report.json

**The peer as a new user meets it.** NNSmith (PyPI ``nnsmith``, 0.1.0, its last release) is
installed into ``STORE/peers/nnsmith-venv`` with its ``onnx`` and ``onnxruntime`` extras and the
PyTorch that this machine holds on disk (2.13.0, CPU; a plain ``torch`` would pull a CUDA build of
several GB). Then the script tries it step by step and records what each step printed:

1. as installed: ``nnsmith.model_gen model.type=onnx``;
2. with ``onnxscript`` installed, which PyTorch asks for;
3. with a shim that makes ``torch.onnx.export`` default to the TorchScript exporter
   (``dynamo=False``), the exporter NNSmith was written for; then ``nnsmith.fuzz`` with the ONNX
   Runtime backend;
4. with a second shim that gives ``onnx`` back the ``onnx._serialize`` that NNSmith's ONNX
   Runtime backend calls.

The shims are one ``sitecustomize.py`` in the peer's venv; NNSmith's own code is not changed.
fuzzconv's environment is never touched, and NNSmith's topset cache goes to
``STORE/peers/nnsmith-cache`` (``XDG_CACHE_HOME``), not the user's home.

**The comparison.** Both run for ``--minutes`` at the same time on the same cores (side by side,
as every speed figure of this project is measured; ``--one-after-the-other`` gives each the whole
machine in turn instead):

- NNSmith: ``nnsmith.fuzz model.type=onnx backend.type=onnxruntime fuzz.time=...`` with
  ``fuzz.save_test`` on (every test case written, as fuzzconv caches every artifact); a collector
  reads each saved ``model.onnx``'s operators and deletes the case.
- fuzzconv: ``fuzzconv hunt --model gen:torch --focus ort --budget ...`` in a fresh store: every
  pipeline ends in ONNX Runtime (``torch.onnx_export``, then ONNX rewrites or none).

Reported per tool: models generated, distinct ONNX operator types in the models that reached ONNX
Runtime, divergence reports, distinct buckets, and buckets reduced to a standalone reproducer.
fuzzconv's buckets are its store's; NNSmith does not bucket, so its reports are grouped here, as
generously as its logs allow: a crash by its message with node names and numbers taken out, an
inconsistency by the operator type and data type of the first output that differed. NNSmith
does not reduce: a bug directory (``model.onnx``, ``oracle.pkl``) replays with
``nnsmith.model_exec`` but is not a reduced, standalone reproducer. fuzzconv's one finding per
bucket is bundled (``fuzzconv bundle``) and its ``repro.py`` run where fuzzconv cannot be
imported. NNSmith does not judge its reports either: ``nnsmith_triage.py`` (beside this file)
gives each bucket a third opinion, onnx's reference evaluator and a float64 computation, and
counts the real ones (``--render`` judges a saved report's bug folders when it has no verdicts).
Results go to the console and to ``benchmarks/RESULTS.md`` between the ``peers-generate``
markers.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "perf"))
sys.path.insert(0, str(HERE))
from generated_yield import (  # benchmarks/perf/, on the path above
    bucket_rows,
    bundle_each,
)
from bundle_triage import REAL as BUNDLE_REAL  # beside this file
from bundle_triage import judge_bundle
from nnsmith_triage import REAL, triage, triage_text

BEGIN, END = "<!-- peers-generate:begin -->", "<!-- peers-generate:end -->"
NNSMITH = "nnsmith[onnx,onnxruntime]==0.1.0"
# The CPU build this machine holds; any other torch pulls a CUDA build of several GB.
TORCH = "torch==2.13.0"
PEER_PACKAGES = ["nnsmith", "torch", "onnx", "onnxruntime", "numpy", "z3-solver", "hydra-core"]

#: Stage 3: the exporter NNSmith was written for (PyTorch now defaults to the dynamo exporter).
SHIM_EXPORTER = '''
import functools
import torch.onnx
_export = torch.onnx.export
@functools.wraps(_export)
def export(*args, **kwargs):
    kwargs.setdefault("dynamo", False)
    return _export(*args, **kwargs)
torch.onnx.export = export
'''
#: Stage 4: ``onnx._serialize``, which onnx 1.15 removed and NNSmith's ORT backend calls.
SHIM_SERIALIZE = '''
import onnx
if not hasattr(onnx, "_serialize"):
    onnx._serialize = lambda proto: proto.SerializeToString()
'''


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the peer -----------------------------------------------------------------------------------
class Peer:
    """One of NNSmith's venvs under the store: ``nnsmith`` for the comparison, ``nnsmith-trial``
    for the new user's steps (run beside it, so each has its own shims and topset cache)."""

    def __init__(self, store: Path, name: str = "nnsmith"):
        self.venv = store / "peers" / f"{name}-venv"
        self.python = self.venv / "bin" / "python"
        self.cache = store / "peers" / f"{name}-cache"
        self.log = store / "peers" / f"{name}-install.log"

    def env(self) -> dict[str, str]:
        """Nothing of fuzzconv on the import path; the topset cache under the store."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, "XDG_CACHE_HOME": str(self.cache), "PYTHONWARNINGS": "ignore"}

    def pip(self, *packages: str) -> None:
        with self.log.open("a") as log:
            subprocess.run([str(self.python), "-m", "pip", "install", *packages], check=True,
                           env=self.env(), stdout=log, stderr=subprocess.STDOUT)

    def install(self) -> None:
        """NNSmith as released, in its venv (made when absent), without onnxscript or a shim."""
        if not (self.venv / "bin" / "nnsmith.fuzz").exists():
            say(f"installing NNSmith into {self.venv}")
            shutil.rmtree(self.venv, ignore_errors=True)
            self.venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv",
                            str(self.venv)], check=True)
            self.log.write_text("")
            self.pip(NNSMITH, TORCH)
        with self.log.open("a") as log:  # a venv from an earlier run goes back to "as released"
            subprocess.run([str(self.python), "-m", "pip", "uninstall", "-y", "onnxscript"],
                           check=False, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.shim()

    def shim(self, *parts: str) -> None:
        """Write the venv's ``sitecustomize.py`` (the compatibility shims); none removes it."""
        (site,) = self.venv.glob("lib/python*/site-packages")
        path = site / "sitecustomize.py"
        if parts:
            path.write_text("# compatibility shims for NNSmith 0.1.0 on this stack\n"
                            + "".join(parts))
        else:
            path.unlink(missing_ok=True)

    def versions(self) -> dict[str, str]:
        out = subprocess.run(
            [str(self.python), "-c", "import json, importlib.metadata as m; print(json.dumps("
             f"{{p: m.version(p) for p in {PEER_PACKAGES!r}}}))"],
            check=True, capture_output=True, text=True, env=self.env())
        return json.loads(out.stdout)

    def tool(self, name: str, *overrides: str, cwd: Path, timeout: float,
             log: Path) -> subprocess.CompletedProcess:
        shutil.rmtree(self.cache, ignore_errors=True)  # each try tests the operators afresh
        cwd.mkdir(parents=True, exist_ok=True)
        with log.open("w") as f:
            return subprocess.run([str(self.venv / "bin" / name), *overrides], check=False,
                                  cwd=cwd, env=self.env(), stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_text(log: Path) -> str:
    return ANSI.sub("", log.read_text(errors="replace"))


def _failure_reason(follow: list[str]) -> str:
    """Why one operator failed its test, from the log lines after its ``[Failure]`` line: the
    message, the exception a traceback ends in, or what torch.export's summary names."""
    block = []
    for ln in follow:
        if "[Failure]" in ln or "===> Trying" in ln:
            break
        if ln.strip():
            block.append(ln.split(" - ", 1)[-1].strip() if ln.startswith("DEBUG") else ln.strip())
    if not block:
        return "?"
    if "## Exception summary" in block:
        return block[block.index("## Exception summary") + 1]
    if block[0].startswith("Traceback"):
        exc = [x for x in block if re.match(r"^[\w.]+(Error|Exception|Implemented)\b.*:", x)]
        return exc[-1] if exc else block[-1]
    return block[0]


def _why(text: str) -> str:
    """What a run's log says went wrong: the commonest reason an operator failed its test, or the
    last exception line."""
    reasons = collections.Counter()
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if "[Failure]" in ln:
            reasons[_failure_reason(lines[i + 1:i + 60])[:200]] += 1
    if reasons:
        (why, n), = reasons.most_common(1)
        failed = sum(reasons.values())
        return f"{failed} operator tests failed; the commonest reason ({n}): {why}"
    exc = [ln.strip() for ln in lines if re.match(r"^\w[\w.]*(Error|Exception)\b", ln.strip())]
    return exc[-1][:200] if exc else (lines[-1][:200] if lines else "no output")


def try_as_new_user(peer: Peer, work: Path) -> list[dict[str, Any]]:
    """The four stages of the module's docstring: what each printed."""
    stages = []
    gen = ["model.type=onnx", "mgen.max_nodes=5", "hydra.verbose=dtest"]
    fuzz = ["model.type=onnx", "backend.type=onnxruntime", "fuzz.time=20s", "hydra.verbose=dtest"]

    def attempt(stage: str, tool: str, overrides: list[str]) -> bool:
        d = work / f"stage-{len(stages) + 1}"
        shutil.rmtree(d, ignore_errors=True)
        extra = ([f"mgen.save={d / 'model'}"] if tool == "nnsmith.model_gen"
                 else [f"fuzz.root={d / 'fuzz'}"])
        t0 = time.time()
        try:
            res = peer.tool(tool, *overrides, *extra, cwd=d, timeout=1200, log=d / "log.txt")
            code = res.returncode
        except subprocess.TimeoutExpired:
            code = None
        text = _log_text(d / "log.txt")
        made = re.search(r"Total (\d+) testcases generated", text)
        if tool == "nnsmith.model_gen":
            ok = (d / "model" / "model.onnx").exists()
            what = "wrote a model" if ok else _why(text)
        else:
            n = int(made.group(1)) if made else 0
            ok = n > 0
            what = (f"{n} test cases in 20 s" if ok else f"0 test cases; {_why(text)}")
        stages.append({"stage": stage, "command": " ".join([tool, *overrides]), "exit": code,
                       "ok": ok, "what": what, "seconds": round(time.time() - t0)})
        say(f"NNSmith, {stage}: {what}")
        return ok

    attempt("as installed", "nnsmith.model_gen", gen)
    peer.pip("onnxscript")
    attempt("with onnxscript", "nnsmith.model_gen", gen)
    peer.shim(SHIM_EXPORTER)
    attempt("with the TorchScript-exporter shim", "nnsmith.model_gen", gen)
    attempt("with the TorchScript-exporter shim", "nnsmith.fuzz", fuzz)
    peer.shim(SHIM_EXPORTER, SHIM_SERIALIZE)
    attempt("with both shims", "nnsmith.fuzz", fuzz)
    return stages


# -- reading what each tool made ----------------------------------------------------------------
def onnx_ops(path: Path) -> set[str]:
    import onnx

    try:
        return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    except Exception:  # noqa: BLE001  (whatever onnx raises: the file counts no operator)
        return set()


class Collector(threading.Thread):
    """Reads every test case NNSmith saves (its operators) and deletes it, so an hour of saved
    cases does not fill the disk. Each run saves into a folder of its own under ``root`` (NNSmith
    refuses a folder that exists)."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.models, self.ops = root, 0, collections.Counter()
        self.done = threading.Event()

    def sweep(self, final: bool = False) -> None:
        """Read and delete the saved cases; while NNSmith runs, the newest case of each run is
        left alone (NNSmith writes its cases one after the other, and may still be writing it)."""
        if not self.root.exists():
            return
        for run in self.root.iterdir():
            cases = sorted((c for c in run.iterdir() if c.is_dir()),
                           key=lambda c: c.stat().st_mtime)
            for case in cases if final else cases[:-1]:
                self.models += 1
                self.ops.update(onnx_ops(case / "model.onnx"))
                shutil.rmtree(case, ignore_errors=True)

    def run(self) -> None:
        while not self.done.wait(5):
            self.sweep()
        self.sweep(final=True)


def nnsmith_bucket(bug: Path) -> dict[str, Any]:
    """One NNSmith bug directory: its symptom and the key it is grouped by."""
    meta = json.loads((bug / "meta.json").read_text()) if (bug / "meta.json").exists() else {}
    err = (bug / "err.log").read_text(errors="replace") if (bug / "err.log").exists() else ""
    ops = onnx_ops(bug / "model.onnx")
    symptom = meta.get("symptom", "?")
    where = re.search(r"!= .* at (\S+)", err)
    if symptom == "inconsistency" and where:
        import onnx

        g = onnx.load(str(bug / "model.onnx"), load_external_data=False).graph
        node = next((n for n in g.node if where.group(1) in n.output), None)
        vi = {v.name: v for v in [*g.value_info, *g.output]}.get(where.group(1))
        dtype = (onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
                 if vi is not None else "?")
        key = f"inconsistency: {node.op_type if node else '?'} ({dtype})"
    else:
        last = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"]
        msg = re.sub(r"node with name '[^']*'", "", last[0])
        msg = re.sub(r"(/[\w.\-]+)+", "PATH", re.sub(r"0x[0-9a-f]+", "ADDR", msg))
        key = f"{symptom}: {msg.strip()[:160]}"
    return {"run": bug.parent.name, "dir": bug.name, "symptom": symptom,
            "stage": meta.get("stage"), "key": key, "ops": sorted(ops)}


def nnsmith_bugs(nroot: Path) -> list[dict[str, Any]]:
    """Every bug directory NNSmith's runs wrote under ``nroot`` (one folder a run)."""
    return [nnsmith_bucket(b) for b in sorted(nroot.glob("*/bug-*"))]


def fuzzconv_models(store: Path) -> int:
    """The generated models the hunt drew (the shrinker's smaller models not counted)."""
    db = sqlite3.connect(store / "fuzzconv.sqlite")
    rows = db.execute("SELECT pipeline FROM evaluations WHERE phase != 'shrink'").fetchall()
    db.close()
    return len({json.loads(p)["model"] for (p,) in rows})


def fuzzconv_ops(store: Path) -> collections.Counter:
    """ONNX operator types over every ONNX model the hunt's cache holds (what reached ORT)."""
    ops: collections.Counter = collections.Counter()
    for f in (store / "cache" / "artifacts").glob("*/*/*.onnx"):
        ops.update(onnx_ops(f))
    return ops


# -- the run ------------------------------------------------------------------------------------
def rss(pid: int) -> int:
    """A process's resident memory in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def supervise(start: Any, seconds: int, cap: int) -> list[dict[str, Any]]:
    """Keep NNSmith fuzzing for ``seconds``. NNSmith 0.1.0's resident memory reaches many GB here
    (22.7 GB once, when the kernel's OOM killer ended it after 17 minutes; 8 GB within 25 s of a
    fresh start another time), so a run whose memory passes ``cap`` is stopped and a fresh one
    started with the time left, as a user would restart it; so is one that ends early. Returns
    each segment: seconds, peak memory, how it ended."""
    deadline = time.time() + seconds
    segments: list[dict[str, Any]] = []
    while (left := int(deadline - time.time())) > 20:
        t0, peak, why = time.time(), 0, "ran its time"
        proc = start(left, len(segments))
        while proc.poll() is None:
            peak = max(peak, rss(proc.pid))
            if peak > cap:
                why = f"stopped at {peak / 2**30:.1f} GB"
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
            time.sleep(2)
        if why == "ran its time" and time.time() < deadline - 20:
            why = f"exited early ({proc.returncode})"
        segments.append({"seconds": round(time.time() - t0), "peak_rss_gb": round(peak / 2**30, 1),
                         "end": why})
        say(f"NNSmith segment {len(segments)}: {segments[-1]}")
    return segments


def run(store: Path, minutes: float, seed: int, together: bool, bundles: bool,
        rss_cap: int = 8 * 2**30) -> dict[str, Any]:
    from fuzzconv.versions import stack_versions

    store.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    peer, trial = Peer(store), Peer(store, "nnsmith-trial")
    peer.install()
    trial.install()
    peer.shim(SHIM_EXPORTER, SHIM_SERIALIZE)
    # the new user's steps run beside the comparison, in their own venv: they judge what runs,
    # not how fast
    stages: list[dict[str, Any]] = []
    trying = threading.Thread(target=lambda: stages.extend(
        try_as_new_user(trial, store / "peers" / "new-user")), daemon=True)
    trying.start()

    nroot, saved = store / "nnsmith", store / "nnsmith-saved"
    fstore = store / "fuzzconv"
    for d in (nroot, saved, fstore):
        shutil.rmtree(d, ignore_errors=True)
    seconds = int(minutes * 60)
    nlog, flog = store / "nnsmith.log", store / "fuzzconv-hunt.log"
    nlog.write_text("")
    load = [os.getloadavg()[0]]

    def start_nnsmith(left: int, k: int) -> subprocess.Popen:
        (store / "nnsmith-cwd").mkdir(exist_ok=True)
        with nlog.open("a") as log:
            log.write(f"\n=== segment {k}: {left} s ===\n")
        return subprocess.Popen(
            [str(peer.venv / "bin" / "nnsmith.fuzz"), "model.type=onnx",
             "backend.type=onnxruntime", f"fuzz.time={left}s", f"fuzz.root={nroot / str(k)}",
             f"fuzz.save_test={saved / str(k)}", f"fuzz.seed={seed + k}"],
            cwd=store / "nnsmith-cwd", env=peer.env(), stdout=nlog.open("a"),
            stderr=subprocess.STDOUT)

    def start_fuzzconv() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "from fuzzconv.cli import main; main()", "hunt", "--model",
             "gen:torch", "--focus", "ort", "--budget", f"{seconds}s", "--seed", str(seed),
             "--json", "--store", str(fstore)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=flog.open("w"), text=True)

    shutil.rmtree(peer.cache, ignore_errors=True)
    collector = Collector(saved)
    collector.start()
    t0 = time.time()
    if together:
        say(f"NNSmith and fuzzconv side by side for {minutes:g} minutes")
        fproc = start_fuzzconv()
        segments = supervise(start_nnsmith, seconds, rss_cap)
        fout = fproc.communicate()[0]
    else:
        say(f"NNSmith for {minutes:g} minutes, then fuzzconv for {minutes:g} minutes")
        segments = supervise(start_nnsmith, seconds, rss_cap)
        fproc = start_fuzzconv()
        fout = fproc.communicate()[0]
    collector.done.set()
    collector.join()
    trying.join()
    load.append(os.getloadavg()[0])
    wall = round(time.time() - t0)

    bugs = nnsmith_bugs(nroot)
    nkeys = collections.Counter(b["key"] for b in bugs)
    say(f"judging NNSmith's {len(nkeys)} buckets (ONNX reference, float64)")
    # every test case is saved and read: that count is the models generated, whichever way a
    # segment ended (a stopped one prints no totals)
    nnsmith = {"models": collector.models, "ops": dict(collector.ops),
               "reports": len(bugs), "buckets": dict(nkeys), "segments": segments,
               "rss_cap_gb": rss_cap / 2**30,
               "bucket_ops": {k: next(b["ops"] for b in bugs if b["key"] == k) for k in nkeys},
               "triage": triage(bugs, nroot)}

    try:
        hunt = json.loads(fout)
    except json.JSONDecodeError:
        raise SystemExit(f"fuzzconv hunt printed no JSON; see {flog}")
    rows = bucket_rows(fstore)
    if bundles:
        say(f"bundling {len(rows)} fuzzconv buckets")
        bundle_each(fstore, rows, store / "bundles", store / "fuzzconv-bundle.log")
        judge_bundles(rows, store / "bundles")
    fuzz = {"models": fuzzconv_models(fstore), "ops": dict(fuzzconv_ops(fstore)),
            "evaluations": hunt["evaluations"], "reports": len(hunt["findings"]),
            "buckets": rows, "limitations": hunt.get("limitations", [])}
    return {"started": started, "stages": stages, "peer": peer.versions(),
            "stack": stack_versions(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "minutes": minutes, "seed": seed, "together": together, "wall_s": wall,
            "load": [round(x, 1) for x in load], "ran": nnsmith["models"] > 0,
            "nnsmith": nnsmith,
            "fuzzconv": fuzz}


def judge_bundles(rows: list[dict[str, Any]], bundles: Path) -> None:
    """Give each fuzzconv bucket whose bundle reproduced :func:`bundle_triage.judge_bundle`'s
    verdict, as NNSmith's buckets get :func:`nnsmith_triage.triage`'s."""
    for b in rows:
        if b.get("repro") == "REPRODUCED":
            b["judged"] = judge_bundle(bundles / b["id"])
            say(f"  {b['id']}: {b['judged']['verdict']} ({b['judged']['why']})")


def fuzzconv_real(f: dict[str, Any]) -> int:
    """fuzzconv's real buckets: judged real where judged, else reproduced by their bundles."""
    return sum((b["judged"]["verdict"] in BUNDLE_REAL) if "judged" in b
               else b.get("repro") == "REPRODUCED" for b in f["buckets"])


# -- the tables ---------------------------------------------------------------------------------
def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict(judged: dict[str, Any] | None) -> str:
    if not judged:
        return "not judged"
    v = judged["verdict"]
    return f"**{v}**" if v in BUNDLE_REAL else f"{v} ({_cell(judged['why'])})"


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md section, from a saved report."""
    peer_v = ", ".join(f"{k} {v}" for k, v in report["peer"].items())
    lines = [BEGIN, "## Side by side: generated-model fuzzing vs NNSmith "
                    "(`benchmarks/peers/generate_vs_nnsmith.py`)", "",
             f"Run {report['started']}. Peer (its own venv, from PyPI): {peer_v}.", "",
             "NNSmith tried as a new user would, each step on a fresh topset cache:", "",
             "| step | command | exit | what happened | s |", "|---|---|---|---|---|"]
    for s in report["stages"]:
        lines.append(f"| {s['stage']} | `{s['command']}` | {s['exit']} | {_cell(s['what'])} | "
                     f"{s['seconds']} |")
    if not report.get("ran"):
        lines += ["", "NNSmith could not run here, so nothing was compared.", "", END]
        return "\n".join(lines)
    n, f = report["nnsmith"], report["fuzzconv"]
    stack = ", ".join(f"{k} {v}" for k, v in sorted(report["stack"].items()))
    mode = ("side by side, at the same time on the same cores" if report["together"]
            else "one after the other, each with the whole machine")
    hours = report["minutes"] / 60
    fz_rep = sum(b.get("repro") == "REPRODUCED" for b in f["buckets"])
    lines += ["", f"Then {report['minutes']:g} minutes each, {mode}, on {report['machine']}, "
              f"seed {report['seed']}; load {report['load'][0]} at the start, "
              f"{report['load'][1]} at the end. fuzzconv stack: {stack}.", "",
              "| | NNSmith (`nnsmith.fuzz`, ONNX Runtime backend) | fuzzconv (`hunt --model "
              "gen:torch --focus ort`) |", "|---|---|---|",
              f"| models generated | {n['models']} | {f['models']} |",
              f"| distinct ONNX operator types in them | {len(n['ops'])} | {len(f['ops'])} |",
              f"| divergence reports | {n['reports']} | {f['reports']} |",
              f"| distinct buckets | {len(n['buckets'])} | {len(f['buckets'])} |",
              f"| buckets per hour | {len(n['buckets']) / hours:.1f} | "
              f"{len(f['buckets']) / hours:.1f} |",
              f"| buckets reduced to a standalone reproducer | 0 (no reducer; bug directories "
              f"replay with `nnsmith.model_exec`) | {fz_rep} of {len(f['buckets'])} |"]
    tri = n.get("triage")
    if tri:
        real_f = fuzzconv_real(f)
        judged_f = all("judged" in b for b in f["buckets"] if b.get("repro") == "REPRODUCED")
        follows = tri["counts"].get("ORT follows the ONNX reference", 0)
        how = "each judged below" + ("" if judged_f else "; fuzzconv's: reproduced by bundles")
        lines += [f"| real buckets ({how}) | {tri['real']} | {real_f} |",
                  f"| real buckets per hour | {tri['real'] / hours:.1f} | {real_f / hours:.1f} |",
                  f"| ... counting NNSmith's \"ORT follows the ONNX reference\" as real too (the "
                  f"export may have changed the semantics; without PyTorch in float64 its "
                  f"conditioning cannot be judged) | {tri['real'] + follows} | {real_f} |"]
    lines.append("")
    segs = n.get("segments") or []
    if len(segs) > 1:
        ends = collections.Counter(x["end"].split(" at ")[0] for x in segs)
        lines += [f"NNSmith's memory reaches many GB here (once, until the kernel killed it), "
                  f"so it ran in {len(segs)} segments, each restarted with the time left when its "
                  f"memory passed {n['rss_cap_gb']:g} GB or it ended early ("
                  f"{', '.join(f'{v} {k}' for k, v in ends.items())}; peak "
                  f"{max(x['peak_rss_gb'] for x in segs):g} GB).", ""]
    only_n = sorted(set(n["ops"]) - set(f["ops"]))
    only_f = sorted(set(f["ops"]) - set(n["ops"]))
    lines += [f"Operator types only NNSmith's models held: {', '.join(only_n) or 'none'}. "
              f"Only fuzzconv's: {', '.join(only_f) or 'none'}.", "",
              "NNSmith's buckets (its reports grouped as the docstring says):", ""]
    judged = (tri or {}).get("buckets", {})
    if tri:
        lines += [triage_text(tri), ""]
    lines += ["| bucket | reports | verdict | operators of the first report's model |",
              "|---|---|---|---|"]
    for key, count in sorted(n["buckets"].items(), key=lambda kv: -kv[1]):
        v = judged.get(key, {}).get("verdict", "not judged")
        lines.append(f"| {_cell(key)} | {count} | {'**' + v + '**' if v in REAL else v} | "
                     f"{', '.join(n['bucket_ops'][key])} |")
    lines += ["", "fuzzconv's buckets:", "",
              "Each bucket's bundle judged by `benchmarks/peers/bundle_triage.py`: a failure "
              "`repro.py` reproduces is real; a numeric one is real when the minimal PyTorch "
              "model computed in float64 agrees with what the pipeline gave before the culprit, "
              "the culprit's output does not, and its difference is over ten times what 1e-5 "
              "relative input noise moves the float64 result (well conditioned).", "",
              "| finding | symptom | minimal pipeline | culprit | minimal model | repro.py | "
              "verdict |", "|---|---|---|---|---|---|---|"]
    for b in f["buckets"]:
        c = b["culprit"]
        culprit = f"`{c['step']}` {json.dumps(c['params'])}" if c else "—"
        sym = b["symptom"] + (f" ({b['error']})" if b["error"] else "")
        lines.append(f"| {b['id']} | {_cell(sym)} | {b['pipeline']} | {_cell(culprit)} | "
                     f"`{b['minimal_layers']}` | {b.get('repro', 'not run')} | "
                     f"{_verdict(b.get('judged'))} |")
    lines += ["", READING, "", END]
    return "\n".join(lines)


READING = (
    "How to read it. The two tools ask different questions of the same runtime. NNSmith draws "
    "small graphs of any tensors (ranks 0 to 5; float16, float32, float64, integer and boolean "
    "data), runs them in PyTorch eager and in ONNX Runtime on random inputs and reports any "
    "output that differs beyond rtol 1e-2, atol 1e-3, or any exception; it does not say whether "
    "a difference is a bug (a float16 rounding, an integer division, an operator ONNX Runtime "
    "does not implement for a data type count the same: the verdict column above is this "
    "harness's, not NNSmith's), and a report is a whole model. "
    "fuzzconv draws image classifiers whose layers are what converters are known to get wrong "
    "(image layers, element-wise functions, comparisons, integer arithmetic, cumulative sums "
    "and reductions), judges them on labels and logits over an image corpus, tells a "
    "converter's documented refusal (a limitation) from a divergence, and shrinks each finding "
    "to its step, its options and a minimal model before it is bundled. So NNSmith generates "
    "models far faster and holds more data types (float16, boolean and integer inputs); the "
    "table says how many distinct, reduced, standalone buckets each hour of each gave, and the "
    "verdict columns how many of them are real.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("fuzzconv-out/peers-generate"),
                    help="work directory: the peer's venv, both tools' outputs, the report")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one-after-the-other", action="store_true",
                    help="give each tool the whole machine in turn instead of side by side")
    ap.add_argument("--no-bundles", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the report here (it is always written to STORE/report.json)")
    ap.add_argument("--render", type=Path, default=None, metavar="REPORT.json",
                    help="write the tables from a saved report instead of running")
    args = ap.parse_args(argv)
    if args.minutes <= 0:
        print("--minutes must be positive", file=sys.stderr)
        return 2
    if args.render:
        try:
            report = json.loads(args.render.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"cannot read {args.render}: {e}", file=sys.stderr)
            return 2
        nroot = args.render.parent / "nnsmith"
        if report.get("ran") and "triage" not in report["nnsmith"] and nroot.is_dir():
            # a report written before reports were judged: judge the bug folders beside it
            report["nnsmith"]["triage"] = triage(nnsmith_bugs(nroot), nroot)
            args.render.write_text(json.dumps(report, indent=1))
        bundles = args.render.parent / "bundles"
        rows = report.get("fuzzconv", {}).get("buckets", [])
        if bundles.is_dir() and any(b.get("repro") == "REPRODUCED" and "judged" not in b
                                    for b in rows):
            # fuzzconv's buckets as the same harness judged before bundles were judged
            judge_bundles(rows, bundles)
            args.render.write_text(json.dumps(report, indent=1))
    else:
        # SIGTERM unwinds like Ctrl-C, so both tools are stopped with this process
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        store = args.store.resolve()
        report = run(store, args.minutes, args.seed, not args.one_after_the_other,
                     not args.no_bundles)
        for path in [store / "report.json", *filter(None, [args.json])]:
            path.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    print(text)
    if not args.no_write:
        from results_section import write_section  # benchmarks/perf/, on the path above

        write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
