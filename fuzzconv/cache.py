"""Content-addressed cache of artifacts and outputs under the store directory.

Artifacts are keyed by (model, weights, canonical prefix of steps, plugin file digests), outputs by
(artifact key, runtime, device, inputs). Two pipelines that share a prefix share its artifacts;
running a pipeline twice converts and infers nothing the second time. Failures are cached too (an
``error.json`` in the entry), so a step known to crash is not crashed again, except when a caller
asks for a cold run.

Entries are written into a temporary directory and renamed into place, so a killed process never
leaves a half-written entry behind. Several processes may share one cache (a hunt's Ray workers do,
see :mod:`fuzzconv.distributed`): when two of them build the same entry at once, the first to commit
wins and the later ones discard their copy, so an entry never changes under a process reading it.
Only a deliberate rebuild replaces an entry: one begun while the entry already existed, which is
what a cold re-run (``Executor.evaluate(cold=True)``) and a timing re-run do. The cache is capped;
the least recently used entries go first.

Keeping to the cap does not walk the whole cache on every commit (a generated-model hunt commits
several entries a second, and a walk of a few ten thousand files took most of its time): a commit
adds its entry's size to a running total, and the cache is walked again only when that total
passes the cap, or when the last walk is old enough that other processes sharing the cache may
have added to it (at least a minute, and at least a hundred times as long as the walk took).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_CAP_BYTES = 20 * 1024**3
#: The shortest time between two walks of the cache that no commit's total asked for.
RESCAN_SECONDS = 60.0


def tree_size(path: Path) -> int:
    """Bytes in the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cache_home() -> Path:
    """Per-user cache shared by every store (calibrated models, synthetic images):
    ``$FUZZCONV_CACHE``, or ``~/.cache/fuzzconv``."""
    env = os.environ.get("FUZZCONV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fuzzconv"


def key_of(*parts: Any) -> str:
    """A stable key for JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class Cache:
    def __init__(self, root: Path, cap_bytes: int = DEFAULT_CAP_BYTES):
        self.root = Path(root)
        self.cap_bytes = cap_bytes
        self.hits = 0
        self.misses = 0
        # Temporary directories begun while their entry existed: rebuilds that replace it.
        self._rebuilding: set[Path] = set()
        # Bytes in the cache as of the last walk, plus what this process committed since
        # (None until the first walk); when the walk was, and how long it took.
        self._total: int | None = None
        self._walked_at = 0.0
        self._walk_seconds = 0.0
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        (self.root / "outputs").mkdir(parents=True, exist_ok=True)

    # -- entries -----------------------------------------------------------------------------
    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def contains(self, kind: str, key: str) -> bool:
        """Whether a finished entry exists; unlike :meth:`lookup`, neither a hit nor a use."""
        return (self.entry(kind, key) / "meta.json").exists()

    def lookup(self, kind: str, key: str) -> Path | None:
        """The finished entry directory, or None. A hit refreshes its LRU time."""
        d = self.entry(kind, key)
        if (d / "meta.json").exists():
            self.hits += 1
            now = time.time()
            os.utime(d, (now, now))
            return d
        self.misses += 1
        return None

    def meta(self, d: Path) -> dict[str, Any]:
        return json.loads((d / "meta.json").read_text())

    def begin(self, kind: str, key: str) -> Path:
        """A fresh temporary directory to build an entry in; finish with :meth:`commit`.

        Beginning an entry that already exists (a cold or timing re-run skipped the lookup) marks
        the build as a rebuild: its commit replaces the entry.
        """
        tmp = self.root / kind / ".tmp" / f"{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        if (self.entry(kind, key) / "meta.json").exists():
            self._rebuilding.add(tmp)
        return tmp

    def commit(self, kind: str, key: str, tmp: Path, meta: dict[str, Any]) -> Path:
        """Move a finished entry into place and return where it lives.

        If another process committed the same key since :meth:`begin`, its entry stands and ``tmp``
        is discarded (same key, same content); a rebuild replaces the entry instead.
        """
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        final = self.entry(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        rebuild = tmp in self._rebuilding
        self._rebuilding.discard(tmp)
        if rebuild or (final.exists() and not (final / "meta.json").exists()):
            # A rebuild replaces the entry; a directory without meta.json is debris no lookup serves.
            self._set_aside(kind, final)
        try:
            # A directory rename fails when the target is a non-empty directory: the first wins.
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        self._grew(final)
        return final

    def _grew(self, entry: Path) -> None:
        """Count a committed entry; walk and evict only when the count says so (module docstring)."""
        stale = time.monotonic() - self._walked_at > max(RESCAN_SECONDS, 100 * self._walk_seconds)
        if self._total is None or stale:
            self.evict()
            return
        self._total += tree_size(entry)
        if self._total > self.cap_bytes:
            self.evict()

    def _set_aside(self, kind: str, final: Path) -> None:
        """Rename an entry out of the way, then delete it: readers never see it half-deleted."""
        old = self.root / kind / ".tmp" / f"{final.name}-old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, old)
        except FileNotFoundError:
            return  # already gone (evicted, or another rebuild set it aside)
        shutil.rmtree(old, ignore_errors=True)

    def discard(self, kind: str, key: str) -> None:
        shutil.rmtree(self.entry(kind, key), ignore_errors=True)

    # -- size cap ----------------------------------------------------------------------------
    def size(self) -> int:
        return tree_size(self.root)

    def evict(self) -> int:
        """Walk the cache and remove least recently used entries until it fits its cap.
        Returns bytes freed."""
        began = time.monotonic()
        entries = []
        total = 0
        for kind in ("artifacts", "outputs"):
            for d in (self.root / kind).glob("??/*"):
                try:
                    sz = tree_size(d)
                    entries.append((d.stat().st_mtime, sz, d))
                except FileNotFoundError:  # evicted or set aside by another process meanwhile
                    continue
                total += sz
        freed = 0
        for _mtime, sz, d in sorted(entries):
            if total - freed <= self.cap_bytes:
                break
            shutil.rmtree(d, ignore_errors=True)
            freed += sz
        self._total = total - freed
        self._walked_at = time.monotonic()
        self._walk_seconds = self._walked_at - began
        return freed
