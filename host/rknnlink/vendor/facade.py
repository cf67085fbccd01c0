"""The vendor model beside the simulator model, for the toolkit facade (rknnlink.api.RKNN).

build() records a VendorPlan: the same ONNX graph, config and calibration set the simulator model came from.
The vendor .rknn is compiled from it by RKNN-Toolkit2 when the user asks (config/build option
vendor_model=True) or when init_runtime targets a board whose daemon runs the vendor librknnrt.
export_rknn(path) then writes the vendor file at `path` and the simulator model beside it as
<stem>.sim.rknn, which load_rknn(path) picks up, so one exported pair serves the board and the simulator.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

log = logging.getLogger("rknnlink.vendor")

SIM_SUFFIX = ".sim.rknn"
ONNX_IR_FOR_TOOLKIT = 10   # the toolkit environment's onnx (<= 1.18) reads IR <= 11; 10 covers opset <= 21


def sim_companion(path: Path) -> Path:
    """Where the simulator model of the vendor file `path` lives: model.rknn -> model.sim.rknn."""
    path = Path(path)
    stem = path.name[: -len(".rknn")] if path.name.endswith(".rknn") else path.name
    return path.with_name(stem + SIM_SUFFIX)


class VendorPlan:
    """The inputs of one build, kept to compile the vendor model from them (at most once)."""

    def __init__(self, onnx_model: Any = None, config: Optional[Dict[str, Any]] = None, build: Any = None,
                 do_quantization: bool = False, dataset: Optional[str] = None,
                 rknn_batch_size: Optional[int] = None, rknn: Optional[bytes] = None) -> None:
        self.onnx_model = onnx_model
        self.config = dict(config or {})
        self.build = build
        self.do_quantization = do_quantization
        self.dataset = dataset
        self.rknn_batch_size = rknn_batch_size
        self.rknn = rknn
        self.log = ""

    @classmethod
    def loaded(cls, rknn: bytes) -> VendorPlan:
        """A vendor file from load_rknn: nothing to compile, nothing to compile from."""
        return cls(rknn=rknn)

    def compile(self, toolkit: Any = None) -> bytes:
        """The vendor .rknn (compiled by RKNN-Toolkit2 on first use); ToolkitError says how to get the toolkit."""
        if self.rknn is not None:
            return self.rknn
        if self.onnx_model is None:
            raise ValueError("no model to compile for the vendor runtime: load_onnx() and build() first")
        from rknnlink.vendor.jobs import ToolkitJob, VendorToolkit, toolkit_config

        toolkit = toolkit or VendorToolkit()
        with tempfile.TemporaryDirectory(prefix="rknnlink-vendor-") as tmp:
            work = Path(tmp)
            job = ToolkitJob(model=self._write_onnx(work / "model.onnx"), config=toolkit_config(self.config),
                             do_quantization=self.do_quantization,
                             dataset=self._write_dataset(work / "calib") if self.do_quantization else None,
                             rknn_batch_size=self.rknn_batch_size)
            result = toolkit.compile(job, work / "job")
        self.rknn, self.log = result.rknn, result.log
        log.info("vendor model compiled by RKNN-Toolkit2 %s (%d bytes, %.1f s)", result.toolkit_version,
                 len(self.rknn), result.seconds)
        return self.rknn

    def _write_onnx(self, path: Path) -> Path:
        import onnx

        model = self.onnx_model
        if model.ir_version > ONNX_IR_FOR_TOOLKIT:
            model = onnx.ModelProto()
            model.CopyFrom(self.onnx_model)
            model.ir_version = ONNX_IR_FOR_TOOLKIT
        onnx.save(model, str(path))
        return path

    def _write_dataset(self, folder: Path) -> Path:
        """The calibration set as the toolkit reads it: raw NCHW .npy files listed in a dataset.txt.

        rknnlink accepts images and NHWC arrays; RKNN-Toolkit2 2.5.0 wants NCHW .npy, so every sample is
        loaded the way rknnlink's calibration loads it and saved again (mean/std are applied by the toolkit)."""
        from rknnlink.model.dataset import read_dataset

        folder.mkdir(parents=True, exist_ok=True)
        model = self.build.sim_model
        shapes = [list(model.tensors[spec.tensor].shape) for spec in model.inputs]
        lines = []
        for n, sample in enumerate(read_dataset(self.dataset, shapes, progress=False)):
            names = []
            for k, raw in enumerate(sample.raw):
                name = f"s{n:05d}_{k}.npy"
                np.save(folder / name, np.ascontiguousarray(raw, dtype=np.float32))
                names.append(name)
            lines.append(" ".join(names))
        dataset = folder / "dataset.txt"
        dataset.write_text("\n".join(lines) + "\n")
        return dataset

    def export(self, path: Path, sim_model: Optional[bytes]) -> None:
        """The vendor file at `path`, the simulator model at sim_companion(path)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.compile())
        if sim_model is not None:
            sim_companion(path).write_bytes(sim_model)
            log.info("export_rknn: vendor model %s, simulator model %s", path, sim_companion(path))


def board_model(plan: Optional[VendorPlan], sim_model: Optional[bytes], backend: str) -> bytes:
    """The model file a board needs: the vendor .rknn for the vendor runtime, ours for a simulated board."""
    from rknnlink.model.format import is_vendor_rknn

    if backend != "vendor":
        if sim_model is None or is_vendor_rknn(sim_model):
            raise ValueError("this board runs rknnlink's simulated NPU, which cannot execute a model compiled by "
                             "RKNN-Toolkit2; keep the simulator model beside it (export_rknn writes "
                             "<name>.sim.rknn) or build from ONNX")
        return sim_model
    if plan is not None:
        return plan.compile()
    if sim_model is not None and is_vendor_rknn(sim_model):
        return sim_model
    raise ValueError("this board runs Rockchip's librknnrt, which loads only models compiled by RKNN-Toolkit2: "
                     "build from ONNX with rknnlink (it compiles the vendor model through `rknnlink toolkit2 "
                     "setup`'s environment) or load_rknn a file exported by RKNN-Toolkit2")

