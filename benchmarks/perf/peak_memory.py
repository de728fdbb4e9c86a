"""Peak memory of a hunt: the resident memory of the hunt process and its worker subprocesses.

Runs a command (by default the README's ``fuzzconv hunt --model resnet101v2``) and samples, every
``--interval`` seconds, the resident set size (``VmRSS``) of every process in its tree from
``/proc``: the command itself and its descendants (the framework workers start their own sessions,
but stay its children). Two figures come out:

* **max total** — the largest sum of ``VmRSS`` over the tree in one sample: what the hunt held at
  once. Sampling can miss a spike shorter than the interval.
* **per-process peaks** — each process's kernel high-water mark (``VmHWM``, exact up to its last
  sample), and **max total bound**: the largest sum, over one sample, of the high-water marks of
  the processes alive then — a bound on the simultaneous total that no spike between samples can
  exceed (it counts each process at its peak so far, even when those peaks were not at once).

Shared pages (libraries mapped by several workers) count once per process, so both figures are
pessimistic. Samples go to ``--samples`` as JSON lines; the summary is printed as JSON.

    .venv/bin/python benchmarks/perf/peak_memory.py [--samples FILE] [--log FILE] [-- CMD ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


def _status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid`` in bytes (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    argv = [a.decode(errors="replace") for a in argv if a]
    if "fuzzconv.worker_main" in argv:
        return "worker " + argv[argv.index("fuzzconv.worker_main") + 1]
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:4]))


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent links in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class Sampler:
    """Samples a process tree; :meth:`sample` once per interval, :meth:`summary` at the end."""

    def __init__(self, root: int, samples: Path):
        self.root = root
        self.t0 = time.monotonic()
        self.file = open(samples, "w")
        self.max_total = 0
        self.max_total_at = 0.0
        self.max_total_procs: dict[str, int] = {}
        self.max_bound = 0
        self.procs: dict[int, dict] = {}

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        now: dict[str, int] = {}
        total = bound = 0
        for pid in tree(self.root):
            st = _status(pid)
            if "VmRSS" not in st:
                continue
            p = self.procs.setdefault(pid, {"label": _label(pid), "max_rss": 0, "hwm": 0,
                                            "first": t})
            p["max_rss"] = max(p["max_rss"], st["VmRSS"])
            p["hwm"] = max(p["hwm"], st.get("VmHWM", 0))
            p["last"] = t
            total += st["VmRSS"]
            bound += p["hwm"]
            now[f"{pid} {p['label']}"] = st["VmRSS"]
        self.max_bound = max(self.max_bound, bound)
        if total > self.max_total:
            self.max_total, self.max_total_at, self.max_total_procs = total, t, now
        self.file.write(json.dumps({"t": round(t, 1), "total": total, "procs": now}) + "\n")
        self.file.flush()

    def summary(self) -> dict:
        gib = lambda b: round(b / GIB, 3)  # noqa: E731
        procs = sorted(self.procs.items(), key=lambda kv: -kv[1]["hwm"])
        return {
            "max_total_rss_gib": gib(self.max_total),
            "max_total_at_s": round(self.max_total_at, 1),
            "max_total_breakdown_gib": {k: gib(v) for k, v in self.max_total_procs.items()},
            "max_total_bound_gib": gib(self.max_bound),
            "processes": [{"pid": pid, "label": p["label"], "peak_hwm_gib": gib(p["hwm"]),
                           "max_sampled_rss_gib": gib(p["max_rss"]),
                           "alive_s": [round(p["first"], 1), round(p.get("last", 0.0), 1)]}
                          for pid, p in procs],
        }


def run(cmd: list[str], samples: Path, log: Path | None, interval: float = 1.0,
        env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` under the sampler; its summary plus the wall time and exit code."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    sampler = Sampler(proc.pid, samples)
    while proc.poll() is None:
        sampler.sample()
        time.sleep(interval)
    wall = time.monotonic() - t0
    result = {"command": cmd, "exit_code": proc.returncode, "wall_s": round(wall, 1),
              "interval_s": interval, **sampler.summary()}
    sampler.file.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=Path, default=None, help="JSON lines, one per sample")
    ap.add_argument("--log", type=Path, default=None, help="the command's output")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("cmd", nargs="*", help="the command (after --); default: a resnet101v2 hunt")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzzconv-mem-"))
    cmd = args.cmd or [str(ROOT / ".venv" / "bin" / "fuzzconv"), "hunt", "--model", "resnet101v2",
                       "--store", str(work / "store")]
    result = run(cmd, args.samples or work / "samples.jsonl", args.log or work / "output.txt",
                 args.interval)
    result["samples"] = str(args.samples or work / "samples.jsonl")
    result["log"] = str(args.log or work / "output.txt")
    # The command's own summary (a hunt's last lines: evaluations, findings, cache hits).
    lines = Path(result["log"]).read_text(errors="replace").splitlines()
    result["output_tail"] = lines[-12:]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
