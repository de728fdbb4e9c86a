"""The space of pipelines reachable from a model, and Hypothesis strategies over it.

:class:`Space` knows the step graph: conversion chains from the model's source format to every
format that has a runtime (up to a length limit), the optional same-format steps (TVM passes, ONNX
rewrites, plugin transforms) that can sit at each point, and the runtimes. Drawing a pipeline is
written once, against a ``choose(options)`` callable, and driven two ways:

* by Hypothesis (:func:`pipelines`, :func:`chains`, :func:`step_params`, :func:`pass_sequences`,
  and :func:`models` for generated models),
  so users can reuse the strategies in their own property tests, with Hypothesis's shrinking;
* by a seeded :class:`random.Random` in the hunt, so the same seed gives the same pipelines.

Every list of options is ordered simplest first, so Hypothesis shrinks towards short chains,
default parameters and no optional steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from hypothesis import strategies as st

from .errors import UsageError
from .gen.carriers import carries
from .gen.draw import draw_spec
from .gen.spec import MAX_LAYERS, GenSpec
from .pipeline import Pipeline, Step
from .registry import Operation, Registry, default_registry
from .zoo import get_model

T = TypeVar("T")
Choose = Callable[[Sequence[Any]], Any]


@dataclass(frozen=True)
class Atom:
    """One thing a coverage pass must try once: an operation, or one parameter value of it."""

    op: str
    param: str | None = None
    value_json: str | None = None


class Space:
    """The pipelines reachable from ``model``.

    Args:
        registry: the steps and runtimes.
        model: a zoo model name.
        device: the device every pipeline runs on. Defaults to cpu.
        max_chain: the most conversion steps in a chain. Defaults to 3.
        max_optional: the most optional steps a drawn pipeline holds. Defaults to 3.
        focus: a step or runtime every pipeline must contain. Defaults to None.

    A generated model's space leaves out what cannot carry it (:mod:`fuzzconv.gen.carriers`):
    the chains, optional steps and runtimes a limit of one of its layers names.
    """

    def __init__(self, registry: Registry, model: str, device: str = "cpu", max_chain: int = 3,
                 max_optional: int = 3, focus: str | None = None):
        self.registry = registry
        self.model = model
        self.device = device
        self.max_chain = max_chain
        self.max_optional = max_optional
        spec = get_model(model)
        self.source = spec.source
        self.generated = GenSpec.from_dict(spec.generated, model) if spec.generated else None
        self.focus = registry.get(focus) if focus else None
        self.chains = self._chains()
        if not self.chains:
            raise_focus = f" containing {focus}" if focus else ""
            raise UsageError(f"no pipeline{raise_focus} is reachable from {model} on {device}")

    def cannot_carry(self, elements: Sequence[Any]) -> str | None:
        """Why a pipeline holding these steps and runtime (names, or steps with their
        parameters) cannot carry the model (a known limitation of a generated model's layer),
        or None."""
        return carries(self.generated, elements)

    # -- the graph ---------------------------------------------------------------------------
    def _usable(self, op: Operation) -> bool:
        return self.device in op.devices and self.cannot_carry([op.name]) is None

    def conversions_from(self, fmt: str) -> list[Operation]:
        return [o for o in self.registry.steps_from(fmt) if not o.optional and self._usable(o)]

    def optionals(self, fmt: str) -> list[Operation]:
        return [o for o in self.registry.steps_from(fmt) if o.optional and self._usable(o)]

    def runtimes(self, fmt: str) -> list[Operation]:
        return [o for o in self.registry.runtimes_for(fmt) if self._usable(o)]

    def _chains(self) -> list[tuple[Operation, ...]]:
        """Conversion chains (no format visited twice) that end where a runtime exists."""
        found: list[tuple[Operation, ...]] = []

        def walk(fmt: str, chain: tuple[Operation, ...], seen: frozenset[str]) -> None:
            if self.cannot_carry([o.name for o in chain]) is not None:
                return
            if self.runtimes(fmt):
                found.append(chain)
            if len(chain) == self.max_chain:
                return
            for op in self.conversions_from(fmt):
                if op.dst not in seen:
                    walk(op.dst, chain + (op,), seen | {op.dst})  # type: ignore[arg-type]

        walk(self.source, (), frozenset({self.source}))
        found.sort(key=lambda c: (len(c), [o.name for o in c]))
        if self.focus is not None:
            found = [c for c in found if self._can_hold_focus(c)]
        return found

    def formats_of(self, chain: Sequence[Operation]) -> list[str]:
        return [self.source] + [o.dst for o in chain]  # type: ignore[misc]

    def _can_hold_focus(self, chain: Sequence[Operation]) -> bool:
        f = self.focus
        assert f is not None
        if f.kind == "runtime":
            return f.src == self.formats_of(chain)[-1]
        if f.optional:
            return f.src in self.formats_of(chain)
        return f in chain

    # -- building pipelines ------------------------------------------------------------------
    def make(self, steps: list[Step], runtime: Step) -> Pipeline:
        """A pipeline of this space (UsageError for a chain that does not fit, or that cannot
        carry the model)."""
        why = self.cannot_carry([*steps, runtime])
        if why is not None:
            raise UsageError(why)
        return Pipeline.make(self.registry, self.model, steps, runtime, self.device,
                             source_format=self.source)

    def default_step(self, op: Operation) -> Step:
        return Step.make(op.name, op.canonical_params({}))

    def bases(self) -> list[Pipeline]:
        """The all-defaults pipeline of every chain and runtime, shortest first."""
        out = []
        for chain in self.chains:
            end = self.formats_of(chain)[-1]
            for rt in self.runtimes(end):
                if self.focus is not None and self.focus.kind == "runtime" and rt != self.focus:
                    continue
                steps = [self.default_step(o) for o in chain]
                try:
                    p = self.make(steps, self.default_step(rt))
                except UsageError:
                    continue
                out.append(self.with_focus(p) if self.focus is not None else p)
        return out

    def insert_positions(self, pipeline: Pipeline, op: Operation) -> list[int]:
        """Where an optional ``op`` can go: after any step whose output is its format."""
        fmts = [self.source] + [self.registry.get(s.name).dst for s in pipeline.steps]  # type: ignore[misc]
        return [i for i, f in enumerate(fmts) if f == op.src]

    def with_focus(self, p: Pipeline) -> Pipeline:
        """``p`` with the focus step inserted (at its first possible place) when it lacks it."""
        f = self.focus
        if f is None or not f.optional or self.contains_focus(p):
            return p
        pos = self.insert_positions(p, f)
        if not pos:
            return p
        steps = list(p.steps)
        steps.insert(pos[0], self.default_step(f))
        return self.make(steps, p.runtime)

    def contains_focus(self, p: Pipeline) -> bool:
        if self.focus is None:
            return True
        return any(s.name == self.focus.name for s in (*p.steps, p.runtime))

    def atoms(self) -> list[Atom]:
        """Every operation and parameter value reachable from the model, in a stable order."""
        import json

        ops: dict[str, Operation] = {}
        for chain in self.chains:
            for i, fmt in enumerate(self.formats_of(chain)):
                for o in (*chain[i:i + 1], *self.optionals(fmt), *self.runtimes(fmt)):
                    if o.kind == "runtime" and fmt != self.formats_of(chain)[-1]:
                        continue
                    ops[o.name] = o
        out = []
        for name in sorted(ops):
            op = ops[name]
            out.append(Atom(name))
            for param in sorted(op.choices):
                for v in op.choices[param]:
                    out.append(Atom(name, param, json.dumps(v, sort_keys=True)))
        return out

    # -- drawing -----------------------------------------------------------------------------
    def draw(self, choose: Choose) -> Pipeline:
        """A pipeline, every decision taken by ``choose(options)`` (options simplest first)."""
        chain = choose(self.chains)
        fmts = self.formats_of(chain)
        steps: list[Step] = []
        n_opt = choose(list(range(self.max_optional + 1)))
        opt_slots = [i for i, f in enumerate(fmts) if self.optionals(f)]
        inserts: dict[int, list[Step]] = {}
        for _ in range(n_opt if opt_slots else 0):
            slot = choose(opt_slots)
            op = choose(self.optionals(fmts[slot]))
            inserts.setdefault(slot, []).append(self.draw_params(op, choose))
        for i in range(len(fmts)):
            steps.extend(inserts.get(i, []))
            if i < len(chain):
                steps.append(self.draw_params(chain[i], choose))
        rts = self.runtimes(fmts[-1])
        if self.focus is not None and self.focus.kind == "runtime":
            rts = [self.focus]
        elements = [*steps, self.draw_params(choose(rts), choose)]
        # a setting a limitation names (the keras runtime under XLA, say) goes back to default
        for i, el in enumerate(elements):
            if self.cannot_carry(elements) is None:
                break
            elements[i] = self.default_step(self.registry.get(el.name))
        p = self.make(elements[:-1], elements[-1])
        return self.with_focus(p)

    @staticmethod
    def draw_params(op: Operation, choose: Choose) -> Step:
        params = {k: choose(op.choices.get(k, [d])) for k, d in sorted(op.defaults.items())}
        return Step.make(op.name, op.canonical_params(params))


def seeded_chooser(rng: random.Random) -> Choose:
    return lambda options: options[rng.randrange(len(options))]


# -- Hypothesis strategies --------------------------------------------------------------------
def _space(registry: Registry | None, model: str, **kw: Any) -> Space:
    return Space(registry or default_registry(), model, **kw)


def pipelines(model: str = "tiny_keras", registry: Registry | None = None, *, device: str = "cpu",
              max_chain: int = 3, max_optional: int = 3, focus: str | None = None
              ) -> st.SearchStrategy[Pipeline]:
    """Valid pipelines for ``model``: chains, optional steps with their order, parameters,
    runtimes and runtime options. Shrinks towards shorter chains and defaults."""
    space = _space(registry, model, device=device, max_chain=max_chain,
                   max_optional=max_optional, focus=focus)

    @st.composite
    def _draw(draw: Any) -> Pipeline:
        return space.draw(lambda opts: draw(st.sampled_from(list(opts))))

    return _draw()


def chains(model: str = "tiny_keras", registry: Registry | None = None, *,
           max_chain: int = 3) -> st.SearchStrategy[tuple[str, ...]]:
    """Conversion chains (step names) from the model's source format to a runnable format."""
    space = _space(registry, model, max_chain=max_chain)
    return st.sampled_from([tuple(o.name for o in c) for c in space.chains])


def step_params(step: str, registry: Registry | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Canonical parameter dicts for one step or runtime, drawn from its declared choices."""
    op = (registry or default_registry()).get(step)
    return st.fixed_dictionaries({k: st.sampled_from(op.choices.get(k, [d]))
                                  for k, d in sorted(op.defaults.items())}).map(op.canonical_params)


def models(framework: str = "keras", max_layers: int | None = None
           ) -> st.SearchStrategy[GenSpec]:
    """Generated image classifiers (:mod:`fuzzconv.gen`) of ``framework`` (``keras`` or
    ``torch``): 16–64 px inputs, 1 to ``max_layers`` layers of the vocabulary, a classifier
    head; every drawn spec is valid. Shrinks towards one plain layer on the smallest input.
    ``GenSpec.name`` is the model's name (``fuzzconv.gen.catalog.remember`` makes it
    resolvable)."""
    @st.composite
    def _draw(draw: Any) -> GenSpec:
        return draw_spec(framework, lambda opts: draw(st.sampled_from(list(opts))),
                         max_layers or MAX_LAYERS)

    return _draw()


def pass_sequences(registry: Registry | None = None, *, max_passes: int = 4,
                   fmt: str = "relax") -> st.SearchStrategy[list[Step]]:
    """Ordered sequences of optional same-format steps (TVM passes by default)."""
    reg = registry or default_registry()
    ops = [o for o in reg.steps_from(fmt) if o.optional]
    if not ops:
        return st.just([])
    one = st.sampled_from(ops).flatmap(
        lambda o: step_params(o.name, reg).map(lambda p, o=o: Step.make(o.name, p)))
    return st.lists(one, max_size=max_passes)
