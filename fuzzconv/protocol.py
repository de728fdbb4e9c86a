"""The worker protocol: typed requests and replies between the orchestrator and a framework worker.

Every request is a frozen dataclass naming its operation (``op``) and the dataclass its reply
decodes into (``reply``); :class:`fuzzconv.workers.Worker` sends one and returns that reply, and
:class:`fuzzconv.worker_main.Server` serves it with its ``op_<op>`` method. A misspelt field is a
``TypeError`` where the request is made, not a ``KeyError`` in another process.

On the wire a request is one JSON line, ``{"op": NAME, **fields}``; the answer is one line,
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error_class", "error", "traceback"}`` (see
:mod:`fuzzconv.workers`).

Steps and runtimes are named by their registry names. Other code that must run where a framework
is (localization, model reduction, the study's probes) is a *worker function*: a module-level
function decorated with :func:`worker_function`, called with :meth:`Call.to`, which takes the
function itself, so no caller spells a module path and a rename cannot break a call at run time.
The worker runs only registered functions.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Worker functions by their wire name (see :func:`worker_function`).
WORKER_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def worker_function(fn: F) -> F:
    """Let workers run ``fn`` when a :class:`Call` names it (``fn`` must be module-level and take
    and return JSON-able values; arrays and models travel as files)."""
    WORKER_FUNCTIONS[wire_name(fn)] = fn
    return fn


def wire_name(fn: Callable[..., Any]) -> str:
    """How a :class:`Call` names a worker function: its module and its name."""
    return f"{fn.__module__}.{fn.__qualname__}"


def find_worker_function(name: str, module: str) -> Callable[..., Any]:
    """The worker function a :class:`Call` names, importing its module first (worker side).

    Raises:
        ValueError: it is not a fuzzconv module, or the function is not registered there.
    """
    if not module.startswith("fuzzconv."):
        raise ValueError(f"only fuzzconv's worker functions run in a worker, not {module}")
    importlib.import_module(module)
    fn = WORKER_FUNCTIONS.get(name)
    if fn is None or fn.__module__ != module:
        raise ValueError(f"{name} is not a worker function")
    return fn


# -- replies ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HelloReply:
    family: str
    pid: int
    versions: dict[str, str]


@dataclass(frozen=True)
class WarmReply:
    seconds: float


@dataclass(frozen=True)
class MemoryReply:
    """The worker's resident size now and at its peak (bytes; None without ``/proc``), and how
    often its collector ran."""

    rss: int | None
    peak_rss: int | None
    collections: int


@dataclass(frozen=True)
class BuildReply:
    """How long building the source model took, and what the builder reported (weights used,
    calibration labels, parameter count...)."""

    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepReply:
    seconds: float


@dataclass(frozen=True)
class RunReply:
    """Seconds to load the artifact and to infer every batch (the cold pass); the timed repeats
    of the first batch; with ``image_repeats``, ``image_seconds[pass][image]``; the outputs' shape
    (they are in the request's ``outputs`` file)."""

    load_seconds: float
    infer_seconds: float
    batch_seconds: list[float]
    shape: list[int]
    image_seconds: list[list[float]] | None = None


# -- requests ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello:
    """Who the worker is: its family, process and framework versions."""

    op: ClassVar[str] = "hello"
    reply: ClassVar[type] = HelloReply


@dataclass(frozen=True)
class Warm:
    """Import the family's frameworks now, so the first timed request does not pay for them."""

    op: ClassVar[str] = "warm"
    reply: ClassVar[type] = WarmReply


@dataclass(frozen=True)
class Memory:
    """The worker's memory use."""

    op: ClassVar[str] = "memory"
    reply: ClassVar[type] = MemoryReply


@dataclass(frozen=True)
class Exit:
    """Exit at once (no answer)."""

    op: ClassVar[str] = "exit"
    reply: ClassVar[type] = type(None)


@dataclass(frozen=True)
class Build:
    """Build a zoo model's source artifact at ``dst`` with the requested weights.

    Args:
        model: the model spec (:meth:`fuzzconv.zoo.ModelSpec.to_dict`).
        weights: ``calibrated``, ``imagenet`` or a weights file.
        seed: the calibration seed.
        dst: where the artifact goes.
        calibration: the calibration batch (``.npy``) for calibrated weights.
    """

    op: ClassVar[str] = "build"
    reply: ClassVar[type] = BuildReply
    model: dict[str, Any]
    weights: str
    seed: int
    dst: str
    calibration: str | None = None


@dataclass(frozen=True)
class StepRequest:
    """Apply step ``step`` with ``params`` to the artifact at ``src``, writing one at ``dst``.

    Args:
        model: the model spec as a dict (what the step's context holds).
        device: ``cpu`` or ``cuda``.
    """

    op: ClassVar[str] = "step"
    reply: ClassVar[type] = StepReply
    step: str
    params: dict[str, Any]
    src: str
    dst: str
    model: dict[str, Any]
    device: str = "cpu"


@dataclass(frozen=True)
class RunRequest:
    """Load the artifact with runtime ``runtime``, infer the ``.npy`` batch ``inputs`` in batches of
    ``batch_size`` and write the logits to ``outputs``.

    ``repeats`` > 0 adds that many timed passes over the first batch after a warm-up;
    ``image_repeats`` > 0 that many over each image of the first batch alone.
    """

    op: ClassVar[str] = "run"
    reply: ClassVar[type] = RunReply
    runtime: str
    params: dict[str, Any]
    artifact: str
    inputs: str
    outputs: str
    model: dict[str, Any]
    device: str = "cpu"
    batch_size: int = 8
    repeats: int = 0
    image_repeats: int = 0


@dataclass(frozen=True)
class Call:
    """Run a worker function (see :func:`worker_function`); its return value is the reply."""

    op: ClassVar[str] = "call"
    reply: ClassVar[type] = object
    function: str
    module: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def to(cls, fn: Callable[..., Any], **kwargs: Any) -> "Call":
        """A call of the worker function ``fn`` with ``kwargs``.

        Raises:
            ValueError: ``fn`` is not registered with :func:`worker_function`.
        """
        name = wire_name(fn)
        if WORKER_FUNCTIONS.get(name) is not fn:
            raise ValueError(f"{name} is not a worker function")
        return cls(name, fn.__module__, kwargs)


Request = Hello | Warm | Memory | Exit | Build | StepRequest | RunRequest | Call
REQUESTS: dict[str, type] = {r.op: r for r in (Hello, Warm, Memory, Exit, Build, StepRequest,
                                                RunRequest, Call)}
#: Requests before which the pool makes room: they can grow a worker by gigabytes.
HEAVY: tuple[type, ...] = (StepRequest, Build)


def encode(request: Request) -> dict[str, Any]:
    """The wire form of a request."""
    return {"op": request.op, **{f.name: getattr(request, f.name)
                                 for f in dataclasses.fields(request)}}


def decode(message: dict[str, Any]) -> Request:
    """A request from its wire form.

    Raises:
        ValueError: an unknown operation; TypeError: fields that do not fit it.
    """
    fields = dict(message)
    kind = REQUESTS.get(fields.pop("op", None))
    if kind is None:
        raise ValueError(f"unknown worker operation {message.get('op')!r}")
    return kind(**fields)


def reply_of(request: Request, result: Any) -> Any:
    """The reply a request's wire result decodes into."""
    kind = request.reply
    if kind is object or kind is type(None):
        return result
    return kind(**result)


def encode_reply(reply: Any) -> Any:
    """The wire form of a reply (a worker function's plain result passes as it is)."""
    if dataclasses.is_dataclass(reply) and not isinstance(reply, type):
        return dataclasses.asdict(reply)
    return reply
