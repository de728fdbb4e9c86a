"""Launching a hunt from command-line options: its campaign config, Ray when asked, the live
progress display, and SIGTERM as Ctrl-C."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .distributed import RayJudge, WorkerSetup, use_cache_dir
from .campaign import HuntConfig, HuntResult, parse_budget
from .engine import Hunt
from .plan import Candidate
from .errors import UsageError
from .gen.catalog import FAMILIES
from .session import open_session
from .store import Store
from .zoo import get_model


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


class _Progress:
    """The live display of a hunt: phase, options covered of the plan, evaluations, findings,
    cache hits, and time left, counting down while a step runs; the pipeline being judged, why,
    and its elapsed against its expected time; the last verdict.

    In a terminal it redraws four times a second; elsewhere (a batch job, a pipe) it prints one
    line per evaluation instead.
    """

    def __init__(self, console: Console, budget: float, enabled: bool):
        self.console = console
        self.budget = budget
        self.enabled = enabled and console.is_terminal
        self.lines = enabled and not console.is_terminal
        self.t0 = time.monotonic()
        self.info: dict[str, Any] = {"evaluations": 0, "findings": 0, "cache_hits": 0, "fresh": 0,
                                     "covered": 0, "coverage": 0}
        self.phase = "starting"
        self.now = "starting"
        self.why = ""
        self.step = ""
        self.expected: float | None = None
        self.started = time.monotonic()
        self.step_started = time.monotonic()
        self.last = ""
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=4,
                         transient=True) if self.enabled else None

    def _render(self) -> Table:
        """Two columns, a short label and its value, so that it reads at 80 columns as at 200:
        a value folds at its spaces (a pipeline at its arrows), never inside a step's name."""
        i = self.info
        total = i["cache_hits"] + i["fresh"]
        now = time.monotonic()
        t = Table.grid(padding=(0, 1))
        t.add_column(no_wrap=True, style="bold")
        t.add_column(ratio=1, overflow="fold")
        hits = f"{i['cache_hits'] / total:.0%}" if total else "—"
        t.add_row("hunt", f"{self.phase} · options covered {i['covered']}/{i['coverage']} · "
                          f"evaluations {i['evaluations']} · findings {i['findings']} · "
                          f"cache hits {hits} · {_clock(self.budget - (now - self.t0))} left")
        expect = f" of ~{_clock(self.expected)} expected" if self.expected else ""
        # pipeline labels hold brackets that rich would read as markup: plain Text throughout
        t.add_row("now", Text(self.now))
        t.add_row("", f"elapsed {_clock(now - self.started)}{expect}")
        if self.step:
            t.add_row("step", Text(f"{self.step} · {_clock(now - self.step_started)}"))
        if self.why:
            t.add_row("why", Text(self.why))
        if self.last:
            t.add_row("last", Text(self.last))
        return t

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "evaluated":
            self.info.update({k: info[k] for k in self.info if k in info})
            self.last = f"{info['pipeline']}: {info['verdict']}"
            if info.get("new_finding"):
                self.last = f"finding {info['new_finding']}: {info['symptom']} — {info['pipeline']}"
                if not self.enabled:
                    self.console.print(self.last, highlight=False, markup=False, soft_wrap=True)
            if self.lines:
                t = int(time.monotonic() - self.t0)
                self.console.print(f"{t // 60:02d}:{t % 60:02d} {self.phase} {i_of(self.info)} "
                                   f"{info['pipeline']}: {info['verdict']}",
                                   highlight=False, markup=False, soft_wrap=True)
            self.step = ""
        elif event == "plan":
            self.info["coverage"] = info["coverage"]
            self.phase = "coverage"
        elif event == "eval":
            self.phase = info["phase"]
            self.now = info["pipeline"]
            self.why = info.get("why") or ""
            self.expected = info.get("expected")
            self.started = self.step_started = time.monotonic()
            self.step = ""
        elif event in ("stage", "step"):
            self.step = info["what"]
            self.step_started = time.monotonic()
            if event == "stage":
                self.now, self.why, self.expected = info["what"], "", None
                self.started = self.step_started
        elif event == "replay":
            self.phase = "replay"
            self.now = f"replayed {info['finding']}: {info['status']}"
        if self.live is not None:
            self.live.refresh()

    def executor_step(self, what: str) -> None:
        self("step", {"what": what})

    def __enter__(self) -> "_Progress":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


def i_of(info: dict[str, Any]) -> str:
    return f"{info['covered']}/{info['coverage']}"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM (a batch system's or ``kill``'s stop) ends the hunt as Ctrl-C does: gracefully,
    keeping every evaluation and finding, the campaign resumable."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_hunt(*, model: str | None, budget: str, max_evals: int | None, seed: int,
             images: Path | None, limit: int, device: str, plugins: list[Path], focus: str | None,
             store: Path, resume: str | None, weights: str, timeout: float | None, max_chain: int,
             thresholds: dict[str, float], console: Console, show_progress: bool,
             ray: str | None = None, ray_workers: int | None = None,
             cache: Path | None = None, probe: int = 8, slowdown_vs: str = "base",
             plan: int = 0) -> HuntResult | list[Candidate]:
    """Run (or resume) a campaign as ``fuzzconv hunt`` does.

    Args:
        ray: ``auto`` or a Ray cluster address: evaluate rounds and shrink passes on the cluster
            (see :mod:`fuzzconv.distributed`); None evaluates here and imports nothing of Ray.
        ray_workers: Ray actors to start (with ``ray``); defaults to one per cluster CPU.
        cache: a directory for the cache and source models instead of the store's and the
            per-user ones; with ``ray`` on several machines it must be on a shared filesystem.
        probe: images in the probe set (0: judge every pipeline on the whole corpus).
        slowdown_vs: ``base`` or ``reference`` (see :mod:`fuzzconv.evaluator`).
        plan: when positive, run nothing and return the first ``plan`` coverage candidates in
            the order the hunt would take them, with their estimates and reasons.
    """
    from .corpora import select

    budget_s = parse_budget(budget)
    if probe < 0:
        raise UsageError("--probe must be 0 (off) or a number of images")
    if slowdown_vs not in ("base", "reference"):
        raise UsageError(f"--slowdown-vs must be base or reference, not {slowdown_vs!r}")
    if max_evals is not None and max_evals < 1:
        raise UsageError("--max-evals must be at least 1")
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    if resume is None and model is None:
        raise UsageError("--model is required (or --resume CAMPAIGN)")
    from .pipeline import DEVICES, device_available

    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    if not device_available(device):
        raise UsageError(f"device {device} is not present on this machine")
    if ray_workers is not None and ray is None:
        raise UsageError("--ray-workers needs --ray")
    if ray_workers is not None and ray_workers < 1:
        raise UsageError("--ray-workers must be at least 1")
    with open_session(store, plugins, weights=weights, seed=0, timeout=timeout) as ex:
        shared = use_cache_dir(ex, cache) if cache is not None else ex.store_dir
        with Store(ex.store_dir) as db:
            if resume is not None:
                camp = db.campaign(resume)
                resume = camp["id"]
                cfg = HuntConfig(**{**camp["config"], "budget_s": budget_s,
                                    "max_evals": max_evals})
            else:
                if model not in FAMILIES:
                    get_model(model)  # type: ignore[arg-type]
                cfg = HuntConfig(model=model, seed=seed, budget_s=budget_s,  # type: ignore[arg-type]
                                 max_evals=max_evals, focus=focus, device=device,
                                 max_chain=max_chain, images=limit, thresholds=thresholds,
                                 images_dir=str(Path(images).resolve()) if images else None,
                                 weights=ex.weights, probe=probe, slowdown_vs=slowdown_vs)
            corpus = select(cfg.images_dir, cfg.images or limit)
            if plan > 0:
                return Hunt(ex, db, cfg, corpus).coverage_plan()[:plan]
            progress = _Progress(console, budget_s, show_progress)
            ex.listener = progress.executor_step
            with ExitStack() as stack:
                judge = None
                if ray is not None:
                    setup = WorkerSetup.of(ex, cfg.model, cfg.device, cfg.images_dir,
                                           cfg.images or limit, corpus, cfg.thresholds, shared,
                                           probe=cfg.probe, slowdown_vs=cfg.slowdown_vs)
                    judge = stack.enter_context(RayJudge(ray, ex, setup, ray_workers,
                                                         say=progress.executor_step))
                hunt = Hunt(ex, db, cfg, corpus, listener=progress, outcomes_many=judge,
                            parallel=judge.workers if judge else 1)
                with progress, _sigterm_as_interrupt():
                    return hunt.run(resume=resume)
