"""Evaluating a hunt on a Ray cluster: ``fuzzconv hunt --ray auto|ADDRESS``.

The hunt stays where it is: one driver process draws pipelines, judges outcomes, shrinks findings
and alone writes the SQLite store. What goes to the cluster is the evaluation of pipelines —
the ``parallel`` pipelines of one hunt round, and the candidates of one shrink pass — through
:class:`RayJudge`, the ``outcomes_many`` / ``judge_many`` callable that
:class:`~fuzzconv.engine.Hunt` and :func:`~fuzzconv.shrink.minimize` accept.

Each Ray worker is an actor, :class:`EvaluationWorker`, owning its own
:class:`~fuzzconv.executor.Executor` and :class:`~fuzzconv.workers.WorkerPool`, so every Ray
node runs its own framework subprocesses. All actors and the driver share one cache directory
(the store's, or ``--cache DIR`` on a shared filesystem, see :func:`use_cache_dir`), so an
artifact built on one node is reused by every other; logits stay in that cache and only small
outcome dicts travel back through Ray's object store.

Ray is imported inside the functions that need it, never at module level: a hunt without
``--ray`` imports nothing of Ray.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from .cache import Cache
from .errors import MissingExtra, UsageError
from .evaluator import Evaluator, Outcome
from .executor import BudgetExhausted, Executor
from .oracle import Thresholds
from .pipeline import Pipeline
from .registry import fresh_registry, plugin_files, sources_digest
from .session import check_store
from .workers import WorkerPool
from .gen.catalog import SOURCES, family_of, remember
from .gen.spec import GenSpec
from .zoo import get_model

#: Seconds to wait for every actor to start (imports, corpus check) before giving up.
START_TIMEOUT_S = 300.0
#: Seconds a closing actor gets to shut its framework workers down before it is killed.
CLOSE_TIMEOUT_S = 30.0
#: How often Ray restarts a lost actor (and retries its task) before the hunt gives up.
ACTOR_RESTARTS = 3


class ClusterError(UsageError):
    """The Ray cluster cannot be reached or lost a worker: one line for the user, like a full disk."""


def use_cache_dir(ex: Executor, cache: Path) -> Path:
    """Point ``ex`` at the shared cache directory ``cache``; returns it, resolved.

    ``cache/cache`` holds artifacts and outputs (the layout of a store), ``cache/models`` the
    source models that otherwise live in the per-user cache, so every node builds on the very
    same source model.
    """
    root = check_store(Path(cache)).resolve()
    ex.cache = Cache(root / "cache")
    ex.source_cache = Cache(root / "models")
    return root


@dataclass(frozen=True)
class WorkerSetup:
    """Everything an actor needs to evaluate pipelines exactly as the driver would.

    Attributes:
        shared_dir: the directory whose ``cache/`` the actors share (the store or ``--cache``);
            actors keep their worker logs under ``logs/`` and plugin copies under ``plugins/``.
        source_cache: where the source models live (the driver's).
        plugins: per plugin file, (name relative to its directory, contents) of it and of the
            helper modules and packages beside it that it imports
            (:func:`~fuzzconv.registry.plugin_files`); actors write each group into one directory
            under ``shared_dir/plugins`` so a node need not hold the driver's paths. The cache
            keys use the contents, so the copies hit the driver's entries.
        corpus_digest: the driver's corpus; an actor whose ``select(images_dir, limit)`` gives
            other images refuses to start.
    """

    model: str
    device: str
    images_dir: str | None
    limit: int
    corpus_digest: str
    thresholds: dict[str, float]
    plugins: tuple[tuple[tuple[str, bytes], ...], ...]
    shared_dir: str
    source_cache: str
    weights: str
    seed: int
    timeouts: dict[str, float]
    batch_size: int
    probe: int = 8
    slowdown_vs: str = "base"

    @classmethod
    def of(cls, ex: Executor, model: str, device: str, images_dir: str | None, limit: int,
           corpus: Any, thresholds: dict[str, float], shared_dir: Path, probe: int = 8,
           slowdown_vs: str = "base") -> "WorkerSetup":
        """The setup that mirrors the driver's executor ``ex`` and its corpus."""
        plugins = tuple(tuple((name, s.read_bytes()) for name, s in plugin_files(f))
                        for f in ex.registry.plugin_files)
        return cls(model=model, device=device, images_dir=images_dir, limit=limit,
                   corpus_digest=corpus.digest, thresholds=dict(thresholds), plugins=plugins,
                   shared_dir=str(Path(shared_dir).resolve()),
                   source_cache=str(ex.source_cache.root.resolve()), weights=ex.weights,
                   seed=ex.seed, timeouts=dict(ex.timeouts), batch_size=ex.batch_size,
                   probe=probe, slowdown_vs=slowdown_vs)


def _plugin_copy(where: Path, files: tuple[tuple[str, bytes], ...]) -> str:
    """Write a plugin file and its helpers into a directory named by their contents (each file
    atomically, packages in their own directories); the plugin file's path."""
    for name, _ in files:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise ValueError(f"a plugin's file must lie beside it, not at {name!r}")
    d = where / sources_digest(files)
    for name, data in files:
        target = d / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return str(d / files[0][0])


class EvaluationWorker:
    """One Ray worker: evaluates pipelines with its own executor and framework workers.

    A plain class, made an actor by :class:`RayJudge` (``ray.remote(EvaluationWorker)``), so it
    imports nothing of Ray and works the same when called directly.
    """

    def __init__(self, setup: WorkerSetup):
        from .corpora import select

        shared = Path(setup.shared_dir)
        plugins = tuple(_plugin_copy(shared / "plugins", files) for files in setup.plugins)
        self.node = socket.gethostname()
        self.pool = WorkerPool(shared / "logs" / f"ray-{self.node}-{os.getpid()}", plugins)
        self.ex = Executor(shared, fresh_registry(plugins), self.pool, weights=setup.weights,
                           seed=setup.seed, timeouts=setup.timeouts, batch_size=setup.batch_size,
                           source_cache=Path(setup.source_cache))
        corpus = select(setup.images_dir, setup.limit)
        if corpus.digest != setup.corpus_digest:
            raise UsageError(f"the images on Ray node {self.node} differ from the driver's "
                             f"(is {setup.images_dir or 'the default corpus'} the same there?)")
        self.setup, self.corpus = setup, corpus
        self.evaluators: dict[str, Evaluator] = {}
        # Every pipeline starts with a step of the source framework: start its worker now, so its
        # imports overlap the driver's reference run instead of delaying the first round.
        family = family_of(setup.model)
        self.pool.get(SOURCES[family.split(":")[1]][1] if family is not None
                      else get_model(setup.model).family).start()

    def evaluator(self, model: str) -> Evaluator:
        """The evaluator of a model (the hunt's, or one a generated family drew), made once."""
        if model not in self.evaluators:
            s = self.setup
            self.evaluators[model] = Evaluator(self.ex, model, self.corpus,
                                               Thresholds(**s.thresholds), probe_size=s.probe,
                                               slowdown_vs=s.slowdown_vs)
        return self.evaluators[model]

    def ready(self) -> str:
        """The node this worker runs on (called once, so start-up errors surface early)."""
        return self.node

    def outcome(self, pipeline: dict[str, Any], deadline: float | None,
                generated: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate and judge one pipeline.

        Args:
            pipeline: the pipeline JSON.
            deadline: the hunt's deadline as wall-clock ``time.time()`` seconds (monotonic clocks
                differ between processes), or None.
            generated: the spec of the pipeline's model when it is a generated one (the actor
                has no store to resolve its name from).

        Returns:
            The :class:`Outcome` fields, plus the executor counters this evaluation moved
            (``fresh_evaluations``, ``cache_hits``), or ``{"budget_exhausted": True}`` when the
            deadline passed with a step in flight.
        """
        if generated is not None:
            remember(GenSpec.from_dict(generated, pipeline.get("model")))
        p = Pipeline.from_dict(pipeline, self.ex.registry)
        fresh0, hits0 = self.ex.fresh_evaluations, self.ex.cache.hits
        self.ex.deadline = None if deadline is None else time.monotonic() + (deadline - time.time())
        try:
            out = self.evaluator(p.model).outcome(p)
        except BudgetExhausted:
            return {"budget_exhausted": True}
        finally:
            self.ex.deadline = None
        return {**out.to_dict(), "fresh_evaluations": self.ex.fresh_evaluations - fresh0,
                "cache_hits": self.ex.cache.hits - hits0}

    def close(self) -> None:
        """Stop this worker's framework subprocesses (they live in their own process groups, so
        killing the actor alone would leave a hung one behind)."""
        self.pool.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtra("ray", "ray") from None
    return ray


def connect(address: str) -> bool:
    """Connect this process to Ray; True when this call did (and :meth:`RayJudge.close` should
    disconnect), False when the process was already connected.

    ``auto`` joins the cluster Ray finds on this node (``RAY_ADDRESS``, or the latest ``ray
    start``) and otherwise starts a private one; any other value is a cluster address such as
    ``10.0.0.5:6379``. Ray binds to this machine's network address even when given 127.0.0.1;
    its switch ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set for ``ray start`` and for the hunt)
    keeps a single-machine cluster on the loopback interface.

    Raises:
        ClusterError: nothing answers at ``address``, or Ray refused the connection.
    """
    import logging

    if address != "auto":
        _check_reachable(address)
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address != "auto":
            ray.init(address=address, **quiet)
            return True
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            ray.init(include_dashboard=False, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {_last_line(exc)} (a cluster with "
            "token authentication needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token)") from None
    return True


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on an address nothing listens at: Ray itself retries for many minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"--ray takes auto or HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address}: "
                           f"{exc.strerror or type(exc).__name__}") from None


class RayJudge:
    """Judges lists of pipelines on Ray actors; the hunt's ``outcomes_many``.

    Args:
        address: ``auto`` or a cluster address (see :func:`connect`).
        ex: the driver's executor: its deadline bounds every evaluation, and its counters
            (``fresh_evaluations``, ``cache.hits``) are kept as if it had evaluated everything.
        setup: what each actor needs (see :meth:`WorkerSetup.of`).
        workers: how many actors. Defaults to one per CPU of the cluster: a pipeline's
            conversion and compilation mostly run on one core, so pipelines in parallel use a
            node better than threads within one.
        say: progress messages.

    Raises:
        ClusterError: the cluster cannot be reached, or an actor could not start.
    """

    def __init__(self, address: str, ex: Executor, setup: WorkerSetup, workers: int | None = None,
                 say: Callable[[str], None] = lambda what: None):
        ray = self._ray = _import_ray()
        self.ex = ex
        say(f"connecting to Ray ({address})")
        self._owns_connection = connect(address)
        self.actors: list[Any] = []
        try:
            resources = ray.cluster_resources()
            cpus = float(resources.get("CPU", 1.0))
            n = workers or max(1, int(cpus))
            # Fractions of a CPU (or GPU) when asked for more workers than there are: every
            # actor must fit at once, or the round would wait for one that never starts.
            opts: dict[str, Any] = {"num_cpus": min(1.0, cpus / n)}
            if setup.device == "cuda":
                opts["num_gpus"] = min(1.0, float(resources.get("GPU", 0.0)) / n)
            actor = ray.remote(EvaluationWorker).options(
                **opts, scheduling_strategy="SPREAD", max_restarts=ACTOR_RESTARTS,
                max_task_retries=ACTOR_RESTARTS,
                # a second thread lets close() stop the framework workers under a running task
                max_concurrency=2)
            self.actors = [actor.remote(setup) for _ in range(n)]
            say(f"starting {n} Ray workers")
            try:
                nodes = ray.get([a.ready.remote() for a in self.actors], timeout=START_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise ClusterError(f"Ray did not start {n} workers within {START_TIMEOUT_S:g} s "
                                   "(is the cluster busy?)") from None
            except ray.exceptions.RayError as exc:
                raise ClusterError(f"a Ray worker could not start: {_last_line(exc)}") from None
            say(f"{n} Ray workers on {len(set(nodes))} node(s)")
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        """How many pipelines are judged at once: the hunt's and the shrinker's ``parallel``."""
        return len(self.actors)

    def __call__(self, pipelines: list[Pipeline]) -> list[Outcome]:
        """Outcomes of ``pipelines``, in order; each actor takes the next one as it frees up."""
        ray = self._ray
        deadline = (None if self.ex.deadline is None
                    else time.time() + (self.ex.deadline - time.monotonic()))
        todo = list(enumerate(pipelines))[::-1]
        idle = list(self.actors)
        running: dict[Any, tuple[int, Any]] = {}
        results: list[dict[str, Any] | None] = [None] * len(pipelines)
        while todo or running:
            while todo and idle:
                i, p = todo.pop()
                a = idle.pop()
                running[a.outcome.remote(p.to_dict(), deadline,
                                         get_model(p.model).generated)] = (i, a)
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i, a = running.pop(ref)
                results[i] = self._get(ref)
                idle.append(a)
        # Every task shares the deadline, so none is left running when this one is raised.
        if any(r.get("budget_exhausted") for r in results):  # type: ignore[union-attr]
            raise BudgetExhausted()
        outs = []
        for p, r in zip(pipelines, results):
            assert r is not None
            self.ex.fresh_evaluations += r["fresh_evaluations"]
            self.ex.cache.hits += r["cache_hits"]
            outs.append(Outcome.from_dict(p, r))
        return outs

    def _get(self, ref: Any) -> dict[str, Any]:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UsageError):
                raise ClusterError(f"on a Ray worker: {exc.cause}") from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise ClusterError(f"a Ray worker was lost {ACTOR_RESTARTS + 1} times "
                               f"(node down or out of memory?): {_last_line(exc)}") from None

    def close(self) -> None:
        """Stop the actors' framework workers, the actors, and the connection this judge made."""
        ray = self._ray
        if self.actors:
            ray.wait([a.close.remote() for a in self.actors], num_returns=len(self.actors),
                     timeout=CLOSE_TIMEOUT_S)
            for a in self.actors:
                ray.kill(a)
            self.actors = []
        if self._owns_connection:
            ray.shutdown()
            self._owns_connection = False

    def __enter__(self) -> "RayJudge":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
