"""Timing one model's configurations in interleaved rounds through the session's workers, with the
identical-code control: the scheduling and statistics are :mod:`.rounds`, the worker side
:mod:`.timed`; this module connects them to the executor (artifacts, inputs, worker requests)."""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..executor import Evaluation, Executor
from ..pipeline import Pipeline
from ..protocol import Build, Call
from ..registry import ARTIFACT_FILE
from ..workers import WorkerFailure
from ..zoo import get_model
from .cells import Cell
from .configs import RATIO_GOAL, Config
from .rounds import (CONTROL_SUFFIX, Slot, control_verdict, paired_ratio, ratios, run_rounds,
                     summarize)
from .timed import release_timed, timed_pass


class Timer:
    """Times the configurations of one model on one device in rounds (``repeats`` of them).

    Args:
        ex: the session's executor.
        timing_corpus: the images timed (the first batch of the corpus).
        repeats: rounds; each gives every configuration one pass over the batch and one over
            each of its images alone.
        seed: the seed of the round orders (mixed with the model and device).
    """

    def __init__(self, ex: Executor, timing_corpus: Any, repeats: int, seed: int = 0):
        self.ex = ex
        self.timing_corpus = timing_corpus
        self.repeats = repeats
        self.seed = seed

    def order_seed(self, model: str, device: str) -> int:
        return self.seed ^ zlib.crc32(f"{model}@{device}".encode())

    def time_device(self, model: str, device: str, cells: Sequence[Cell], configs: Sequence[Config],
                    control: str | None,
                    on_pass: Callable[[Slot, float], None] | None = None) -> dict[str, Any]:
        """Time the ``ok`` cells of ``model`` on ``device``, plus the control pair of the baseline
        ``control``, and write each cell's timing. Returns ``{"rounds": ..., "control": ...}``
        for ``study.json``."""
        cfg_of = {c.key: c for c in configs}
        ok = [c for c in cells if c.status == "ok" and c.device == device and c.model == model]
        with tempfile.TemporaryDirectory(dir=self.ex.store_dir) as tmp:
            slots = [self._slot(c, cfg_of[c.config], Path(tmp)) for c in ok]
            by_cell = {c.config: c for c in ok}
            control_error = None
            if control is not None and control in by_cell:
                try:
                    slots.append(self._control_slot(by_cell[control], Path(tmp)))
                except WorkerFailure as exc:
                    control_error = f"the second build failed: {exc.error_class}: {exc.message[:300]}"
            elif control is not None:
                control_error = f"{control} did not run"
            seed = self.order_seed(model, device)
            done = run_rounds(slots, self.repeats, seed, self._time_pass, on_pass)
            self.release()
            for c in ok:
                self._fill(c, done, Path(tmp))
        for key, r in ratios(slots, done["samples"]).items():
            if key in by_cell:
                by_cell[key].timing["ratio"] = r
        record: dict[str, Any] = {"rounds": self.repeats, "seed": seed, "orders": done["orders"]}
        ctl: dict[str, Any] | None = None
        if control is not None:
            twin = control + CONTROL_SUFFIX
            sample = done["samples"].get(twin)
            ctl = {"config": twin, "of": control}
            if sample is not None and sample["rounds"] and control in done["samples"]:
                base = done["samples"][control]
                ctl.update(timing=summarize(sample),
                           batch=paired_ratio(sample, base, "batch"),
                           **control_verdict(paired_ratio(sample, base, "image"), RATIO_GOAL))
            else:
                ctl.update(control_verdict(None, RATIO_GOAL),
                           error=control_error or str(done["errors"].get(twin) or "not timed"))
        return {"rounds": record, "control": ctl}

    def release(self) -> None:
        """Let every worker drop the runtimes it kept loaded for the rounds."""
        for family, worker in list(getattr(self.ex.pool, "workers", {}).items()):
            if worker.alive():  # one that is not running holds nothing; do not start it
                self._call(family, Call.to(release_timed))

    # -- slots ----------------------------------------------------------------------------------
    def _slot(self, cell: Cell, cfg: Config, tmp: Path) -> Slot:
        pipeline = Pipeline.from_dict(cell.pipeline, self.ex.registry)  # type: ignore[arg-type]
        artifact = self._artifact(pipeline)
        return self._make_slot(cell.config, pipeline, artifact, tmp,
                               None if cfg.baseline == cfg.key else cfg.baseline)

    def _make_slot(self, key: str, pipeline: Pipeline, artifact: Path | None, tmp: Path,
                   baseline: str | None) -> Slot:
        spec = get_model(pipeline.model)
        rt = self.ex.registry.get(pipeline.runtime.name, "runtime")
        return Slot(key, rt.family, {
            "slot": key, "runtime": rt.name, "params": dict(pipeline.runtime.params),
            "artifact": str(artifact), "inputs": str(self.ex.inputs(spec, self.timing_corpus)),
            "model": spec.to_dict(), "device": pipeline.device, "batch_size": self.ex.batch_size,
            "outputs": str(tmp / f"{key}.npy")}, baseline)

    def _control_slot(self, cell: Cell, tmp: Path) -> Slot:
        """The baseline built a second time, into ``tmp``: the same code as the first build.

        The study's baselines are source models (no steps), so the second build is a second
        :class:`~fuzzconv.protocol.Build` of the source with the same weights and seed.
        """
        pipeline = Pipeline.from_dict(cell.pipeline, self.ex.registry)  # type: ignore[arg-type]
        spec = get_model(pipeline.model)
        if pipeline.steps:
            raise ValueError(f"the control rebuilds a source model; {cell.config} has steps")
        calibration = (self.ex.calibration_inputs(spec) if self.ex.weights == "calibrated"
                       else None)
        dst = tmp / "control" / ARTIFACT_FILE[spec.source]
        dst.parent.mkdir(parents=True, exist_ok=True)
        self.ex.pool.request(spec.family, Build(spec.to_dict(), self.ex.weights, self.ex.seed,
                                                str(dst), str(calibration) if calibration else None),
                             timeout=max(self.ex.timeouts["*"], 1800.0))
        # Calibration keeps its memory in the worker for good; the rounds start a fresh one.
        self.ex.pool.get(spec.family).close()
        return self._make_slot(cell.config + CONTROL_SUFFIX, pipeline, dst, tmp, cell.config)

    def _artifact(self, pipeline: Pipeline) -> Path | None:
        spec = get_model(pipeline.model)
        calibration = (self.ex.calibration_inputs(spec) if self.ex.weights == "calibrated"
                       else None)
        return self.ex.artifact(pipeline, len(pipeline.steps), Evaluation(pipeline, None),
                                calibration=calibration)

    # -- passes ---------------------------------------------------------------------------------
    def _time_pass(self, slot: Slot) -> dict[str, Any]:
        if slot.kwargs["artifact"] == "None":
            return {"ok": False, "error": {"symptom": "crash", "error_class": "NoArtifact",
                                           "message": "the artifact is not in the cache"}}
        try:
            res = self.ex.pool.request(slot.family, Call.to(timed_pass, **slot.kwargs),
                                       timeout=self.ex.timeout_for(slot.kwargs["runtime"]))
        except WorkerFailure as exc:
            return {"ok": False, "error": {"symptom": exc.symptom, "error_class": exc.error_class,
                                           "message": exc.message[:500]}}
        return {"ok": True, **res}

    def _fill(self, cell: Cell, done: dict[str, Any], tmp: Path) -> None:
        sample = done["samples"][cell.config]
        if cell.config in done["errors"]:
            cell.timing["error"] = done["errors"][cell.config]
        if not sample["rounds"]:
            return
        cell.timing.update(summarize(sample), batch_size=len(sample["image_seconds"][0]))
        again = tmp / f"{cell.config}.npy"
        if again.exists() and cell.logits is not None:
            y = np.load(again, allow_pickle=False)
            first = cell.logits[:len(y)].astype(np.float64)
            # 0 unless the runtime is not deterministic from one load to the next.
            cell.timing["rerun_max_abs_diff"] = (float(np.abs(y - first).max())
                                                 if y.shape == first.shape else float("nan"))

    def _call(self, family: str, call: Call) -> None:
        try:
            self.ex.pool.request(family, call, timeout=120.0)
        except WorkerFailure:
            pass  # a worker that died has let go of everything already
