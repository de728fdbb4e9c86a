"""How long a study has left, from what its configurations have cost so far.

The work is a list of units, each ``(model, phase, config)``: ``label`` (convert and run one
configuration on the corpus, once per device) and ``round`` (one timed pass in one round). A unit not
yet done is estimated by what the same phase and configuration cost on earlier models, scaled by how
much dearer the current model has been so far on what both have done (resnet101v2 is several times
mobilenetv2), or, for a configuration never measured, by the mean of its phase. The estimate is
None until something of that phase has been measured: a guess would mislead more than a blank.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean, median
from typing import Mapping

Unit = tuple[str, str, str]  # (model, phase, config)


class Estimate:
    """Measured per-configuration costs, and the time the remaining units should take."""

    def __init__(self) -> None:
        self.costs: dict[Unit, float] = {}  # mean seconds per unit
        self.counts: dict[Unit, int] = {}

    def record(self, unit: Unit, seconds: float) -> None:
        """``unit`` took ``seconds``; a unit done more than once (a pass, each round) keeps
        its mean."""
        n = self.counts[unit] = self.counts.get(unit, 0) + 1
        self.costs[unit] = self.costs.get(unit, 0.0) + (seconds - self.costs.get(unit, 0.0)) / n

    def scale(self, model: str) -> float:
        """How much dearer ``model`` has been than the models before it, on the same units
        (the median ratio; 1 when there is nothing to compare)."""
        before: dict[tuple[str, str], list[float]] = defaultdict(list)
        for (m, phase, cfg), s in self.costs.items():
            if m != model:
                before[(phase, cfg)].append(s)
        pairs = [s / fmean(before[(phase, cfg)]) for (m, phase, cfg), s in self.costs.items()
                 if m == model and before.get((phase, cfg)) and fmean(before[(phase, cfg)]) > 0]
        return median(pairs) if pairs else 1.0

    def unit(self, unit: Unit) -> float | None:
        """Seconds ``unit`` should take, or None when nothing of its phase was measured yet."""
        if unit in self.costs:
            return self.costs[unit]
        model, phase, cfg = unit
        same = [s for (m, p, c), s in self.costs.items() if p == phase and c == cfg]
        if same:
            return fmean(same) * self.scale(model)
        phase_costs = [s for (m, p, c), s in self.costs.items() if p == phase]
        return fmean(phase_costs) * self.scale(model) if phase_costs else None

    def left(self, remaining: Mapping[Unit, int]) -> float | None:
        """Seconds the ``remaining`` units (unit -> times still to do) should take; None when
        any cannot be estimated yet."""
        total = 0.0
        for u, n in remaining.items():
            if n <= 0:
                continue
            s = self.unit(u)
            if s is None:
                return None
            total += n * s
        return total


    def describe(self, remaining: Mapping[Unit, int]) -> str:
        """The time left in words; while a phase has no measured cost yet, a lower bound from
        the units that can be estimated."""
        full = self.left(remaining)
        if full is not None:
            return eta_text(full)
        known = [n * s for u, n in remaining.items() if n > 0 and (s := self.unit(u)) is not None]
        if not known:
            return eta_text(None)
        return eta_text(sum(known)).replace("about", "more than", 1) + " (timing not measured yet)"


def eta_text(seconds: float | None) -> str:
    """``about 12 min left``, or ``time left: measuring`` before there is an estimate."""
    if seconds is None:
        return "time left: measuring"
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"
