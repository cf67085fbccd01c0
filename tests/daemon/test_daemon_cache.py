"""ModelCache: verified uploads, atomic publication, LRU eviction that spares models in use."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from rknnlink_server.cache import CacheError, ModelCache


def _store(cache: ModelCache, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    upload = cache.begin(sha, len(data))
    upload.write(data[: len(data) // 2])
    upload.write(data[len(data) // 2:])
    upload.commit()
    return sha


def test_upload_is_verified_and_published_atomically(tmp_path):
    cache = ModelCache(tmp_path, 1 << 20)
    sha = _store(cache, b"model-a" * 100)
    assert cache.has(sha) == 700 and (tmp_path / f"{sha}.rknn").read_bytes() == b"model-a" * 100
    wrong = cache.begin(hashlib.sha256(b"other").hexdigest(), 5)
    wrong.write(b"abcde")
    with pytest.raises(CacheError, match="hash to"):
        wrong.commit()
    short = cache.begin(sha.replace(sha[0], "0" if sha[0] != "0" else "1", 1), 10)
    short.write(b"abc")
    with pytest.raises(CacheError, match="after 3 of 10 bytes"):
        short.commit()
    too_long = cache.begin(hashlib.sha256(b"x").hexdigest(), 2)
    with pytest.raises(CacheError, match="more than the announced"):
        too_long.write(b"xyz")
    too_long.abort()
    assert [p.name for p in tmp_path.iterdir()] == [f"{sha}.rknn"]


def test_bad_sha_and_sizes(tmp_path):
    cache = ModelCache(tmp_path, 1000)
    with pytest.raises(CacheError, match="64 hex digits"):
        cache.begin("../../etc/passwd", 10)
    with pytest.raises(CacheError, match="--max-cache-mb"):
        cache.begin("a" * 64, 5000)
    with pytest.raises(CacheError, match="empty"):
        cache.begin("a" * 64, 0)


def test_lru_eviction_spares_models_in_use(tmp_path):
    in_use = set()
    cache = ModelCache(tmp_path, 3000, in_use=lambda: in_use)
    first = _store(cache, b"1" * 1000)
    second = _store(cache, b"2" * 1000)
    old = time.time() - 100
    os.utime(tmp_path / f"{first}.rknn", (old, old))
    os.utime(tmp_path / f"{second}.rknn", (old + 1, old + 1))
    in_use.add(first)  # oldest, but a session uses it
    third = _store(cache, b"3" * 1500)
    assert cache.has(first) and cache.has(third) and cache.has(second) is None


def test_stale_partial_uploads_are_removed_at_start(tmp_path):
    (tmp_path / ".upload-deadbeef.part").write_bytes(b"half a model")
    ModelCache(tmp_path, 1000)
    assert not list(tmp_path.glob(".upload-*"))


def test_eviction_happens_before_the_upload_writes(tmp_path):
    """Eviction used to run after the upload was written: on a full filesystem a model that fits never could."""
    cache = ModelCache(tmp_path, 3000)
    a, b = _store(cache, b"a" * 1200), _store(cache, b"b" * 1200)
    os.utime(tmp_path / f"{a}.rknn", (time.time() - 100, time.time() - 100))  # a is the least recently used
    upload = cache.begin(hashlib.sha256(b"c" * 1200).hexdigest(), 1200)
    assert not (tmp_path / f"{a}.rknn").exists() and cache.has(b) == 1200  # room made, nothing written yet
    upload.write(b"c" * 1200)
    upload.commit()
    assert cache.total_bytes() <= 3000


def test_storage_errors_name_the_cause_and_no_path(tmp_path):
    import errno

    from rknnlink_server.cache import FULL, UNAVAILABLE, storage_error

    full = storage_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.part")), "writing")
    assert full.reason == FULL and "out of space" in str(full) and str(tmp_path) not in str(full)
    ro = storage_error(OSError(errno.EROFS, "Read-only file system", str(tmp_path)), "starting the upload")
    assert ro.reason == UNAVAILABLE and "not writable" in str(ro) and str(tmp_path) not in str(ro)
