"""The study's statistics on synthetic numbers: Wilson intervals, bootstrap medians and ratios paired
by round, the order of the timing rounds, the identical-code control's verdict, the time-left
estimate and the choice of configurations. No framework runs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from fuzzconv.corpora import SHIPPED_DIR
from fuzzconv.study.configs import config_keys, configurations, select_configs
from fuzzconv.study.eta import Estimate, eta_text
from fuzzconv.study.intervals import (effect, median_ci, paired_ratio_ci, pct_ci,
                                      unpaired_ratio_ci, wilson_ci)
from fuzzconv.study.rounds import (Slot, control_verdict, paired_ratio, ratios, round_orders,
                                   run_rounds, summarize)


# -- Wilson -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 8, 0.0, 0.3244), (4, 8, 0.2152, 0.7848), (1, 8, 0.0224, 0.4709),
    (0, 200, 0.0, 0.0188), (10, 100, 0.0552, 0.1744), (8, 8, 0.6756, 1.0)])
def test_wilson_matches_the_textbook_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_ci(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_is_symmetric_and_shrinks_with_more_images() -> None:
    lo, hi = wilson_ci(3, 20)
    assert wilson_ci(17, 20) == pytest.approx((1 - hi, 1 - lo))
    assert np.diff(wilson_ci(50, 1000)) < np.diff(wilson_ci(5, 100))
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_ci(9, 8)
    assert pct_ci(1, 8) == pytest.approx({"pct": 12.5, "ci_low": 2.24, "ci_high": 47.09},
                                         abs=0.01)


# -- bootstrap ----------------------------------------------------------------------------------
def test_median_ci_is_seeded_and_covers_the_median() -> None:
    x = np.random.default_rng(3).lognormal(size=200)
    a, b = median_ci(x, seed=1), median_ci(x, seed=1)
    assert a == b and a["ci_low"] <= a["median"] <= a["ci_high"] and a["samples"] == 200


def test_pairing_by_round_cancels_drift_that_rounds_share() -> None:
    rng = np.random.default_rng(0)
    drift = np.linspace(1.0, 3.0, 40) * rng.uniform(0.9, 1.1, 40)  # the machine slows threefold
    base = 0.010 * drift
    slow = 0.012 * drift * rng.uniform(0.995, 1.005, 40)
    paired = paired_ratio_ci(slow, base)
    unpaired = unpaired_ratio_ci(slow, base)
    assert paired["ratio"] == pytest.approx(1.2, rel=0.01)
    assert paired["ci_low"] > 1.15 and paired["ci_high"] < 1.25 and paired["rel_half_width"] < 0.02
    assert unpaired["half_width"] > 5 * paired["half_width"]
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0])


def test_effect_sizes_fold_below_one_and_keep_intervals_across_one_at_one() -> None:
    assert effect({"ratio": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == pytest.approx(
        {"size": 2.0, "ci_low": 1 / 0.6, "ci_high": 2.5})
    across = effect({"ratio": 1.02, "ci_low": 0.97, "ci_high": 1.08})
    assert across["ci_low"] == 1.0 and across["ci_high"] == pytest.approx(1.08)


# -- rounds -------------------------------------------------------------------------------------
def test_each_round_is_a_fresh_seeded_permutation() -> None:
    keys = [f"c{i}" for i in range(8)]
    orders = round_orders(keys, 6, seed=5)
    assert all(sorted(o) == keys for o in orders)
    assert len({tuple(o) for o in orders}) == 6  # a fresh order each round
    assert orders == round_orders(keys, 6, seed=5)
    assert round_orders(keys, 3, seed=5) == orders[:3]  # round r does not depend on the count
    assert round_orders(keys, 6, seed=6) != orders


def _slots(*keys: str, baseline: str = "a") -> list[Slot]:
    return [Slot(k, "fake", {}, None if k == baseline else baseline) for k in keys]


def test_run_rounds_interleaves_and_drops_a_slot_that_fails() -> None:
    calls: list[str] = []

    def time_pass(slot: Slot) -> dict:
        calls.append(slot.key)
        if slot.key == "c" and calls.count("c") == 2:
            return {"ok": False, "error": {"message": "crashed"}}
        return {"ok": True, "batch_seconds": 0.1, "image_seconds": [0.01, 0.02], "loaded": False,
                "load_seconds": 1.0}

    passes = []
    done = run_rounds(_slots("a", "b", "c"), 4, seed=1, time_pass=time_pass,
                      on_pass=lambda s, t: passes.append(s.key))
    flat = [k for o in done["orders"] for k in o]
    # ABC ABC ...: the calls follow the rounds' orders, without c after it failed.
    second_c = [i for i, k in enumerate(flat) if k == "c"][1]
    assert calls == [k for i, k in enumerate(flat) if k != "c" or i <= second_c]
    assert passes == calls
    assert done["samples"]["a"]["rounds"] == [0, 1, 2, 3]
    assert done["samples"]["c"]["rounds"] == [0] and done["errors"]["c"]["message"] == "crashed"
    s = summarize(done["samples"]["a"])
    assert s["image"]["samples"] == 8 and s["batch"]["median"] == pytest.approx(0.1)


def _samples(times: dict[str, list[float]]) -> dict[str, dict]:
    return {k: {"rounds": list(range(len(v))), "batch_seconds": [8 * t for t in v],
                "image_seconds": [[t] * 8 for t in v], "load_seconds": 0.0}
            for k, v in times.items()}


def test_ratios_pair_each_configuration_with_its_baseline() -> None:
    drift = np.linspace(1, 2, 30)
    samples = _samples({"a": list(0.01 * drift), "b": list(0.02 * drift)})
    r = ratios(_slots("a", "b"), samples)
    assert set(r) == {"b"} and r["b"]["to"] == "a"
    assert r["b"]["image"]["ratio"] == pytest.approx(2.0)
    assert r["b"]["image"]["ci_low"] == pytest.approx(2.0)  # drift shared by rounds cancels
    # Only the rounds both were timed in count.
    samples["b"]["rounds"] = [r + 100 for r in samples["b"]["rounds"]]
    assert paired_ratio(samples["b"], samples["a"]) is None


def test_the_control_reads_one_or_says_it_does_not() -> None:
    rng = np.random.default_rng(2)
    base = 0.01 * rng.uniform(0.98, 1.02, 30)
    same = _samples({"a": list(base), "a-rebuilt": list(base * rng.uniform(0.99, 1.01, 30))})
    ok = control_verdict(paired_ratio(same["a-rebuilt"], same["a"]), 0.05)
    assert ok["reads_one"] is True and ok["within_goal"] is True
    drifted = _samples({"a": list(base), "a-rebuilt": list(base * 1.2)})
    bad = control_verdict(paired_ratio(drifted["a-rebuilt"], drifted["a"]), 0.05)
    assert bad["reads_one"] is False and bad["within_goal"] is False
    assert control_verdict(None, 0.05)["reads_one"] is None


# -- time left ----------------------------------------------------------------------------------
def test_time_left_comes_from_measured_costs_scaled_per_model() -> None:
    est = Estimate()
    assert est.left({("m1", "label", "a"): 1}) is None
    assert eta_text(None) == "time left: measuring"
    est.record(("m1", "label", "a"), 10.0)
    est.record(("m1", "label", "b"), 20.0)
    est.record(("m1", "round", "a"), 1.0)
    est.record(("m1", "round", "a"), 3.0)  # a pass per round: the mean counts
    assert est.unit(("m1", "round", "a")) == 2.0
    assert est.left({("m1", "round", "a"): 5, ("m1", "label", "b"): 0}) == 10.0
    # A second model twice as dear on what both did: its other units are scaled too.
    est.record(("m2", "label", "a"), 20.0)
    assert est.unit(("m2", "label", "b")) == pytest.approx(40.0)
    assert est.unit(("m2", "label", "zzz")) == pytest.approx(2 * np.mean([10, 20, 20]))
    # While timing has no measured cost, the labelled runs left give a lower bound.
    assert est.describe({("m3", "label", "a"): 1, ("m3", "timing", "a"): 3}) == \
        "more than 15 s left (timing not measured yet)"
    assert est.describe({("m1", "round", "a"): 30}) == "about 60 s left"
    assert eta_text(45) == "about 45 s left" and eta_text(600) == "about 10 min left"
    assert eta_text(7200) == "about 2.0 h left"


# -- choosing configurations and images ----------------------------------------------------------
def test_chosen_configurations_bring_their_baselines() -> None:
    all_ = configurations(2, ["FoldConstant"])
    keys = [c.key for c in select_configs(all_, ["tvm-O2", "twin-onnx-ort"])]
    assert keys == ["keras", "twin-torch", "twin-onnx-ort", "tvm-O2"]
    assert select_configs(all_, None) == all_
    assert config_keys() == [c.key for c in all_]


def test_a_limit_above_the_corpus_says_how_many_images_there_are() -> None:
    from fuzzconv.study.measure import study_corpus

    log = io.StringIO()
    natural = SHIPPED_DIR / "natural"
    corpus = study_corpus(natural, 1000, Console(file=log, width=200))
    lines = log.getvalue().splitlines()
    assert len(corpus) == 18 and lines == ["--limit 1000: the corpus has 18 images; the study "
                                           "runs on all 18"]
    log2 = io.StringIO()
    assert len(study_corpus(natural, 5, Console(file=log2))) == 5 and not log2.getvalue()
