"""Per-layer dumps on the vendor librknnrt: its own mechanism, collected into the daemon's dumps call.

librknnrt writes every layer's output as .npy when RKNN_LOG_LEVEL >= 5, into RKNN_DUMP_DIR (default
/userdata/dumps), named NNN_<Op>_<tensor>_shape_<d0>_<d1>..._<dtype>.npy, and logs "failed open dump path"
when it cannot write one (rknn-c-abi.md section 4.5). The worker does not switch dumps on for the session's
own context (they slow every run): it loads the model a second time with those variables set, pointing at a
directory of its own, repeats the session's last run there, reads what the runtime wrote, and removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.runtime import RknnError
from rknnlink.runtime.abi import RKNN_ERR_MALLOC_FAIL, RKNN_ERR_PARAM_INVALID
from rknnlink.runtime.library import output_type_of

log = logging.getLogger("rknnlink_server.worker")

ROOT_ENV = "RKNNLINK_DUMP_ROOT"
BOARD_DUMP_ROOTS = ("/userdata", "/data")   # Rockchip images keep writable user storage here
FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9]+)_(.*)_shape_((?:\d+_)*\d+)_([A-Za-z0-9]+)\.npy$")
FAILED_WRITE_RE = re.compile(r"failed (?:open|write) dump path: (\S+)")
HEADROOM = 1 << 20   # bytes besides the tensors: npy headers, the runtime's log


@dataclass(frozen=True)
class DumpFile:
    """One tensor the runtime wrote: its position in the run, producing operator and tensor name."""

    index: int
    op: str
    name: str
    dims: Tuple[int, ...]
    path: Path


def dump_root() -> Path:
    """$RKNNLINK_DUMP_ROOT, else <user storage>/rknnlink-dumps on a board, else the temporary directory."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env)
    for base in BOARD_DUMP_ROOTS:
        if os.access(base, os.W_OK):
            return Path(base) / "rknnlink-dumps"
    return Path(tempfile.gettempdir()) / "rknnlink-dumps"


def parse_name(path: Path, names: Dict[str, str]) -> Optional[DumpFile]:
    """A runtime dump file name -> DumpFile (the runtime's file-safe tensor name mapped back via `names`)."""
    match = FILE_RE.match(path.name)
    if match is None:
        return None
    index, op, name, shape, _dtype = match.groups()
    return DumpFile(index=int(index), op=op, name=names.get(name, name),
                    dims=tuple(int(d) for d in shape.split("_")), path=path)


def file_safe(name: str) -> str:
    """The runtime's file-name form of a tensor name (characters outside [A-Za-z0-9.-] become '_')."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", name)


def check_space(root: Path, need: int) -> None:
    """Refuse early, with the numbers, when the board's storage cannot hold the dumps."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        stat = os.statvfs(probe)
    except OSError as exc:
        raise RknnError(RKNN_ERR_PARAM_INVALID, None, f"cannot use {root} for dumps: {exc}; set {ROOT_ENV} "
                                                      f"for the daemon to a writable directory") from exc
    free = stat.f_bavail * stat.f_frsize
    if free < need:
        raise RknnError(RKNN_ERR_MALLOC_FAIL, None, _short_message(root, free, need))


def _short_message(root: Path, free: int, need: int) -> str:
    return (f"the board's storage is short for per-layer dumps: {free / 2**20:.2f} MiB free under {root}, the "
            f"dumps need at least {need / 2**20:.2f} MiB; free space on the board (e.g. remove old files from "
            f"{root}) or start the daemon with {ROOT_ENV} pointing at a larger disk")


@contextlib.contextmanager
def _runtime_env(directory: Path) -> Iterator[None]:
    """RKNN_LOG_LEVEL=5 and RKNN_DUMP_DIR for a context created inside this block, restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("RKNN_LOG_LEVEL", "RKNN_DUMP_DIR")}
    os.environ["RKNN_LOG_LEVEL"] = "5"
    os.environ["RKNN_DUMP_DIR"] = str(directory)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _captured_output(log_path: Path) -> Iterator[None]:
    """The runtime logs on stdout/stderr (the C library's, not Python's): keep its lines for the messages."""
    with open(log_path, "wb") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def collect(lib: Any, model_path: str, last_run: Optional[tuple], io_attrs: Sequence[Any],
            include_raw: bool) -> Tuple[Dict[str, Any], List[np.ndarray]]:
    """Repeat the last run with the runtime's dumps on; the reply and blobs of the worker's dumps op."""
    if last_run is None:
        raise RknnError(RKNN_ERR_PARAM_INVALID, None,
                        "no run happened yet in this session: run the model once, then ask for dumps")
    root = dump_root()
    need = HEADROOM + sum(int(a.n_elems) * 4 for a in io_attrs)
    check_space(root, need)
    directory = root / f"session-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log_path = root / f"{directory.name}.log"
    try:
        directory.mkdir(parents=True)
    except OSError as exc:
        raise RknnError(RKNN_ERR_MALLOC_FAIL if exc.errno == 28 else RKNN_ERR_PARAM_INVALID, None,
                        f"cannot create the dump directory {directory}: {exc.strerror}; set {ROOT_ENV} for the "
                        f"daemon to a writable directory with free space") from exc
    try:
        model = Path(model_path).read_bytes()
        with _runtime_env(directory), _captured_output(log_path):
            with lib.init(model) as ctx:
                ctx.infer(*last_run)
        runtime_log = log_path.read_text(errors="replace") if log_path.exists() else ""
        largest = max((int(a.n_elems) * 4 for a in io_attrs), default=0)
        return _read(directory, runtime_log, root, max(need, largest), {file_safe(a.name): a.name for a in io_attrs},
                     include_raw)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            log_path.unlink()


def _read(directory: Path, runtime_log: str, root: Path, need: int, names: Dict[str, str],
          include_raw: bool) -> Tuple[Dict[str, Any], List[np.ndarray]]:
    failed = FAILED_WRITE_RE.findall(runtime_log)
    files = sorted((f for f in map(lambda p: parse_name(p, names), directory.glob("*.npy")) if f is not None),
                   key=lambda f: f.index)
    infos, blobs, broken = [], [], []
    for dump in files:
        try:
            raw = np.load(dump.path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            broken.append(f"{dump.path.name} ({exc})")
            continue
        f32 = np.ascontiguousarray(raw, dtype=np.float32)
        infos.append({"layer_index": dump.index, "output_slot": 0, "name": dump.name,
                      "dtype": output_type_of(raw.dtype), "qnt_type": 0, "scale": 1.0, "zp": 0,
                      "dims": list(raw.shape), "op": dump.op})
        blobs.append(f32)
        if include_raw:
            blobs.append(np.ascontiguousarray(raw))
    if failed or broken:
        free = shutil.disk_usage(root).free if root.exists() else 0
        what = f"{len(failed) + len(broken)} dump file(s) could not be written or read"
        if free < need or "No space left" in runtime_log:
            raise RknnError(RKNN_ERR_MALLOC_FAIL, None, f"{what}: " + _short_message(root, free, need))
        raise RknnError(RKNN_ERR_PARAM_INVALID, None,
                        f"{what} ({'; '.join((failed + broken)[:3])}); the runtime's log: "
                        f"{_tail(runtime_log)}")
    if not infos:
        raise RknnError(RKNN_ERR_PARAM_INVALID, None,
                        f"the vendor runtime wrote no dump files into {directory} with RKNN_LOG_LEVEL=5 (its log: "
                        f"{_tail(runtime_log)}); this librknnrt may not support layer dumps")
    return {"dumps": infos, "raw": include_raw}, blobs


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "empty"
