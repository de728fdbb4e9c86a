"""The cache keeps to its cap without walking itself on every commit."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fuzzconv.cache import Cache


def _put(cache: Cache, key: str, nbytes: int, mtime: float) -> Path:
    tmp = cache.begin("outputs", key)
    (tmp / "out.bin").write_bytes(b"x" * nbytes)
    final = cache.commit("outputs", key, tmp, {"key": key})
    os.utime(final, (mtime, mtime))
    return final


def test_least_recently_used_entries_go_when_the_cap_is_passed(tmp_path):
    cache = Cache(tmp_path, cap_bytes=10_000)
    old = _put(cache, "a" * 24, 4_000, 1_000)
    kept = _put(cache, "b" * 24, 4_000, 2_000)
    assert old.exists() and kept.exists()
    cache.lookup("outputs", "a" * 24)  # a hit makes the oldest entry the newest
    _put(cache, "c" * 24, 4_000, 3_000)
    assert cache.contains("outputs", "a" * 24) and cache.contains("outputs", "c" * 24)
    assert not cache.contains("outputs", "b" * 24)
    assert cache.size() <= 10_000 + 3 * 1_000  # entries and their meta.json


def test_commits_under_the_cap_do_not_walk_the_cache(tmp_path, monkeypatch):
    cache = Cache(tmp_path, cap_bytes=30_000)
    walks = []
    real = Cache.evict
    monkeypatch.setattr(Cache, "evict", lambda self: walks.append(1) or real(self))
    for i in range(20):
        _put(cache, f"{i:024d}", 1_000, 1_000 + i)
    assert len(walks) == 1  # the first commit's, which learns the size
    assert all(cache.contains("outputs", f"{i:024d}") for i in range(20))
    for i in range(20, 30):  # past the cap: walked, and the oldest go
        _put(cache, f"{i:024d}", 1_000, 1_000 + i)
    assert len(walks) >= 2
    assert not cache.contains("outputs", f"{0:024d}")
    assert cache.contains("outputs", f"{29:024d}")
    assert cache.size() <= 30_000


def test_a_stale_count_is_walked_again(tmp_path, monkeypatch):
    """Another process sharing the cache may have added to it: an old count is not trusted."""
    cache = Cache(tmp_path, cap_bytes=10_000)
    _put(cache, "a" * 24, 1_000, 1_000)
    other = Cache(tmp_path, cap_bytes=10_000)  # as another process would
    _put(other, "b" * 24, 8_000, 2_000)
    later = time.monotonic() + 3_600
    monkeypatch.setattr("fuzzconv.cache.time.monotonic", lambda: later)
    _put(cache, "c" * 24, 3_000, 3_000)  # this process's count alone would stay under the cap
    assert not cache.contains("outputs", "a" * 24)
