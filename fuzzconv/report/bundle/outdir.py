"""The bundle directory: every path written is resolved (symlinks too) and must stay inside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ...errors import UsageError


class OutDir:
    """The bundle directory, created if need be; an existing file there is refused."""

    #: What a bundle holds; removed before writing so no file of an earlier bundle lingers.
    OWNED = ("README.md", "repro.py", "inputs.npy", "expected.npy", "actual.npy", "finding.json",
             "pipeline.json", "fuzzconv_plugins_shim.py", "input", "plugin", "model", "model.onnx",
             "test_data_set_0")

    def __init__(self, path: Path):
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise UsageError(f"bundle output {p} exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create bundle directory {p}: {exc.strerror or exc}") from None
        self.root = p.resolve()

    def path(self, rel: str) -> Path:
        target = self.root / rel
        if not target.resolve().is_relative_to(self.root):
            raise UsageError(f"refusing to write {target}: it resolves to {target.resolve()}, "
                             f"outside the bundle directory {self.root}")
        return target

    def clear(self) -> None:
        for name in self.OWNED:
            t = self.path(name)
            if t.is_dir():
                shutil.rmtree(t)
            elif t.exists():
                t.unlink()

    def write_text(self, rel: str, text: str) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def save(self, rel: str, array: np.ndarray) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.save(p, np.asarray(array), allow_pickle=False)
        return p

    def copy(self, src: Path, rel: str) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, p)
        return p
