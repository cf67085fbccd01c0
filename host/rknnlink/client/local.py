"""Sessions without a board: a local simulated board - a real `rknnlink serve` subprocess on 127.0.0.1 (the
facade's device_id='sim', tests, benches), which the host starts as a process and talks to like to any
board (nothing of the daemon package is imported here: its location is looked up, not loaded) - and
InProcessSession, the model on the simulated NPU in this process behind the same interface as a board's
Session (run, pipeline, perf, memory, sdk_version, dumps, close)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.client.data import OrderedResults

log = logging.getLogger(__name__)


@dataclass
class LocalDaemon:
    """A daemon subprocess; `address` is HOST:PORT. stop() terminates it (also on garbage collection)."""

    address: str
    process: subprocess.Popen
    workdir: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)

    @property
    def operator_token(self) -> str:
        """The daemon's operator token (GetStats of every client's sessions)."""
        return (Path(self.workdir.name) / "operator-token").read_text().strip() if self.workdir else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def __enter__(self) -> LocalDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_env() -> dict:
    """This environment plus PYTHONPATH entries for the rknnlink and rknnlink_server packages (found, not
    imported), so a `python -m rknnlink.cli serve` child finds both from a source tree too."""
    roots = []
    for name in ("rknnlink", "rknnlink_server"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            roots.append(str(Path(spec.origin).resolve().parent.parent))
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + ([old] if old else [])))
    return env


def start_local_daemon(platform: str = "rk3588", backend: str = "sim", cache_dir: Optional[Path] = None,
                       extra_args: Sequence[str] = (), timeout: float = 30.0,
                       log_path: Optional[Path] = None,
                       preexec_fn: Optional[Callable[[], None]] = None) -> LocalDaemon:
    """Run `python -m rknnlink serve --listen 127.0.0.1:0` and wait until it reports its port."""
    workdir = tempfile.TemporaryDirectory(prefix="rknnlink-daemon-")
    port_file = Path(workdir.name) / "port"
    cache = cache_dir or Path(workdir.name) / "cache"
    cmd = [sys.executable, "-m", "rknnlink.cli", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
           "--backend", backend, "--platform", platform, "--cache-dir", str(cache),
           "--operator-token-file", str(Path(workdir.name) / "operator-token"), *extra_args]
    log_file = open(log_path or Path(workdir.name) / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                               env=child_env(), preexec_fn=preexec_fn)
    log_file.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            address = port_file.read_text().strip()
            if address:
                return LocalDaemon(address=address, process=process, workdir=workdir)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    daemon_log = (Path(log_path) if log_path else Path(workdir.name) / "daemon.log").read_text(errors="replace")
    LocalDaemon("", process, workdir).stop()
    raise RuntimeError(f"the local rknnlink daemon did not start within {timeout:g} s "
                       f"(exit status {process.poll()}); its log:\n{daemon_log[-4000:]}")


class InProcessSession:
    """A model on the simulated NPU inside this process, with the interface of rknnlink.client.Session: code
    written against a session runs unchanged with or without a board. `carrier` is "in-process"."""

    carrier = "in-process"
    is_simulator = True

    def __init__(self, model: bytes, core_mask: int = 0, perf: bool = False, async_mode: bool = False,
                 dump_layers: bool = False, library: Optional[str] = None) -> None:
        from rknnlink.runtime import RuntimeLibrary
        from rknnlink.runtime.abi import RKNN_FLAG_ASYNC_MASK, RKNN_FLAG_COLLECT_PERF_MASK

        flags = (RKNN_FLAG_COLLECT_PERF_MASK if perf else 0) | (RKNN_FLAG_ASYNC_MASK if async_mode else 0)
        self._ctx = RuntimeLibrary.load(path=library, backend="sim").init(bytes(model), flags=flags)
        if core_mask:
            self._ctx.set_core_mask(core_mask)
        if dump_layers:
            self._ctx.set_dump(True)
        self.id = "in-process"
        self.input_attrs = list(self._ctx.input_attrs)
        self.output_attrs = list(self._ctx.output_attrs)
        self.custom_string = self._ctx.custom_string()
        self._last: Optional[Tuple[list, Any, Any]] = None
        self._dumping = dump_layers
        self.closed = False

    def run(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
            pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> List[np.ndarray]:
        """One inference (RknnError for a runtime error, as RemoteRknnError is one on a board)."""
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        outputs = self._ctx.infer(arrays, formats, pass_through, want_float=want_float)
        self._last = (arrays, formats, pass_through)
        return outputs

    def pipeline(self, depth: int = 4) -> InProcessPipeline:
        return InProcessPipeline(self, depth)

    def perf(self) -> Any:
        from rknnlink.client.board import PerfReport
        from rknnlink.runtime.perf import parse_perf_detail

        text = self._ctx.perf_detail()
        rows, total = parse_perf_detail(text)
        return PerfReport(text=text, rows=rows, total_us=total)

    def perf_run_us(self) -> int:
        return int(self._ctx.perf_run_us())

    def memory(self) -> Dict[str, int]:
        return {k: int(v) for k, v in self._ctx.mem_size().items()}

    def sdk_version(self) -> Tuple[str, str]:
        return self._ctx.sdk_version()

    def dump_tensors(self, include_raw: bool = False) -> List[Tuple[Dict[str, Any], np.ndarray, Optional[np.ndarray]]]:
        """Per-layer outputs of the last run, as Session.dump_tensors (dumps off: the last run is repeated)."""
        from rknnlink.runtime import RknnError

        if not self._dumping:
            if self._last is None:
                raise RknnError(-5, None, "no run happened yet in this session: run the model once, then ask "
                                          "for dumps")
            self._ctx.set_dump(True)
            self._dumping = True
            self._ctx.infer(*self._last)
        out = []
        for info, f32, raw in self._ctx.dumps():
            entry = {"name": info.name, "layer_index": -1 if info.layer_index is None else info.layer_index,
                     "output_slot": info.output_slot, "dtype": info.dtype, "qnt_type": info.qnt_type,
                     "scale": info.scale, "zp": info.zp, "dims": tuple(info.dims)}
            out.append((entry, f32, raw if include_raw else None))
        return out

    def dumps(self) -> Dict[str, np.ndarray]:
        return {info["name"]: f32 for info, f32, _raw in self.dump_tensors()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ctx.close()

    def __enter__(self) -> InProcessSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessPipeline(OrderedResults):
    """Session.pipeline() in process: each request runs when submitted (there is no link to overlap);
    results and runtime errors come back from get() in submission order, as over a carrier."""

    def __init__(self, session: InProcessSession, depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.session, self.depth = session, depth
        self._ready: Deque[List[np.ndarray]] = deque()
        self._done: Deque[Any] = deque()  # results (or the exception) of submitted requests, oldest first
        self._next_id = 0
        self.closed = False

    carrier_kind = "in-process"

    @property
    def _inflight(self) -> int:
        return len(self._done)

    def submit(self, inputs: Any, formats: Optional[Sequence[Optional[str]]] = None,
               pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> int:
        from rknnlink.client.errors import BoardError

        if self.closed:
            raise BoardError("the pipeline is closed; open a new one with session.pipeline()")
        self._make_room()
        try:
            self._done.append(self.session.run(inputs, formats, pass_through, want_float))
        except Exception as exc:  # noqa: BLE001 - raised by the get() of this request, as over a carrier
            self._done.append(exc)
        self._next_id += 1
        return self._next_id

    def _receive(self) -> List[np.ndarray]:
        result = self._done.popleft()
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        self.closed = True
        self._done.clear()


__all__ = ["InProcessPipeline", "InProcessSession", "LocalDaemon", "child_env", "start_local_daemon"]
