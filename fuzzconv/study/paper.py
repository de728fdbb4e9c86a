"""The paper's claims set beside this study's numbers, each with a verdict decided from the
intervals: ``supported``, ``contradicted`` or ``not measurable here`` (and why).

The rules, stated in ``study.md`` too:

- A label claim is about a share of images. "Sensitive" holds where some share's Wilson 95 %
  interval lies wholly above :data:`.configs.LABEL_EFFECT` % and fails where every interval lies
  wholly below it; "insensitive" the other way round. Intervals across the line decide nothing:
  too few images.
- The size of the paper's headline (57 %) holds where it lies inside the interval of the largest
  change measured.
- A time claim is about ratios. A factor changes the time where some ratio's 95 % interval lies
  wholly outside [1 / :data:`.configs.TIME_EFFECT`, :data:`.configs.TIME_EFFECT`], and does not
  where every interval lies wholly inside. Ratios are paired by round (:mod:`.rounds`); a study
  timed in blocks has none, and when the identical-code control does not read 1.00 within its
  interval the machine's drift exceeds the intervals: either way time claims are not measurable.
"""

from __future__ import annotations

from typing import Any, Iterable

from .cells import index, pct_ci
from .configs import (LABEL_EFFECT, NOT_MEASURED, OPT_TABLES, PAPER_MAX_FRAMEWORK_CHANGE,
                      TIME_EFFECT)
from .intervals import effect, unpaired_ratio_ci, wilson_ci
from .rounds import paired_ratio

SUPPORTED, CONTRADICTED, NOT_MEASURABLE = "supported", "contradicted", "not measurable here"

Share = tuple[float, float, float, str]  # (pct, low, high, where)
Ratio = dict[str, Any]  # effect() plus "where"


def _share(s: Share) -> str:
    """``12.5 % [2.2–47.1] (where)``; where nothing changed, no place is named."""
    return f"{s[0]:.1f} % [{s[1]:.1f}–{s[2]:.1f}]" + (f" ({s[3]})" if s[0] else "")


def _ratio(r: Ratio) -> str:
    return f"{r['size']:.2f}× [{r['ci_low']:.2f}–{r['ci_high']:.2f}] ({r['where']})"


def sensitive(shares: list[Share], what: str) -> tuple[str, str]:
    """Verdict and why for "labels change with ``what``" over label-change shares."""
    if not shares:
        return NOT_MEASURABLE, f"nothing measured for {what}"
    above = [s for s in shares if s[1] > LABEL_EFFECT]
    if above:
        return SUPPORTED, (f"{len(above)} of {len(shares)} intervals lie above {LABEL_EFFECT:g} %; "
                           f"largest {_share(max(above))}")
    if all(s[2] < LABEL_EFFECT for s in shares):
        return CONTRADICTED, f"every interval of {len(shares)} lies below {LABEL_EFFECT:g} %"
    wide = max(shares, key=lambda s: s[2])
    return NOT_MEASURABLE, (f"intervals reach across {LABEL_EFFECT:g} % (widest "
                            f"{_share(wide)}): too few images to tell")


def insensitive(shares: list[Share], what: str) -> tuple[str, str]:
    """Verdict and why for "labels do not change with ``what``"."""
    verdict, why = sensitive(shares, what)
    flip = {SUPPORTED: CONTRADICTED, CONTRADICTED: SUPPORTED}
    return flip.get(verdict, verdict), why


def affects_time(effects: list[Ratio], what: str) -> tuple[str, str]:
    """Verdict and why for "``what`` changes the inference time" over effect sizes."""
    if not effects:
        return NOT_MEASURABLE, f"no paired timing for {what}"
    clear = [e for e in effects if e["ci_low"] > TIME_EFFECT]
    if clear:
        top = max(clear, key=lambda e: e["size"])
        return SUPPORTED, (f"{len(clear)} of {len(effects)} ratios lie outside ±"
                           f"{100 * (TIME_EFFECT - 1):.0f} %; largest {_ratio(top)}")
    if all(e["ci_high"] < TIME_EFFECT for e in effects):
        return CONTRADICTED, (f"all {len(effects)} ratios lie within ±"
                              f"{100 * (TIME_EFFECT - 1):.0f} %")
    return NOT_MEASURABLE, f"ratio intervals reach across ±{100 * (TIME_EFFECT - 1):.0f} %"


def _claim(claim: str, paper: str, here: str, verdict_why: tuple[str, str],
           **more: Any) -> dict[str, Any]:
    return {"claim": claim, "paper": paper, "here": here, "verdict": verdict_why[0],
            "why": verdict_why[1], **more}


def compare_with_paper(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims beside this study's numbers, each with a verdict (see the module)."""
    idx = index(study)
    models = study["settings"]["models"]
    configs = {c["key"]: c for c in study["configurations"]}
    claims = []

    # Labels and the framework: in kind, then the size of the headline.
    fw = [k for k, c in configs.items() if c["experiment"] == "framework" and k != c["baseline"]]
    measured = [((*v, f"{m}, {k}"), k) for m in models for k in fw
                if (v := pct_ci(idx.get((m, k, "cpu")))) is not None]
    shares = [s for s, _ in measured]
    fp32 = [s for s, k in measured if not configs[k]["reduced_precision"]]
    here = (f"largest change {_share(max(shares))}" if shares else "no conversion produced outputs")
    if fp32:
        here += f"; fp32 conversions at most {_share(max(fp32))}"
    failed = sum(1 for m in models for k in fw
                 if (idx.get((m, k, "cpu")) or {}).get("status") == "failed")
    here += f"; {sum(1 for s in shares if s[0] > 0)} of {len(shares)} changed at least one label"
    here += f", {failed} failed to convert or run"
    cross = [(m, v) for m in models if (v := pct_ci(idx.get((m, "twin-torch", "cpu")), "vs_keras"))]
    if study["settings"]["weights"] == "imagenet" and cross:
        here += ("; Keras model vs its PyTorch twin (both ImageNet weights): "
                 + ", ".join(f"{m} {_share((*v, ''))}" for m, v in cross))
    claims.append(_claim("Top-1 labels are sensitive to the framework and conversion",
                         f"up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} % of labels changed", here,
                         sensitive(shares, "the framework")))
    if not shares:
        size = (NOT_MEASURABLE, "no conversion produced outputs")
    else:
        top = max(shares)
        inside = top[1] <= PAPER_MAX_FRAMEWORK_CHANGE <= top[2]
        size = ((SUPPORTED, f"{PAPER_MAX_FRAMEWORK_CHANGE:.0f} % lies inside the largest change's "
                 "interval") if inside else
                (CONTRADICTED, f"the largest change's interval [{top[1]:.1f}–{top[2]:.1f}] "
                 f"{'lies below' if top[2] < PAPER_MAX_FRAMEWORK_CHANGE else 'lies above'} "
                 f"{PAPER_MAX_FRAMEWORK_CHANGE:.0f} %"))
        if study["settings"]["weights"] != "imagenet":
            size = (size[0], size[1] + "; with calibrated weights, not the paper's ImageNet ones")
    claims.append(_claim(f"The framework changes up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} % of labels",
                         f"{PAPER_MAX_FRAMEWORK_CHANGE:.0f} % at most",
                         f"largest change {_share(max(shares))}" if shares else NOT_MEASURED,
                         size))

    # Labels and optimization settings: the largest change between two settings of one optimizer.
    n = study["settings"]["corpus"]["images"]
    spread = []
    for m in models:
        for title, info in study.get("opt_spread", {}).get(m, {}).get("cpu", {}).items():
            p = info.get("max_pairwise_label_change_pct")
            if p is None:
                continue
            k, imgs = info.get("label_changes"), info.get("images")
            if k is None:  # written before the counts were kept
                imgs = n
                k = round(p * n / 100)
            lo, hi = info.get("label_change_ci95") or [100 * x for x in wilson_ci(k, imgs)]
            spread.append((p, lo, hi, f"{m}, {' vs '.join(info['pair'] or [title])}"))
    claims.append(_claim("Top-1 labels are insensitive to compiler optimization levels",
                         "no label changes across TVM opt levels",
                         f"largest change between two settings of one optimizer {_share(max(spread))}"
                         if spread else NOT_MEASURED,
                         insensitive(spread, "optimization settings")))

    # Labels and devices.
    dev = [(*v, f"{m}, {k}, CPU→{d}") for (m, k, d), c in idx.items() if d != "cpu"
           and (v := pct_ci(c, "vs_cpu")) is not None]
    no_gpu = any(s == NOT_MEASURED for s in study["settings"]["devices"].values())
    claims.append(_claim("Top-1 labels are insensitive to the device",
                         "no label changes between CPU and GPU",
                         f"largest change {_share(max(dev))}" if dev else NOT_MEASURED,
                         insensitive(dev, "devices") if dev else
                         (NOT_MEASURABLE, "no GPU on this machine" if no_gpu
                          else "no configuration ran on a second device")))
    claims += _time_claims(study, idx, models, configs)
    return claims


def _time_claims(study: dict[str, Any], idx: dict, models: list[str],
                 configs: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's two time claims: every factor changes the time, the device most."""
    factors = {"framework": list(_framework_effects(idx, models, configs)),
               "optimization": list(_optimization_effects(idx, models, configs)),
               "device": list(_device_effects(idx, models, configs))}
    controls = [(m, d, c) for m, by in (study.get("timing_control") or {}).items()
                for d, c in by.items() if c]
    off = [(m, d, c) for m, d, c in controls if c.get("reads_one") is False]
    parts = [f"{f}: " + (f"largest {_ratio(max(e, key=lambda x: x['size']))}" if e else NOT_MEASURED)
             for f, e in factors.items()]
    if controls:
        parts.append("control: " + "; ".join(
            f"{m}@{d} {c['ratio']['ratio']:.3f} [{c['ratio']['ci_low']:.3f}–"
            f"{c['ratio']['ci_high']:.3f}]" if c.get("ratio") else f"{m}@{d} not timed"
            for m, d, c in controls))
    here = "; ".join(parts)
    rounds = bool(study.get("timing_rounds"))
    blocked = (None if rounds and not off else
               "timed in blocks, not interleaved rounds: no paired ratios" if not rounds else
               "the identical-code control does not read 1.00 within its interval ("
               + ", ".join(f"{m}@{d}" for m, d, _ in off) + "): the machine's drift exceeds "
               "the intervals")
    verdicts = {f: affects_time(e, f) for f, e in factors.items()}
    if blocked:
        every = (NOT_MEASURABLE, blocked)
    elif any(v == CONTRADICTED for v, _ in verdicts.values()):
        every = (CONTRADICTED, "; ".join(f"{f}: {w}" for f, (v, w) in verdicts.items()
                                         if v == CONTRADICTED))
    elif all(v == SUPPORTED for v, _ in verdicts.values()):
        every = (SUPPORTED, "; ".join(f"{f}: {w}" for f, (v, w) in verdicts.items()))
    else:
        every = (NOT_MEASURABLE, "; ".join(f"{f}: {w}" for f, (v, w) in verdicts.items()
                                           if v != SUPPORTED))
    out = [_claim("Inference time is sensitive to every parameter",
                  "time changed with framework, opt level and device (one sample per image)",
                  here, every, factors={f: v[0] for f, v in verdicts.items()})]
    dev = max(factors["device"], key=lambda e: e["size"], default=None)
    rest = [e for f, es in factors.items() if f != "device" for e in es]
    other = max(rest, key=lambda e: e["size"], default=None)
    if blocked:
        most = (NOT_MEASURABLE, blocked)
    elif dev is None:
        most = (NOT_MEASURABLE, "no GPU on this machine" if any(
            s == NOT_MEASURED for s in study["settings"]["devices"].values())
            else "no configuration was timed on a second device")
    elif other is None:
        most = (NOT_MEASURABLE, "no other factor was timed")
    elif dev["ci_low"] > other["ci_high"]:
        most = (SUPPORTED, f"the device's largest effect {_ratio(dev)} lies above every other "
                f"factor's (largest {_ratio(other)})")
    elif other["ci_low"] > dev["ci_high"]:
        most = (CONTRADICTED, f"{_ratio(other)} lies above the device's largest {_ratio(dev)}")
    else:
        most = (NOT_MEASURABLE, f"the intervals of the device's largest effect {_ratio(dev)} and "
                f"the others' {_ratio(other)} overlap")
    out.append(_claim("The device changes inference time most",
                      "hardware had the largest effect on time",
                      f"device {_ratio(dev) if dev else NOT_MEASURED}; others "
                      f"{_ratio(other) if other else NOT_MEASURED}", most))
    return out


def _timed(cell: dict[str, Any] | None) -> bool:
    return bool(cell) and cell["status"] == "ok" and bool(cell["timing"].get("rounds"))


def _framework_effects(idx: dict, models: list[str], configs: dict[str, Any]) -> Iterable[Ratio]:
    """Each conversion's ratio to its source, paired by round (CPU)."""
    for m in models:
        for k, c in configs.items():
            cell = idx.get((m, k, "cpu"))
            if c["experiment"] == "framework" and _timed(cell) and \
                    (r := (cell["timing"].get("ratio") or {}).get("image")):
                yield {**effect(r), "where": f"{m}, {k} vs {c['baseline']}"}


def _optimization_effects(idx: dict, models: list[str],
                          configs: dict[str, Any]) -> Iterable[Ratio]:
    """Within each optimizer's table and side, every setting against every other, paired."""
    for m in models:
        for cols in OPT_TABLES.values():
            for side in ("keras", "twin"):
                cells = [idx[(m, k, "cpu")] for k, _ in cols if k in configs
                         and configs[k]["side"] == side and _timed(idx.get((m, k, "cpu")))]
                for i, a in enumerate(cells):
                    for b in cells[i + 1:]:
                        r = paired_ratio(a["timing"], b["timing"])
                        if r:
                            yield {**effect(r), "where": f"{m}, {a['config']} vs {b['config']}"}


def _device_effects(idx: dict, models: list[str], configs: dict[str, Any]) -> Iterable[Ratio]:
    """Each configuration on a second device against itself on the CPU (not the same rounds, so
    unpaired)."""
    for (m, k, d), cell in idx.items():
        cpu = idx.get((m, k, "cpu"))
        if d != "cpu" and m in models and _timed(cell) and _timed(cpu):
            r = unpaired_ratio_ci([t for row in cell["timing"]["image_seconds"] for t in row],
                                  [t for row in cpu["timing"]["image_seconds"] for t in row])
            yield {**effect(r), "where": f"{m}, {k}, {d} vs cpu"}


__all__ = ["compare_with_paper", "sensitive", "insensitive", "affects_time", "SUPPORTED",
           "CONTRADICTED", "NOT_MEASURABLE"]
