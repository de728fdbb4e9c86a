"""Framework workers: one long-lived subprocess per framework family.

Why: TensorFlow and torchvision segfault in one process, and converters crash and hang on real
inputs. The orchestrator never imports a framework; it sends JSON requests to a worker, which pays
its imports once and answers with JSON. Artifacts travel as files, arrays as ``.npy``.

A worker that dies (segfault, abort, OOM kill) or hangs past its timeout is killed with its process
group and restarted on the next request; the request becomes a :class:`WorkerFailure` carrying the
symptom (``crash`` or ``timeout``), the error class and the tail of the worker's stderr.

Start-up: steps import their frameworks inside their functions, so a fresh worker's first step
would also pay for importing TensorFlow, torch or TVM (5-20 s on a loaded machine), and after every
restart a short step timeout would report a segfault or a quick step as a timeout. A caller that
passes ``start_timeout`` (the executor does) has a worker that is not running started and warmed
first: it imports its family's frameworks (:class:`~fuzzconv.protocol.Warm`) under ``start_timeout``, and only then is the
request sent and its own timeout started.

Protocol: the typed requests and replies of :mod:`fuzzconv.protocol`. The parent writes one JSON
object per line to the child's stdin; the child answers one line on a private pipe (its fd 1 is
redirected to stderr, so framework chatter cannot corrupt the protocol). A request is served by
``Server.op_NAME`` in :mod:`fuzzconv.worker_main`.

Memory: frameworks keep what a large step allocated (TensorFlow's allocator, converters' caches),
so a worker that converted a large model stays large while it waits for its next request, next to
the other families' workers. A worker whose resident size exceeds ``max_rss`` after a request is
therefore closed, and the next request starts a fresh one (the imports are paid again, a few
seconds). And before a request that converts or compiles (a step or a build: the ones that grow a
worker by gigabytes on a large model), the pool closes workers, largest first, until together they
hold at most the same limit, so such a step starts next to at most that much. The limit is
``$FUZZCONV_WORKER_MAX_RSS`` (bytes, or with a ``K``/``M``/``G`` suffix; 0 turns both off), by
default :data:`DEFAULT_MAX_RSS`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import MissingExtra, UsageError
from .protocol import HEAVY, Exit, Request, Warm, encode, reply_of
from .registry import FAMILIES, family_available

DEFAULT_TIMEOUT = 600.0
#: How long a fresh worker may take to import its frameworks (see "Start-up" above).
START_TIMEOUT = 600.0
#: Resident size above which a worker is recycled after a request (see the module docstring).
DEFAULT_MAX_RSS = 3 * 1024**3


def parse_size(text: str) -> int:
    """``"3G"``, ``"512M"``, ``"2048K"`` or plain bytes as bytes.

    Raises:
        ValueError: not a size.
    """
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    number = float(t[:-1] if scale > 1 else t)
    if number < 0:
        raise ValueError(f"negative size {text!r}")
    return int(number * scale)


def max_rss_from_env() -> int:
    """The recycling limit: ``$FUZZCONV_WORKER_MAX_RSS``, else :data:`DEFAULT_MAX_RSS`; 0 is off.

    Raises:
        UsageError: the variable is not a size.
    """
    raw = os.environ.get("FUZZCONV_WORKER_MAX_RSS")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_RSS
    try:
        size = parse_size(raw)
    except ValueError:
        raise UsageError(f"FUZZCONV_WORKER_MAX_RSS must be a size such as 3G or 0, not {raw!r}") from None
    return size


def check_gc_step_env() -> None:
    """Refuse a ``$FUZZCONV_WORKER_GC_MB`` that is not a whole number of MB (read by the workers).

    Raises:
        UsageError: it is not.
    """
    raw = os.environ.get("FUZZCONV_WORKER_GC_MB")
    if raw is not None and raw.strip() and not raw.strip().isdigit():
        raise UsageError(f"FUZZCONV_WORKER_GC_MB must be a whole number of MB (0 turns it off), not {raw!r}")


def resident_bytes(pid: int) -> int | None:
    """A process's resident set size from ``/proc`` (Linux); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class WorkerFailure(Exception):
    """A request that did not come back: the worker crashed, hung, or the step raised.

    Attributes:
        symptom: ``crash`` or ``timeout``.
        error_class: the exception class, or the signal name (``SIGSEGV``, ``SIGKILL``...).
        stderr_tail: the last lines the worker wrote to stderr.
    """

    def __init__(self, symptom: str, error_class: str, message: str, stderr_tail: str = "",
                 traceback: str = ""):
        super().__init__(f"{error_class}: {message}")
        self.symptom = symptom
        self.error_class = error_class
        self.message = message
        self.stderr_tail = stderr_tail
        self.traceback = traceback


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Worker:
    """The orchestrator's handle on one family's subprocess.

    Args:
        family: the framework family.
        log_dir: where ``worker-FAMILY.log`` (the worker's stdout and stderr) goes.
        plugin_files: plugin files the worker loads.
        env: extra environment variables for the worker.
        max_rss: recycle the worker after a request that leaves it above this many resident
            bytes; 0 never recycles. Defaults to ``$FUZZCONV_WORKER_MAX_RSS`` or
            :data:`DEFAULT_MAX_RSS`.
    """

    def __init__(self, family: str, log_dir: Path, plugin_files: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, max_rss: int | None = None):
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family}")
        self.family = family
        self.log_path = Path(log_dir) / f"worker-{family}.log"
        self.plugin_files = tuple(plugin_files)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._reader: Any = None
        self.max_rss = max_rss_from_env() if max_rss is None else max_rss
        self.starts = 0
        self.requests = 0
        self.recycles = 0
        self.warm = False  # running, with its frameworks imported
        self._warming: int | None = None  # log offset of a warm request not yet answered
        self._exit_sent = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        why = family_available(self.family)
        if why is not None:
            mod = why.split(" ", 1)[0]
            raise MissingExtra(mod, self.family)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        rfd, wfd = os.pipe()
        env = dict(os.environ)
        env.update(self.env or {})
        env["FUZZCONV_WORKER_FD"] = str(wfd)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [sys.executable, "-m", "fuzzconv.worker_main", self.family, *self.plugin_files]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(wfd,),
            start_new_session=True, env=env,
        )
        os.close(wfd)
        log.close()
        self._reader = os.fdopen(rfd, "rb", buffering=0)
        self._buf = b""
        self.starts += 1
        self.warm = False
        self._exit_sent = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int | None:
        """The worker's resident size now; None when it is not running or ``/proc`` is absent."""
        return resident_bytes(self.proc.pid) if self.alive() else None  # type: ignore[union-attr]

    def _recycle_if_large(self) -> None:
        """Close the worker when it holds more than ``max_rss``; the next request starts anew."""
        if not self.max_rss:
            return
        rss = self.rss()
        if rss is not None and rss > self.max_rss:
            self.close()
            self.recycles += 1

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._close()

    def ask_to_exit(self) -> None:
        """Send the exit request without waiting for the worker to go (:meth:`close` waits)."""
        if self.alive() and not self._exit_sent:
            try:
                self._send(Exit())
            except Exception:  # noqa: BLE001 - a worker that cannot be asked is killed by close()
                pass
            self._exit_sent = True

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within a few seconds, or at once when it
        is still importing for a warm-up nobody waited for (a command that stopped early)."""
        if self._warming is not None:
            self.kill()
            return
        self.ask_to_exit()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.proc = None
        self.warm = False
        self._warming = None

    # -- requests ----------------------------------------------------------------------------
    def warm_up(self, timeout: float | None = None) -> None:
        """Start the worker if it is not running and have it import its family's frameworks;
        nothing for a worker that is already warm.

        Raises:
            WorkerFailure: the worker died while importing, or took longer than ``timeout``.
        """
        if self.alive() and self.warm:
            return
        what = f"starting the {self.family} worker"
        if self._warming is not None and self.alive():
            offset, self._warming = self._warming, None
            self._receive(timeout, what, offset)
        else:
            self._exchange(Warm(), timeout, what, count=False)
        self.warm = True

    def warm_in_background(self) -> None:
        """Start the worker and have it import its frameworks without waiting for it: the next
        :meth:`warm_up` or request collects the answer. For overlapping the imports (seconds of
        one core) with the caller's own work."""
        if (self.alive() and self.warm) or (self._warming is not None and self.alive()):
            return
        if not self.alive():
            self._close()
            self.start()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self._send(Warm())
        except BrokenPipeError:
            return  # died at once; the next request starts it again and reports why
        self._warming = offset

    def request(self, request: Request, timeout: float | None = None) -> Any:
        """Send one request and wait for its reply (of the request's ``reply`` type).

        Raises:
            WorkerFailure: the step raised, the worker died, or it took longer than ``timeout``.
        """
        try:
            return reply_of(request, self._exchange(request, timeout, request.op))
        finally:
            self._recycle_if_large()  # after a step that raised too; a dead worker has no size

    def _send(self, request: Request) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(encode(request)) + "\n").encode())
        self.proc.stdin.flush()

    def _exchange(self, request: Request, timeout: float | None, what: str,
                  count: bool = True) -> Any:
        """Send ``request`` (starting the worker if it is not running) and return its result."""
        if self._warming is not None and self.alive():
            self.warm_up(START_TIMEOUT)  # answers come in order: the warm-up's first
        if not self.alive():
            self._close()
            self.start()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if count:
            self.requests += 1
        try:
            self._send(request)
        except BrokenPipeError:
            return self._died(log_offset)
        return self._receive(timeout, what, log_offset)

    def _receive(self, timeout: float | None, what: str, log_offset: int) -> Any:
        """Wait for the answer to the request in flight and return its result."""
        deadline = time.monotonic() + (timeout or DEFAULT_TIMEOUT)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerFailure("timeout", "Timeout",
                                    f"{what} took longer than {timeout or DEFAULT_TIMEOUT:g} s",
                                    self._tail(log_offset))
            ready, _, _ = select.select([self._reader], [], [], min(left, 1.0))
            if ready:
                chunk = self._reader.read(1 << 20)
                if not chunk:
                    return self._died(log_offset)
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        answer = json.loads(line)
        if answer.get("ok"):
            return answer.get("result")
        raise WorkerFailure("crash", answer.get("error_class", "Error"), answer.get("error", ""),
                            self._tail(log_offset), answer.get("traceback", ""))

    def _died(self, log_offset: int) -> Any:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        if code is not None and code < 0:
            name = _signal_name(code)
            why = {"SIGKILL": "killed (out of memory?)"}.get(name, f"died with {name}")
            raise WorkerFailure("crash", name, f"the {self.family} worker {why}", self._tail(log_offset))
        raise WorkerFailure("crash", "WorkerExit", f"the {self.family} worker exited with code {code}",
                            self._tail(log_offset))

    def _tail(self, offset: int, limit: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


def _within(seconds: float, deadline: float | None, what: str) -> float:
    """``seconds``, cut to what is left before ``deadline``.

    Raises:
        WorkerFailure: nothing is left (a timeout: nothing was sent).
    """
    if deadline is None:
        return seconds
    left = deadline - time.monotonic()
    if left <= 0:
        raise WorkerFailure("timeout", "Timeout", f"no time was left for {what}")
    return min(seconds, left)


class WorkerPool:
    """One worker per family, started on first use. Use as a context manager."""

    def __init__(self, log_dir: Path, plugin_files: tuple[str, ...] = (),
                 max_rss: int | None = None):
        self.log_dir = Path(log_dir)
        self.plugin_files = tuple(plugin_files)
        # Read once here, so a bad value is a usage error before any worker starts.
        self.max_rss = max_rss_from_env() if max_rss is None else max_rss
        check_gc_step_env()
        self.workers: dict[str, Worker] = {}

    def get(self, family: str) -> Worker:
        if family not in self.workers:
            self.workers[family] = Worker(family, self.log_dir, self.plugin_files,
                                          max_rss=self.max_rss)
        return self.workers[family]

    def request(self, family: str, request: Request, timeout: float | None = None,
                start_timeout: float | None = None, deadline: float | None = None) -> Any:
        """Send ``request`` to the family's worker and wait for its reply.

        Args:
            timeout: seconds for the request itself; defaults to :data:`DEFAULT_TIMEOUT`.
            start_timeout: when given, a worker that is not running is started and warmed first
                (see "Start-up" in the module docstring), with this many seconds for that.
            deadline: a ``time.monotonic()`` time that neither the start nor the request may
                pass; a request that would begin past it fails as a timeout without being sent.

        Raises:
            WorkerFailure: see :meth:`Worker.request` and :meth:`Worker.warm_up`.
        """
        if isinstance(request, HEAVY):
            self.make_room()
        worker = self.get(family)
        if start_timeout is not None:
            worker.warm_up(_within(start_timeout, deadline, f"starting the {family} worker"))
        return worker.request(request, _within(timeout or DEFAULT_TIMEOUT, deadline, request.op))

    def make_room(self) -> list[str]:
        """Close workers, largest first, until together they hold at most ``max_rss``; the
        families closed (each restarts on its next request)."""
        if not self.max_rss:
            return []
        sizes = {f: w.rss() for f, w in self.workers.items()}
        held = {f: size for f, size in sizes.items() if size is not None}
        total = sum(held.values())
        closed = []
        for family in sorted(held, key=held.__getitem__, reverse=True):
            if total <= self.max_rss:
                break
            self.workers[family].close()
            self.workers[family].recycles += 1
            total -= held[family]
            closed.append(family)
        return closed

    def warm_in_background(self, families: Iterable[str]) -> None:
        """Start these families' workers and their imports now, without waiting (see
        :meth:`Worker.warm_in_background`); a family that cannot run here is left to fail on
        its first request, with the usual message."""
        for family in families:
            try:
                self.get(family).warm_in_background()
            except MissingExtra:
                pass

    def close(self) -> None:
        # All at once: each worker's exit takes a moment, and they need not take turns.
        for w in self.workers.values():
            w.ask_to_exit()
        for w in self.workers.values():
            w.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class NoWorkers:
    """A pool that never starts a worker: every request fails as a crash of class ``NotCached``.

    An executor over it answers from the cache alone, which is what a reader of a store (the HTML
    report) wants: it shows what was computed and never runs a framework.
    """

    def request(self, family: str, request: Request, timeout: float | None = None,
                start_timeout: float | None = None, deadline: float | None = None) -> Any:
        raise WorkerFailure("crash", "NotCached",
                            f"not in the cache (it would take a {request.op} in the {family} "
                            "worker, and this reader runs no framework)")

    def warm_in_background(self, families: Iterable[str]) -> None:
        pass

    def close(self) -> None:
        pass
