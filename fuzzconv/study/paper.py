"""The paper's four claims set beside this study's numbers, each with a computed verdict."""

from __future__ import annotations

from typing import Any

from .cells import index, pct
from .configs import NOT_MEASURED, OPT_TABLES, PAPER_MAX_FRAMEWORK_CHANGE, TIME_EFFECT
from .probes import same_pass_levels

def _where(found: tuple) -> str:
    """``12.5 % (model, config)``, or just ``0.0 %`` when nothing changed anywhere."""
    pct, model, what = found[:3]
    return f"{pct:.1f} % ({model}, {what})" if pct else "0.0 %"


def _disjoint(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def _time_effect(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Slowest against fastest per-image median among ``cells``, and whether their CIs separate."""
    timed = [c for c in cells if c and c["status"] == "ok" and "image" in c["timing"]]
    if len(timed) < 2:
        return None
    fast = min(timed, key=lambda c: c["timing"]["image"]["median"])
    slow = max(timed, key=lambda c: c["timing"]["image"]["median"])
    ratio = slow["timing"]["image"]["median"] / fast["timing"]["image"]["median"]
    return {"fastest": fast["config"], "slowest": slow["config"], "ratio": ratio,
            "separated": _disjoint(fast["timing"]["image"], slow["timing"]["image"]),
            "significant": ratio >= TIME_EFFECT and _disjoint(fast["timing"]["image"],
                                                              slow["timing"]["image"])}


def compare_with_paper(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's four claims set beside this study's numbers, each with a computed verdict.

    Rules (stated in ``study.md`` too): a label claim holds where the relevant top-1 changes are
    all zero; a timing claim holds for a factor where, for some model, the slowest and fastest
    configurations' medians differ by at least :data:`TIME_EFFECT` and their 95 % CIs are disjoint.
    """
    idx = index(study)
    models = study["settings"]["models"]
    devices = [d for d, s in study["settings"]["devices"].items() if s == "measured"]
    configs = {c["key"]: c for c in study["configurations"]}
    claims = []

    # 1. labels and the framework
    fw = [k for k, c in configs.items() if c["experiment"] == "framework" and k != c["baseline"]]
    vals = [(p, m, k) for m in models for k in fw
            if (p := pct(idx.get((m, k, "cpu")))) is not None]
    fp32 = [v for v in vals if not configs[v[2]]["reduced_precision"]]
    failed = sum(1 for m in models for k in fw
                 if idx.get((m, k, "cpu"), {}).get("status") == "failed")
    if not vals:
        verdict, here = NOT_MEASURED, "no conversion produced outputs"
    else:
        top, top32 = max(vals), max(fp32) if fp32 else None
        here = (f"largest change {_where(top)}; "
                + (f"fp32 conversions at most {_where(top32)}" if top32 else "no fp32 conversion ran")
                + f"; {sum(1 for v in vals if v[0] > 0)} of {len(vals)} conversions changed "
                  f"at least one label; {failed} failed to convert or run")
        if top[0] == 0:
            verdict = "disagrees: no conversion changed a top-1 label"
        elif top32 is None or top32[0] == 0:
            verdict = (f"partly agrees: only reduced-precision conversions changed labels "
                       f"(up to {top[0]:.1f} %, paper up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} %); "
                       "every fp32 conversion kept every label")
        else:
            verdict = (f"agrees in kind: fp32 conversions changed labels, up to {top32[0]:.1f} % "
                       f"(paper up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} %)")
    cross = [(p, m) for m in models if (p := pct(idx.get((m, "twin-torch", "cpu")), "vs_keras")) is not None]
    if study["settings"]["weights"] == "imagenet" and cross:
        here += ("; Keras model vs its PyTorch twin (each with ImageNet weights): "
                 + ", ".join(f"{m} {p:.1f} %" for p, m in cross))
    else:
        here += ("; Keras model vs its PyTorch twin: not comparable (calibrated weights differ "
                 "between twins by construction)")
    claims.append({"claim": "Top-1 labels are sensitive to the framework and conversion",
                   "paper": f"up to {PAPER_MAX_FRAMEWORK_CHANGE:.0f} % of labels changed",
                   "here": here, "verdict": verdict})

    # 2. labels and optimization levels
    spread = study.get("opt_spread", {})
    rows = []
    for m in models:
        for title, info in spread.get(m, {}).get("cpu", {}).items():
            if info["max_pairwise_label_change_pct"] is not None:
                rows.append((info["max_pairwise_label_change_pct"], m, title, info["pair"]))
    if not rows:
        verdict, here = NOT_MEASURED, "fewer than two optimization settings ran"
    else:
        worst = max(rows, key=lambda r: r[0])
        vs_src = [(p, m, k) for m in models for cols in OPT_TABLES.values() for k, _ in cols
                  if not configs[k]["baseline"] == k
                  and (p := pct(idx.get((m, k, "cpu")))) is not None]
        here = (f"largest change between two settings of one optimizer "
                f"{_where((worst[0], worst[1], ' vs '.join(worst[3])))}")
        if vs_src:
            here += f"; largest change against the source {_where(max(vs_src))}"
        verdict = ("agrees: no optimization setting changed a label relative to another"
                   if worst[0] == 0 else
                   f"disagrees: optimization settings changed up to {worst[0]:.1f} % of labels")
    claims.append({"claim": "Top-1 labels are insensitive to compiler optimization levels",
                   "paper": "no label changes across TVM opt levels", "here": here,
                   "verdict": verdict})

    # 3. labels and devices
    dev = [(p, m, k, d) for (m, k, d), c in idx.items() if d != "cpu"
           and (p := pct(c, "vs_cpu")) is not None]
    if not dev:
        why = ("no GPU on this machine" if any(s == NOT_MEASURED for s in
                                                study["settings"]["devices"].values())
               else "no configuration ran on a second device")
        claims.append({"claim": "Top-1 labels are insensitive to the device",
                       "paper": "no label changes between CPU and GPU",
                       "here": f"{NOT_MEASURED} ({why})", "verdict": NOT_MEASURED})
    else:
        top = max(dev)
        claims.append({"claim": "Top-1 labels are insensitive to the device",
                       "paper": "no label changes between CPU and GPU",
                       "here": f"largest CPU→{top[3]} change {_where(top[:3])} "
                               f"over {len(dev)} configurations",
                       "verdict": "agrees" if top[0] == 0 else
                       f"disagrees: the device changed up to {top[0]:.1f} % of labels"})

    # 4. time and everything
    factors: dict[str, list[dict[str, Any]]] = {"framework": [], "optimization": [], "device": []}
    for m in models:
        for side in ("keras", "twin"):
            eff = _time_effect([idx.get((m, k, "cpu")) for k, c in configs.items()
                                if c["side"] == side and c["experiment"] == "framework"])
            if eff:
                factors["framework"].append({"model": m, "side": side, **eff})
        for title, cols in OPT_TABLES.items():
            for side in ("keras", "twin"):
                group = [idx.get((m, k, "cpu")) for k, _ in cols if configs[k]["side"] == side]
                eff = _time_effect(group)
                if eff:
                    factors["optimization"].append({"model": m, "table": title, **eff})
        for k in configs:
            for d in devices:
                if d != "cpu":
                    eff = _time_effect([idx.get((m, k, "cpu")), idx.get((m, k, d))])
                    if eff:
                        factors["device"].append({"model": m, "config": k, **eff})
    parts, verdicts = [], []
    for factor, effs in factors.items():
        if not effs:
            parts.append(f"{factor}: {NOT_MEASURED}")
            continue
        sig = [e for e in effs if e["significant"]]
        top = max(effs, key=lambda e: e["ratio"])
        parts.append(f"{factor}: {len(sig)} of {len(effs)} comparisons significant, largest "
                     f"{top['ratio']:.2f}× ({top['model']}, {top['slowest']} vs {top['fastest']})")
        verdicts.append((factor, bool(sig)))
    if not verdicts:
        verdict = NOT_MEASURED
    elif all(v for _, v in verdicts):
        verdict = "agrees for " + ", ".join(f for f, _ in verdicts)
    else:
        verdict = ("agrees for " + (", ".join(f for f, v in verdicts if v) or "none") +
                   "; disagrees for " + ", ".join(f for f, v in verdicts if not v))
    if not factors["device"]:
        verdict += f"; device {NOT_MEASURED}"
    # A control for the test above: opt levels that run the very same passes compile the same
    # program, so a "significant" time difference between them measures the machine, not TVM.
    same = [g for g in same_pass_levels(study["tvm_disable_plan"]) if len(g) > 1]
    control = []
    for group in same:
        for m in models:
            eff = _time_effect([idx.get((m, f"tvm-O{k}", "cpu")) for k in group])
            if eff:
                control.append({"model": m, "levels": group, **eff})
    if control:
        top = max(control, key=lambda e: e["ratio"])
        parts.append(f"control: TVM opt levels {', '.join(f'O{k}' for k in top['levels'])} run the "
                     f"same passes, yet {top['slowest']} vs {top['fastest']} differ "
                     f"{top['ratio']:.2f}× ({top['model']}, CIs "
                     f"{'disjoint' if top['separated'] else 'overlapping'})")
        if any(e["significant"] for e in control):
            verdict += ("; but the control (same passes, different opt level) is significant too, "
                        "so this machine's timing noise exceeds the CIs and the timing verdicts are "
                        "not reliable here")
    claims.append({"claim": "Inference time is sensitive to everything",
                   "paper": "time changed with framework, opt level and device (one sample per image)",
                   "here": "; ".join(parts), "verdict": verdict, "factors": factors,
                   "control": control})
    return claims
