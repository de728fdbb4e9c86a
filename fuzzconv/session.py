"""Opening a working session: the store directory, the registry with plugins, workers, executor.

Every command that runs pipelines goes through :func:`open_session` (or, for a stored finding,
:func:`finding_session`), so store checks, plugin loading and worker shutdown are done once, the
same way everywhere.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from .campaign import HuntConfig
from .errors import UsageError
from .executor import Executor
from .gen import catalog
from .registry import fresh_registry
from .store import Store, stored_spec
from .workers import WorkerPool

MIN_FREE_BYTES = 256 * 1024**2


def check_store(store: Path) -> Path:
    """Create the store directory if needed; refuse one that is unwritable or full."""
    store = Path(store).expanduser()
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create store directory {store}: {exc.strerror or exc}") from None
    if not store.is_dir():
        raise UsageError(f"store path {store} is not a directory")
    if not os.access(store, os.W_OK | os.X_OK):
        raise UsageError(f"store directory {store} is not writable")
    probe = store / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"store directory {store} is not writable: {exc.strerror or exc}") from None
    if shutil.disk_usage(store).free < MIN_FREE_BYTES:
        raise UsageError(f"store directory {store} has less than {MIN_FREE_BYTES >> 20} MiB free")
    return store


def parse_weights(weights: str) -> str:
    if weights in ("calibrated", "imagenet"):
        return weights
    p = Path(weights).expanduser()
    if not p.is_file():
        raise UsageError(f"--weights must be calibrated, imagenet or a weights file; {weights!r} is none")
    return str(p.resolve())


@contextmanager
def open_session(store: Path, plugins: list[Path] | tuple[Path, ...] = (),
                 weights: str = "calibrated", seed: int = 0, timeout: float | None = None,
                 listener: Callable[[str], None] | None = None,
                 batch_size: int = 8) -> Iterator[Executor]:
    """Yield an :class:`Executor` over ``store``; workers are closed on the way out."""
    store = check_store(store)
    # generated models named in this store resolve from it (read only)
    catalog.attach(str(store.resolve()), partial(stored_spec, store.resolve()))
    plugin_files = tuple(str(Path(p).resolve()) for p in plugins)
    registry = fresh_registry(plugin_files)
    pool = WorkerPool(store / "logs", plugin_files)
    try:
        yield Executor(store, registry, pool, weights=parse_weights(weights), seed=seed,
                       timeouts={"*": timeout} if timeout else None, listener=listener,
                       batch_size=batch_size)
    finally:
        pool.close()


@contextmanager
def finding_session(store: Path, fid: str, plugins: list[Path] | tuple[Path, ...],
                    say: Callable[[str], None] = lambda s: None
                    ) -> Iterator[tuple[Executor, Store, dict[str, Any], HuntConfig, Any]]:
    """Open the store and an executor set up as the finding's campaign was (weights, images).

    Yields (executor, store, finding, campaign config, corpus).
    """
    from .corpora import select

    if not (Path(store) / "fuzzconv.sqlite").exists():
        raise UsageError(f"no fuzzconv store in {store} (run a hunt first, or pass --store)")
    with Store(Path(store)) as db:
        cfg = HuntConfig(**db.campaign(db.finding(fid)["campaign"])["config"])
    with open_session(store, plugins, weights=cfg.weights, listener=say) as ex, \
            Store(ex.store_dir) as db:
        yield ex, db, db.finding(fid), cfg, select(cfg.images_dir, cfg.images or None)
