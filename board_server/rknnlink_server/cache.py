"""On-board model cache: models stored by SHA-256, uploads written to a temporary file and renamed only
when complete and verified, least recently used models evicted beyond the size limit."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Optional

log = logging.getLogger(__name__)
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
PART_PREFIX = ".upload-"


# CacheError.reason: what kind of failure (the daemon maps it to a gRPC status).
INVALID, FULL, UNAVAILABLE = "invalid", "full", "unavailable"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CacheError(Exception):
    """An upload or lookup that cannot proceed; the message says what to change (and names no board path).

    `reason` is INVALID (the request was wrong), FULL (no room) or UNAVAILABLE (the cache cannot be written)."""

    def __init__(self, message: str, reason: str = INVALID) -> None:
        super().__init__(message)
        self.reason = reason


def storage_error(exc: OSError, doing: str) -> CacheError:
    """An OSError of the cache's filesystem as a CacheError for the client: the cause and the fix, while the
    internal path and errno text go only to the daemon's log."""
    log.warning("model cache: %s failed: %s", doing, exc)
    if exc.errno in _FULL_ERRNOS:
        return CacheError(f"the board's model cache is out of space while {doing} ({errno.errorcode.get(exc.errno)}"
                          f"): free space on the board's cache filesystem, or restart the daemon with a smaller "
                          f"--max-cache-mb so that older models are evicted first", FULL)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CacheError(f"the board's model cache is not writable while {doing} (read-only filesystem or "
                          f"permissions): fix the cache directory or restart the daemon with a writable "
                          f"--cache-dir", UNAVAILABLE)
    return CacheError(f"the board's model cache failed while {doing} ({errno.errorcode.get(exc.errno, 'error')}); "
                      f"see the daemon's log on the board", UNAVAILABLE)


def check_sha(sha: str) -> str:
    sha = (sha or "").strip().lower()
    if not _SHA_RE.match(sha):
        raise CacheError(f"model sha256 {sha[:80]!r} is not 64 hex digits; send hashlib.sha256(model).hexdigest()")
    return sha


class Upload:
    """An upload in progress: bytes go to a hidden part file while being hashed."""

    def __init__(self, cache: ModelCache, sha: str, total_size: int) -> None:
        self.cache, self.sha, self.total_size = cache, sha, total_size
        self.path = cache.root / f"{PART_PREFIX}{uuid.uuid4().hex}.part"
        try:
            self._file: Optional[BinaryIO] = open(self.path, "wb")  # noqa: SIM115 - closed in commit/abort
        except OSError as exc:
            cache.release(total_size)
            raise storage_error(exc, "starting the upload") from None
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.total_size:
            raise CacheError(f"the upload sends more than the announced {self.total_size} bytes")
        try:
            self._file.write(data)
        except OSError as exc:
            raise storage_error(exc, "writing the model") from None
        self._hash.update(data)
        self.received += len(data)

    def commit(self) -> Path:
        """Verify size and hash, then publish atomically."""
        self._close()
        if self.received != self.total_size:
            self.abort()
            raise CacheError(f"the upload ended after {self.received} of {self.total_size} bytes")
        digest = self._hash.hexdigest()
        if digest != self.sha:
            self.abort()
            raise CacheError(f"the uploaded bytes hash to {digest}, not the announced {self.sha}: the model "
                             f"was corrupted in transit or the client hashed other bytes")
        return self.cache.publish(self)

    def abort(self) -> None:
        self._close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            self.cache.release(self.total_size)
            try:
                file.close()
            except OSError as exc:  # the buffered tail could not be written
                self.received = -1  # commit() then refuses the upload
                raise storage_error(exc, "writing the model") from None


class ModelCache:
    """Models as `<sha256>.rknn` files under `root`, bounded by `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int, in_use: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._in_use = in_use
        self._lock = threading.Lock()
        self._reserved = 0  # bytes announced by uploads in progress (room made for them before they write)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f"{PART_PREFIX}*"):
            log.info("removing an interrupted upload %s", stale.name)
            stale.unlink(missing_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / f"{check_sha(sha)}.rknn"

    def has(self, sha: str) -> Optional[int]:
        """Size of the cached model, or None."""
        path = self.path(sha)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError as exc:
            log.debug("cannot touch %s: %s", path, exc)
        return size

    def begin(self, sha: str, total_size: int) -> Upload:
        sha = check_sha(sha)
        if total_size <= 0:
            raise CacheError("the upload announces an empty model (total_size 0); send the model bytes")
        if total_size > self.max_bytes:
            raise CacheError(f"the model ({total_size / 2**20:.1f} MiB) is larger than the daemon's model cache "
                             f"({self.max_bytes / 2**20:.0f} MiB); restart the daemon with a larger --max-cache-mb")
        with self._lock:
            # Room first: evict before the upload writes anything, so a model that fits the limit never
            # fails on a filesystem filled by models that would have been evicted anyway.
            self._evict(self._reserved + total_size, keep=sha)
            try:
                free = shutil.disk_usage(self.root).free
            except OSError as exc:
                raise storage_error(exc, "checking free space") from None
            if free < self._reserved + total_size:
                raise CacheError(f"the board's model cache filesystem has {free / 2**20:.1f} MiB free, the model "
                                 f"needs {total_size / 2**20:.1f} MiB: free space on the board, or restart the "
                                 f"daemon with a smaller --max-cache-mb so that older models are evicted first",
                                 FULL)
            self._reserved += total_size
        return Upload(self, sha, total_size)

    def release(self, total_size: int) -> None:
        """An upload finished writing (or failed): its announced bytes are no longer reserved."""
        with self._lock:
            self._reserved = max(0, self._reserved - total_size)

    def publish(self, upload: Upload) -> Path:
        with self._lock:
            self._evict(upload.total_size, keep=upload.sha)
            target = self.path(upload.sha)
            try:
                os.replace(upload.path, target)
            except OSError as exc:
                raise storage_error(exc, "storing the model") from None
            return target

    def models(self) -> list:
        return sorted(self.root.glob("*.rknn"), key=lambda p: p.stat().st_mtime)

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.rknn"))

    def _evict(self, incoming: int, keep: str) -> None:
        used = self.total_bytes()
        busy = set(self._in_use()) | {keep}
        for model in self.models():
            if used + incoming <= self.max_bytes:
                return
            if model.stem in busy:
                continue
            try:
                size = model.stat().st_size
                model.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot evict model %s: %s", model.stem, exc)
                continue
            used -= size
            log.info("evicted model %s (%d bytes) from the cache", model.stem, size)
        if used + incoming > self.max_bytes:
            log.warning("model cache over its limit: %d bytes of models are in use by sessions", used)
