"""One misbehaving step per framework family: it segfaults, aborts, is SIGKILLed or hangs on demand.

``faults.FAMILY(mode=...)`` runs in that family's worker with the family's framework loaded and
working (its thread pools started), then, by ``mode``:

* ``ok`` (the default): copies the artifact, side files included, so a hunt's all-defaults
  pipelines are harmless;
* ``segfault``: dereferences a null pointer (a real SIGSEGV, not a signal sent to itself);
* ``abort``: ``abort()``, as a failed C++ assertion does (SIGABRT);
* ``oom``: SIGKILL to itself, which is what the kernel's OOM killer does, without exhausting the
  machine's memory;
* ``hang``: sleeps for ever, ignoring SIGTERM and SIGINT, past the step's own 5 s timeout.

Before misbehaving it writes ``faults.FAMILY: MODE now`` to stderr, which the worker's stderr tail
must carry. The formats fit the family: keras→keras (tf), torch→torch (torch), relax→relax (tvm),
onnx→onnx (ort).
"""

import ctypes
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from fuzzconv.plugins import step

MODES = ["ok", "segfault", "abort", "oom", "hang"]
#: Each step's own timeout: a hang costs seconds, while the step itself takes milliseconds once its
#: worker is up (a fresh worker's imports are not charged to it).
TIMEOUT = 5.0


def _use_tf() -> None:
    import tensorflow as tf

    float(tf.reduce_sum(tf.matmul(tf.ones((8, 8)), tf.ones((8, 8)))))


def _use_torch() -> None:
    import torch

    float((torch.ones(8, 8) @ torch.ones(8, 8)).sum())


def _use_tvm() -> None:
    import tvm

    tvm.runtime.tensor(np.ones((8, 8), "float32"), tvm.cpu()).numpy()


def _use_ort() -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.array([-1.0, 1.0], np.float32)})


def _act(name: str, mode: str, src: Path, dst: Path) -> None:
    if mode not in MODES:
        raise ValueError(f"{name}: unknown mode {mode!r}")
    if mode == "ok":
        for f in Path(src).parent.iterdir():
            target = Path(dst).parent / f.name
            if f.is_dir():
                shutil.copytree(f, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(f, target)
        return
    print(f"{name}: {mode} now", file=sys.stderr, flush=True)
    if mode == "segfault":
        ctypes.string_at(0)
    elif mode == "abort":
        os.abort()
    elif mode == "oom":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    raise RuntimeError(f"{name}: {mode} did not happen")


@step("faults.tf", src="keras", dst="keras", family="tf", timeout=TIMEOUT,
      mode=MODES)
def tf_fault(ctx, src: Path, dst: Path, mode: str = "ok") -> None:
    """Copies a Keras model with TensorFlow loaded, or segfaults, aborts, is killed or hangs."""
    _use_tf()
    _act("faults.tf", mode, src, dst)


@step("faults.torch", src="torch", dst="torch", family="torch", timeout=TIMEOUT,
      mode=MODES)
def torch_fault(ctx, src: Path, dst: Path, mode: str = "ok") -> None:
    """Copies a torch artifact with torch loaded, or segfaults, aborts, is killed or hangs."""
    _use_torch()
    _act("faults.torch", mode, src, dst)


@step("faults.tvm", src="relax", dst="relax", family="tvm", timeout=TIMEOUT,
      mode=MODES)
def tvm_fault(ctx, src: Path, dst: Path, mode: str = "ok") -> None:
    """Copies a Relax module with TVM loaded, or segfaults, aborts, is killed or hangs."""
    _use_tvm()
    _act("faults.tvm", mode, src, dst)


@step("faults.ort", src="onnx", dst="onnx", family="ort", timeout=TIMEOUT,
      mode=MODES)
def ort_fault(ctx, src: Path, dst: Path, mode: str = "ok") -> None:
    """Copies an ONNX model with ONNX Runtime loaded, or segfaults, aborts, is killed or hangs."""
    _use_ort()
    _act("faults.ort", mode, src, dst)
