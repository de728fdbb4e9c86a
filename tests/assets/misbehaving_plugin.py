"""Steps that misbehave on purpose: the worker tests use them to show the orchestrator survives."""

import os
import signal
import time
from pathlib import Path

from fuzzconv.plugins import step


@step("bad.segfault", src="onnx", dst="onnx", family="ort")
def segfault(ctx, src: Path, dst: Path) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


@step("bad.abort", src="onnx", dst="onnx", family="ort")
def abort(ctx, src: Path, dst: Path) -> None:
    os.abort()


@step("bad.oom", src="onnx", dst="onnx", family="ort")
def oom(ctx, src: Path, dst: Path) -> None:
    # What the kernel's OOM killer does to a process, without exhausting the test machine.
    os.kill(os.getpid(), signal.SIGKILL)


@step("bad.hang", src="onnx", dst="onnx", family="ort")
def hang(ctx, src: Path, dst: Path, seconds: float = 60.0) -> None:
    time.sleep(seconds)


@step("bad.raises", src="onnx", dst="onnx", family="ort")
def raises(ctx, src: Path, dst: Path) -> None:
    raise ValueError("converter says no")


@step("good.copy", src="onnx", dst="onnx", family="ort")
def copy(ctx, src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())
