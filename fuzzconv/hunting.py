"""Running a hunt from the command line: options → campaign, with a live progress display."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .distributed import RayJudge, WorkerSetup, use_cache_dir
from .campaign import HuntConfig, parse_budget
from .engine import Hunt, HuntResult
from .errors import UsageError
from .session import open_session
from .store import Store
from .zoo import get_model


class _Progress:
    """Evaluations, findings, cache hit rate, time left, and what runs now."""

    def __init__(self, console: Console, budget: float, enabled: bool):
        self.console = console
        self.budget = budget
        self.enabled = enabled and console.is_terminal
        self.t0 = time.monotonic()
        self.info: dict[str, Any] = {"evaluations": 0, "findings": 0, "cache_hits": 0, "fresh": 0}
        self.now = "starting"
        self.live = Live(self._render(), console=console, refresh_per_second=4,
                         transient=True) if self.enabled else None

    def _render(self) -> Table:
        i = self.info
        total = i["cache_hits"] + i["fresh"]
        left = max(0.0, self.budget - (time.monotonic() - self.t0))
        t = Table.grid(padding=(0, 2))
        t.add_row("evaluations", str(i["evaluations"]), "findings", str(i["findings"]),
                  "cache hits", f"{i['cache_hits'] / total:.0%}" if total else "—",
                  "time left", f"{int(left // 60)}m{int(left % 60):02d}s")
        t.add_row("now", self.now[:110])
        return t

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "evaluated":
            self.info.update({k: info[k] for k in self.info})
            if info.get("new_finding") and not self.enabled:
                self.console.print(f"finding {info['new_finding']}: {info['symptom']} — {info['pipeline']}")
        elif event == "eval":
            self.now = f"{info['phase']}: {info['pipeline']}"
        elif event in ("stage", "step"):
            self.now = info["what"]
        elif event == "replay":
            self.now = f"replayed {info['finding']}: {info['status']}"
        if self.live is not None:
            self.live.update(self._render())

    def step(self, what: str) -> None:
        self("step", {"what": what})

    def __enter__(self) -> "_Progress":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


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
             cache: Path | None = None) -> HuntResult:
    """Run (or resume) a campaign as ``fuzzconv hunt`` does.

    Args:
        ray: ``auto`` or a Ray cluster address: evaluate rounds and shrink passes on the cluster
            (see :mod:`fuzzconv.distributed`); None evaluates here and imports nothing of Ray.
        ray_workers: Ray actors to start (with ``ray``); defaults to one per cluster CPU.
        cache: a directory for the cache and source models instead of the store's and the
            per-user ones; with ``ray`` on several machines it must be on a shared filesystem.
    """
    from .corpora import select

    budget_s = parse_budget(budget)
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
                get_model(model)  # type: ignore[arg-type]
                cfg = HuntConfig(model=model, seed=seed, budget_s=budget_s,  # type: ignore[arg-type]
                                 max_evals=max_evals, focus=focus, device=device,
                                 max_chain=max_chain, images=limit, thresholds=thresholds,
                                 images_dir=str(Path(images).resolve()) if images else None,
                                 weights=ex.weights)
            corpus = select(cfg.images_dir, cfg.images or limit)
            progress = _Progress(console, budget_s, show_progress)
            ex.listener = progress.step
            with ExitStack() as stack:
                judge = None
                if ray is not None:
                    setup = WorkerSetup.of(ex, cfg.model, cfg.device, cfg.images_dir,
                                           cfg.images or limit, corpus, cfg.thresholds, shared)
                    judge = stack.enter_context(RayJudge(ray, ex, setup, ray_workers,
                                                         say=progress.step))
                hunt = Hunt(ex, db, cfg, corpus, listener=progress, outcomes_many=judge,
                            parallel=judge.workers if judge else 1)
                with progress, _sigterm_as_interrupt():
                    return hunt.run(resume=resume)
