"""Steps that use memory the way large converters do; the worker memory tests use them."""

import json
import time
import weakref
from pathlib import Path

from fuzzconv.plugins import step

# What a framework keeps after a step (allocator pools, caches): held until the process ends.
_held: list[bytearray] = []


def _touched(mb: int) -> bytearray:
    # Filled, not just allocated: untouched pages are not resident.
    return bytearray(b"\x01") * (mb << 20)


@step("mem.hold", src="onnx", dst="onnx", family="ort")
def hold(ctx, src: Path, dst: Path, mb: int = 10, fail: bool = False) -> None:
    _held.append(_touched(mb))
    if fail:
        raise MemoryError("converter gave up after allocating")
    dst.write_bytes(src.read_bytes())


class _Node:
    """One object of a garbage cycle; its finalizer counts it when the collector frees it."""


@step("mem.cycles", src="onnx", dst="onnx", family="ort")
def cycles(ctx, src: Path, dst: Path, rounds: int = 8, mb: int = 48, patience: float = 3.0) -> None:
    """Leave ``rounds`` garbage reference cycles that each own ``mb`` MB: few objects, many bytes,
    which is what deep-copying a graph with its weights leaves behind. Writes how many of them
    were freed before the step ended, as JSON, to ``dst``.

    After each new cycle the step waits (at most ``patience`` seconds) until every cycle but the
    two newest has been freed, so how much piles up depends on whether anything collects them
    more than on how promptly a loaded machine schedules the collector's thread. Cycles made
    while a collection finishes count in the size the collector measures after it, so up to
    three may be alive when it starts counting again, and two more before it collects."""
    freed: list[int] = []
    for i in range(rounds):
        node = _Node()
        node.data = _touched(mb)
        node.self = node
        weakref.finalize(node, freed.append, i)
        del node
        deadline = time.monotonic() + patience
        while len(freed) < i - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    dst.write_text(json.dumps({"freed": len(freed)}))


@step("mem.hold_tf", src="onnx", dst="onnx", family="tf")
def hold_tf(ctx, src: Path, dst: Path, mb: int = 10) -> None:
    """:func:`hold` in a second family's worker (which imports nothing of TensorFlow for it)."""
    hold(ctx, src, dst, mb)


# Chunks between Python's small-object allocator and glibc's mmap threshold come from the C heap.
_kept: list[bytes] = []


@step("mem.fragment", src="onnx", dst="onnx", family="ort")
def fragment(ctx, src: Path, dst: Path, mb: int = 200) -> None:
    """Fill the C heap with 2 KB chunks and free all but the last: the heap's top stays in use,
    so glibc gives nothing back by itself."""
    chunks = [bytes([i % 251]) * 2048 for i in range((mb << 20) // 2048)]
    _kept.append(chunks[-1])
    del chunks
    dst.write_bytes(src.read_bytes())
