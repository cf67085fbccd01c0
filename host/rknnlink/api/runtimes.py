"""Where a model runs: in this process on the simulated NPU, or on a board through the daemon.

The toolkit facade talks to one small interface so that every call (inference, eval_perf, eval_memory,
get_sdk_version, accuracy_analysis) behaves the same with and without a board.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger("rknnlink.api")


def memory_report(weight: int, internal: int, total_dma: int) -> Dict[str, int]:
    """The toolkit's eval_memory dict: 'other' is what the runtime allocated beyond weights and internals."""
    other = max(int(total_dma) - int(weight) - int(internal), 0)
    return {"weight_memory": int(weight), "internal_memory": int(internal), "other_memory": other,
            "total_memory": int(weight) + int(internal) + other}


class ModelRuntime:
    """Common interface of a model loaded for inference; subclasses adapt one backend."""

    platform: str = ""
    is_simulator: bool = True
    location: str = "in-process"

    def run(self, inputs: Sequence[np.ndarray], formats: Sequence[str],
            pass_through: Sequence[bool]) -> List[np.ndarray]:
        raise NotImplementedError

    def perf_detail(self) -> str:
        raise NotImplementedError

    def perf_run_us(self) -> int:
        raise NotImplementedError

    def memory(self) -> Dict[str, int]:
        raise NotImplementedError

    def runtime_version(self) -> str:
        raise NotImplementedError

    def server_version(self) -> Optional[str]:
        return None

    def dumps(self) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SessionRuntime(ModelRuntime):
    """A model behind a session: the facade only ever holds one of these, and every call goes through the
    session interface that an in-process session and a board session share (rknnlink.client.Session,
    rknnlink.client.local.InProcessSession), so inference, eval_perf, eval_memory, get_sdk_version and
    accuracy_analysis behave the same with and without a board."""

    def __init__(self, session: Any, platform: str) -> None:
        self._session = session
        self.platform = platform

    @property
    def session(self) -> Any:
        """The session this runtime holds (carrier, attributes, pipeline())."""
        return self._session

    def run(self, inputs, formats, pass_through):
        return self._session.run(list(inputs), formats=list(formats), pass_through=list(pass_through))

    def perf_detail(self) -> str:
        return self._session.perf().text

    def perf_run_us(self) -> int:
        return int(self._session.perf_run_us())

    def memory(self) -> Dict[str, int]:
        mem = self._session.memory()
        return memory_report(mem["total_weight_size"], mem["total_internal_size"],
                             mem["total_dma_allocated_size"])

    def runtime_version(self) -> str:
        api, _drv = self._session.sdk_version()
        return api

    def dumps(self) -> Dict[str, np.ndarray]:
        return self._session.dumps()

    def close(self) -> None:
        self._session.close()


class LocalRuntime(SessionRuntime):
    """The model on the simulated NPU (librknnrt_sim.so) inside this process, through an InProcessSession."""

    def __init__(self, model: bytes, platform: str, perf_debug: bool, async_mode: bool, core_mask: int,
                 dump_layers: bool = False) -> None:
        from rknnlink.client.local import InProcessSession

        super().__init__(InProcessSession(model, core_mask=core_mask, perf=perf_debug, async_mode=async_mode,
                                          dump_layers=dump_layers), platform)


class BoardRuntime(SessionRuntime):
    """The model in a session of an rknnlink daemon (a board, or a local simulated board)."""

    is_simulator = False

    def __init__(self, address: str, model: Any, perf_debug: bool, eval_mem: bool, async_mode: bool,
                 core_mask: int, on_close: Optional[Callable[[], None]] = None,
                 connect_kwargs: Optional[dict] = None, dump_layers: bool = False) -> None:
        from rknnlink import progress
        from rknnlink.client import Board

        self.location = address
        self._on_close = on_close
        self._board = Board.connect(address, **(connect_kwargs or {}))
        try:
            info = self._board.info
            self.platform = info.platform
            self.is_simulator = info.backend == "sim"
            if callable(model):  # the model depends on the board's runtime (vendor .rknn or ours)
                model = model(info)
            upload, done = progress.byte_callback(f"upload to {address}", len(model))
            try:
                self._session = self._board.load_model(model, core_mask=core_mask, perf=perf_debug,
                                                       eval_mem=eval_mem, async_mode=async_mode,
                                                       dump_layers=dump_layers, progress=upload)
            finally:
                done()
        except BaseException:
            self._board.close()
            raise

    @property
    def board_info(self):
        return self._board.info

    def server_version(self) -> Optional[str]:
        return self._board.info.daemon_version

    def close(self) -> None:
        try:
            self._session.close()
        finally:
            self._board.close()
            if self._on_close is not None:
                self._on_close()
