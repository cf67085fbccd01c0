"""`RKNN`: RKNN-Toolkit2 2.5.0's class, signatures and return values, on rknnlink's open stack.

A script written for the toolkit changes only its import. Differences are deliberate and only where
the toolkit fails: a model loaded with `load_rknn` runs, profiles and reports memory on the simulated NPU
without a board; errors say what was wrong and how to fix it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink import __version__
from rknnlink.api import platforms, reports
from rknnlink.api.runtimes import BoardRuntime, LocalRuntime, ModelRuntime

log = logging.getLogger("rknnlink.api")

_VALID_QUANT_DTYPES = ("w8a8",)
_VALID_ALGORITHMS = ("normal", "kl_divergence", "mmse")
_VALID_METHODS = ("channel", "layer")


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"Invalid {name} {value!r}! rknnlink supports: {', '.join(allowed)}.")
    return value


def _per_input(value: Any, count: int, name: str) -> list:
    """Toolkit arguments given once or once per input ('nhwc' or ['nhwc', 'nchw'])."""
    if value is None or isinstance(value, (str, int, bool)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries but the model has {count} inputs: give one per input.")
    return values


class RKNN:
    """Drop-in replacement for `rknn.api.RKNN` (RKNN-Toolkit2 2.5.0)."""

    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    def __init__(self, verbose: bool = False, verbose_file: Optional[str] = None) -> None:
        self._handlers: List[logging.Handler] = []
        root = logging.getLogger("rknnlink")
        if verbose:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
            self._handlers.append(handler)
        if verbose_file:
            handler = logging.FileHandler(verbose_file)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s"))
            self._handlers.append(handler)
        for handler in self._handlers:
            root.addHandler(handler)
        if self._handlers:
            root.setLevel(logging.DEBUG)
        self._config: Dict[str, Any] = {}
        self._onnx = None  # onnx.ModelProto after load_onnx
        self._prequant: Dict[str, dict] = {}  # a pre-quantised model's own tensor quantisation
        self._build = None  # rknnlink.model.builder.BuildResult
        self._model_bytes: Optional[bytes] = None
        self._model_path: Optional[Path] = None
        self._runtime: Optional[ModelRuntime] = None
        self._runtime_args: Dict[str, Any] = {}
        self._vendor = None  # rknnlink.vendor.facade.VendorPlan: the RKNN-Toolkit2 model of the same build
        self._vendor_wanted = False
        self._source_name: Optional[str] = None  # the model file's stem: hybrid quantization names files after it
        self._custom_ops: Dict[str, Any] = {}  # op_type -> the user's custom operator object
        self._dynamic_input: Optional[list] = None  # config(dynamic_input=...): shape sets
        self._onnx_source: Any = None  # what load_onnx was given, reloaded per shape set for dynamic_input
        self._onnx_load_args: Dict[str, Any] = {}

    # ------------------------------------------------------------------ configuration and model loading
    def config(self, mean_values=None, std_values=None, quantized_dtype="w8a8", quantized_algorithm="normal",
               quantized_method="channel", quantized_hybrid_level=0, target_platform=None,
               quant_img_RGB2BGR=False, float_dtype="float16", optimization_level=3, custom_string=None,  # noqa: N803
               remove_weight=False, compress_weight=False, inputs_yuv_fmt=None, single_core_mode=False,
               dynamic_input=None, model_pruning=False, op_target=None, quantize_weight=False,
               remove_reshape=False, sparse_infer=False, mini_rknn=False, enable_flash_attention=False,
               auto_hybrid_cos_thresh=0.98, auto_hybrid_euc_thresh=None, memory_plan_strategy="BestFit",
               compute_order="WidthFirst", compiler_control_file=None, **kwargs) -> int:
        """Record build options; returns 0. Options the simulator has no use for are accepted and logged.

        vendor_model=True (rknnlink): build() also compiles the model with RKNN-Toolkit2 (docs/vendor.md)."""
        self._vendor_wanted = bool(kwargs.pop("vendor_model", False))
        # rknnlink's extension (docs/quantization.md): True/False forces cross-layer equalisation on/off
        equalization = kwargs.pop("cross_layer_equalization", None)
        clipping = kwargs.pop("activation_clipping", None)
        bias_correction = kwargs.pop("bias_correction", None)
        weight_rounding = kwargs.pop("weight_rounding", None)
        _check_choice("quantized_dtype", quantized_dtype, _VALID_QUANT_DTYPES)
        _check_choice("quantized_algorithm", quantized_algorithm, _VALID_ALGORITHMS)
        _check_choice("quantized_method", quantized_method, _VALID_METHODS)
        _check_choice("float_dtype", float_dtype, ("float16",))
        if target_platform is None:
            log.warning("config: target_platform is not set; using rk3588. Set it to the board you deploy to.")
            target_platform = "rk3588"
        platform = platforms.normalize_platform(target_platform)
        if custom_string is not None and (not isinstance(custom_string, str) or len(custom_string.encode()) > 1023):
            raise ValueError("custom_string must be a str of at most 1023 bytes (RKNN_QUERY_CUSTOM_STRING holds 1024).")
        from rknnlink.api.dynamic_shapes import check_shape_sets

        self._dynamic_input = check_shape_sets(dynamic_input) if dynamic_input else None
        ignored = {k: v for k, v in dict(
            quantized_hybrid_level=quantized_hybrid_level, remove_weight=remove_weight,
            compress_weight=compress_weight, inputs_yuv_fmt=inputs_yuv_fmt, single_core_mode=single_core_mode,
            model_pruning=model_pruning, op_target=op_target, quantize_weight=quantize_weight,
            remove_reshape=remove_reshape, sparse_infer=sparse_infer, mini_rknn=mini_rknn,
            enable_flash_attention=enable_flash_attention, compiler_control_file=compiler_control_file,
            **kwargs).items() if v not in (None, False, 0)}
        if ignored:
            log.info("config: options without effect on the simulated NPU: %s", sorted(ignored))
        self._config = dict(mean_values=mean_values, std_values=std_values, quantized_dtype=quantized_dtype,
                            quantized_algorithm=quantized_algorithm, quantized_method=quantized_method,
                            target_platform=platform, quant_img_rgb2bgr=bool(quant_img_RGB2BGR),
                            float_dtype=float_dtype, optimization_level=optimization_level,
                            custom_string=custom_string, cross_layer_equalization=equalization,
                            activation_clipping=clipping, bias_correction=bias_correction,
                            weight_rounding=weight_rounding)
        return 0

    def _build_config(self):
        from rknnlink.model.builder import BuildConfig

        if not self._config:
            self.config()
        return BuildConfig(**self._config)

    def load_onnx(self, model, inputs=None, input_size_list=None, input_initial_val=None, outputs=None) -> int:
        """Load an ONNX file (or ModelProto); `inputs`/`outputs` cut the graph, `input_size_list` fixes shapes."""
        from rknnlink.model.builder import load_onnx

        if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
            raise ValueError(f"Model file {model} not exists! Check the path (relative paths start at "
                             f"{Path.cwd()}).")
        if input_initial_val is not None:
            log.info("load_onnx: input_initial_val is ignored (inputs are never folded as constants)")
        from rknnlink.model import prequant

        onnx_model = load_onnx(model, inputs=inputs, outputs=outputs, input_size_list=input_size_list)
        quant: Dict[str, dict] = {}
        if prequant.has_qdq(onnx_model):
            onnx_model, quant = prequant.strip_qdq(onnx_model)
        ret = self._set_model(onnx_model, quant)
        self._onnx_source, self._onnx_load_args = model, dict(inputs=inputs, outputs=outputs)
        if isinstance(model, (str, os.PathLike)):
            self._source_name = Path(model).stem
        return ret

    def _set_model(self, onnx_model, quant: Optional[Dict[str, dict]] = None) -> int:
        """The loaded model every loader ends with: a float ONNX graph plus a pre-quantised model's own
        quantisation (kept by build(do_quantization=False))."""
        self._onnx = onnx_model
        # dynamic_input rebuilds per shape set from the source; for the front ends it is the translated model
        self._onnx_source, self._onnx_load_args = onnx_model, {}
        if onnx_model.graph.name:  # the model's own name (Caffe net name, TFLite/TF/Darknet file stem)
            self._source_name = onnx_model.graph.name
        self._prequant = dict(quant or {})
        if self._prequant:
            log.info("the model is pre-quantised (%d tensors): build(do_quantization=False) keeps its scales and "
                     "zero points", len(self._prequant))
        self._build = None
        self._model_bytes = None
        self._vendor = None
        return 0

    def load_pytorch(self, model, input_size_list) -> int:
        """Load a TorchScript file by exporting it to ONNX with torch.onnx (needs torch installed)."""
        try:
            import torch
        except ImportError as exc:
            raise ValueError("load_pytorch needs PyTorch: `pip install torch` (CPU build is enough), or export "
                             "your model to ONNX yourself and use load_onnx.") from exc
        import io

        if not Path(model).is_file():
            raise ValueError(f"Model file {model} not exists!")
        if not input_size_list or not all(isinstance(s, (list, tuple)) for s in input_size_list):
            raise ValueError("input_size_list must be a list of input shapes, e.g. [[1, 3, 224, 224]].")
        module = torch.jit.load(str(model), map_location="cpu").eval()
        dummies = tuple(torch.zeros(*[int(d) for d in shape]) for shape in input_size_list)
        buffer = io.BytesIO()
        torch.onnx.export(module, dummies, buffer, opset_version=13, dynamo=False,
                          input_names=[f"input{i}" if i else "input" for i in range(len(dummies))])
        import onnx

        ret = self.load_onnx(onnx.load_from_string(buffer.getvalue()))
        self._source_name = Path(model).stem
        return ret

    def load_tensorflow(self, tf_pb, inputs, input_size_list, outputs, input_is_nchw=False) -> int:
        """A frozen TensorFlow GraphDef (.pb), cut at `inputs`/`outputs`, through tf2onnx (rknnlink[tensorflow])."""
        from rknnlink.model.frontends.tensorflow import convert_tensorflow

        conversion = convert_tensorflow(tf_pb, inputs, input_size_list, outputs, input_is_nchw=input_is_nchw)
        return self._set_model(conversion.model, conversion.quant)

    def load_tflite(self, model, input_is_nchw=False) -> int:
        """A .tflite model, float or quantised (its own scales are kept by build(do_quantization=False))."""
        from rknnlink.model.frontends.tflite import convert_tflite

        conversion = convert_tflite(model, input_is_nchw=input_is_nchw)
        return self._set_model(conversion.model, conversion.quant)

    def load_caffe(self, model, blobs=None, input_name=None) -> int:
        """A Caffe deploy .prototxt and its .caffemodel (blobs=None: random weights, as the toolkit)."""
        from rknnlink.model.frontends.caffe import convert_caffe

        conversion = convert_caffe(model, blobs=blobs, input_name=input_name)
        return self._set_model(conversion.model, conversion.quant)

    def load_darknet(self, model, weight) -> int:
        """A Darknet .cfg and its .weights; YOLO heads are outputs before decoding, as the toolkit."""
        from rknnlink.model.frontends.darknet import convert_darknet

        conversion = convert_darknet(model, weight)
        return self._set_model(conversion.model, conversion.quant)

    def build(self, do_quantization=True, dataset=None, rknn_batch_size=None, auto_hybrid=False,
              vendor_model=None) -> int:
        """Convert the loaded ONNX model into a simulator model (fp16, or int8 calibrated on `dataset`);
        with vendor_model=True (or config(vendor_model=True)) also into RKNN-Toolkit2's .rknn."""
        from rknnlink.model.builder import build
        from rknnlink.vendor.facade import VendorPlan

        if self._onnx is None:
            raise ValueError("No model loaded: call load_onnx() (or load_pytorch()) before build().")
        if do_quantization and not dataset:
            raise ValueError("build(do_quantization=True) needs dataset='dataset.txt' (one sample per line, "
                             "one file path per input); or pass do_quantization=False for a float16 model.")
        if auto_hybrid:
            log.warning("build: auto_hybrid is not supported; use hybrid_quantization_step1/step2.")
        from rknnlink.api import segmented

        if self._custom_ops and segmented.has_custom_nodes(self._onnx, list(self._custom_ops)):
            plan = segmented.build_plan(self._onnx, self._custom_ops, self._build_config(), bool(do_quantization),
                                        dataset, rknn_batch_size=rknn_batch_size)
            self._build = None
            self._model_bytes = segmented.pack(plan)
            return 0
        if self._dynamic_input:
            from rknnlink.api.dynamic_shapes import build_dynamic

            self._model_bytes, self._build = build_dynamic(
                self._onnx_source, self._onnx_load_args, self._build_config(), self._dynamic_input,
                bool(do_quantization), dataset)
            return 0
        fixed = None
        if self._prequant:
            from rknnlink.model.prequant import fixed_ranges

            fixed = fixed_ranges(self._prequant)
        self._build = build(self._onnx, self._build_config(), do_quantization=bool(do_quantization),
                            dataset=dataset, rknn_batch_size=rknn_batch_size, fixed_ranges=fixed)
        self._model_bytes = self._build.data
        self._vendor = VendorPlan(self._onnx, self._config, self._build, bool(do_quantization), dataset,
                                  rknn_batch_size)
        if vendor_model or (vendor_model is None and self._vendor_wanted):
            self._vendor.compile()
        return 0

    def hybrid_quantization_step1(self, dataset="dataset.txt", rknn_batch_size=None, proposal=False,
                                  proposal_dataset_size=1, custom_hybrid=None) -> int:
        from rknnlink.model.builder import hybrid_quantization_step1

        if self._onnx is None:
            raise ValueError("No model loaded: call load_onnx() before hybrid_quantization_step1().")
        if proposal:
            log.warning("hybrid_quantization_step1: proposal is not supported; name sub-graphs with "
                        "custom_hybrid, or edit custom_quantize_layers in the .quantization.cfg file.")
        from rknnlink.api import hybrid

        layers = hybrid.nodes_between(self._onnx, custom_hybrid) if custom_hybrid else []
        name = self._source_name or self._onnx.graph.name or "model"
        paths = hybrid_quantization_step1(self._onnx, self._build_config(), dataset, out_dir=Path.cwd(),
                                          name=name, rknn_batch_size=rknn_batch_size)
        if layers:
            known = json.loads(Path(paths[1]).read_text())["layers"]
            hybrid.write_float_layers(Path(paths[2]), layers, known)
        log.info("hybrid_quantization_step1: wrote %s", ", ".join(paths))
        return 0

    def hybrid_quantization_step2(self, model_input, data_input, model_quantization_cfg) -> int:
        """Build from step1's files with step1's settings (target platform, mean/std ... are stored in the
        .data file), as the toolkit does: a fresh RKNN object needs no config() call."""
        from rknnlink.model.builder import hybrid_quantization_step2

        if self._config:
            log.info("hybrid_quantization_step2: using the settings stored by step1 in %s; config() of this "
                     "object does not apply", data_input)
        self._build = hybrid_quantization_step2(model_input, data_input, model_quantization_cfg, None)
        self._model_bytes = self._build.data
        self._vendor = None  # the toolkit's hybrid flow is its own: no vendor model from these files
        return 0

    def export_rknn(self, export_path, **kwargs) -> int:
        if self._model_bytes is None:
            raise ValueError("Nothing to export: call build() (or load_rknn()) first.")
        if self._vendor is not None and self._vendor.rknn is not None:
            self._vendor.export(export_path, None if self._model_bytes == self._vendor.rknn else self._model_bytes)
            return 0
        path = Path(export_path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._model_bytes)
        return 0

    def export_encrypted_rknn_model(self, input_model, output_model=None, crypt_level=1) -> int:
        """Called by the toolkit's npu_device_test example (2.3.x; RKNN-Toolkit2 2.5.0 no longer has it).
        rknnlink models are not encrypted: logs why and returns -1, so such a script goes on."""
        log.error("export_encrypted_rknn_model: model encryption is not supported by rknnlink (its model format "
                  "is open); %s was not encrypted.", input_model)
        return -1

    def load_rknn(self, path) -> int:
        """Load a model file: ours runs anywhere; a Rockchip-compiled one needs a board with librknnrt."""
        from rknnlink.model.format import is_vendor_rknn, read_model

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"RKNN model file {path} not exists!")
        data = path.read_bytes()
        from rknnlink.api import dynamic_shapes, segmented

        self._vendor = None
        if segmented.is_bundle(data):
            segmented.unpack(data)  # validate now; init_runtime needs the custom ops registered
        elif dynamic_shapes.is_bundle(data):
            read_model(dynamic_shapes.first_model(data))
        elif is_vendor_rknn(data):
            from rknnlink.vendor.facade import VendorPlan, sim_companion

            self._vendor = VendorPlan.loaded(data)
            if sim_companion(path).is_file():  # export_rknn's simulator model of the same build
                data = sim_companion(path).read_bytes()
                read_model(data)
            else:
                log.warning("load_rknn: %s was compiled by Rockchip's RKNN-Toolkit2; it runs only on a real board "
                            "(init_runtime(target=..., device_id=...)), not on the simulated NPU.", path)
        else:
            read_model(data)  # validate now, so a bad file fails here and not at init_runtime
        self._model_bytes = data
        self._model_path = path
        self._build = None
        return 0

    # ------------------------------------------------------------------ runtime
    def _model_platform(self) -> Optional[str]:
        from rknnlink.api import segmented
        from rknnlink.model.format import is_vendor_rknn, read_model

        if self._model_bytes is None or is_vendor_rknn(self._model_bytes):
            return None
        if segmented.is_bundle(self._model_bytes):
            return segmented.unpack(self._model_bytes).target_platform
        return read_model(self._single_model()).target_platform

    def _single_model(self) -> bytes:
        """The model file, or for a dynamic_input model its first shape set."""
        from rknnlink.api import dynamic_shapes

        if dynamic_shapes.is_bundle(self._model_bytes):
            return dynamic_shapes.first_model(self._model_bytes)
        return self._model_bytes

    def init_runtime(self, target=None, device_id=None, perf_debug=False, eval_mem=False, async_mode=False,
                     core_mask=0, fallback_prior_device="cpu") -> int:
        """target=None: the simulated NPU in this process. Otherwise a board: device_id is an adb serial,
        'tcp:HOST:PORT', 'usb:SERIAL', 'sim' (a simulated board daemon started for this process), or 'farm' /
        'farm:PLACE' (a board reserved from the labgrid farm, docs/farm.md)."""
        from rknnlink.model.format import is_vendor_rknn

        if self._model_bytes is None:
            raise ValueError("No model: call build() or load_rknn() before init_runtime().")
        self._release_runtime()
        model_platform = self._model_platform()
        if target is None:
            if is_vendor_rknn(self._model_bytes):
                log.error("init_runtime: this model was compiled by Rockchip's toolkit and cannot run on the "
                          "simulated NPU; connect a board and pass target= and device_id=.")
                return -1
            platforms.check_core_mask(model_platform, core_mask)
            self._runtime = self._local_runtime(model_platform, perf_debug, async_mode, core_mask)
        else:
            target = platforms.normalize_platform(target, "target")
            if model_platform is not None and model_platform != target:
                raise ValueError(f"The model was built for {model_platform} but target is {target}: rebuild "
                                 f"with config(target_platform='{target}') or pass target='{model_platform}'.")
            platforms.check_core_mask(target, core_mask)
            self._runtime = self._connect_board(target, device_id, perf_debug, eval_mem, async_mode, core_mask)
        self._runtime_args = dict(target=target, device_id=device_id, perf_debug=perf_debug, eval_mem=eval_mem)
        log.info("init_runtime: model loaded on %s", self._runtime.location)
        return 0

    def _local_runtime(self, platform, perf_debug, async_mode, core_mask) -> ModelRuntime:
        from rknnlink.api import segmented

        def one(data: bytes) -> ModelRuntime:
            return LocalRuntime(data, platform, perf_debug=perf_debug, async_mode=async_mode, core_mask=core_mask)

        if not segmented.is_bundle(self._model_bytes):
            return one(self._model_bytes)
        plan = segmented.unpack(self._model_bytes)
        runtimes: list = []
        try:
            for step in plan.steps:
                runtimes.append(one(step.data) if step.kind == "npu" else None)
            return segmented.SegmentedRuntime(plan, runtimes, self._custom_ops)
        except BaseException:
            for runtime in runtimes:
                if runtime is not None:
                    runtime.close()
            raise

    def _connect_board(self, target: str, device_id, perf_debug, eval_mem, async_mode, core_mask,
                       dump_layers: bool = False) -> ModelRuntime:
        """A session on the board `device_id` names (or the default device, see devices.default_device).

        Transport and connection failures raise ValueError, as the toolkit's init_runtime does, with the
        reason and the fix in the message."""
        from rknnlink.api import devices

        device_id = devices.default_device(device_id)
        from rknnlink.api import segmented

        with devices.explained_failures(device_id):
            address, stop, connect_kwargs = devices.open_endpoint(device_id, target)

            def one(data: Any, on_close) -> BoardRuntime:
                return BoardRuntime(address, data, perf_debug=perf_debug, eval_mem=eval_mem,
                                    async_mode=async_mode, core_mask=core_mask, on_close=on_close,
                                    connect_kwargs=connect_kwargs, dump_layers=dump_layers)

            runtimes: list = []
            try:
                if not segmented.is_bundle(self._model_bytes):
                    from rknnlink.vendor.facade import board_model

                    def model_for(info) -> bytes:  # the vendor .rknn for a board with librknnrt, ours for a sim
                        return board_model(self._vendor, self._model_bytes, info.backend)

                    runtime = one(model_for, stop)
                else:  # one session per NPU sub-graph on the same board; custom ops run here
                    plan = segmented.unpack(self._model_bytes)
                    for step in plan.steps:
                        runtimes.append(one(step.data, None) if step.kind == "npu" else None)
                    runtime = segmented.SegmentedRuntime(plan, runtimes, self._custom_ops, on_close=stop)
            except BaseException:
                for part in runtimes:
                    if part is not None:
                        part.close()
                stop()
                raise
        if runtime.platform != target:
            runtime.close()
            raise ValueError(f"target is {target} but the connected board ({device_id}) is "
                             f"{runtime.platform}: pass target='{runtime.platform}' or connect the {target} board.")
        return runtime

    def _open_board_runtime(self, target, device_id, dump_layers: bool = False) -> ModelRuntime:
        """A board session for accuracy_analysis(target=...), independent of init_runtime's."""
        target = platforms.normalize_platform(target, "target")
        model_platform = self._model_platform()
        if model_platform is not None and model_platform != target:
            raise ValueError(f"The model was built for {model_platform} but target is {target}: rebuild "
                             f"with config(target_platform='{target}') or pass target='{model_platform}'.")
        return self._connect_board(target, device_id, False, False, False, 0, dump_layers=dump_layers)

    def _require_runtime(self, what: str) -> ModelRuntime:
        if self._runtime is None:
            raise ValueError(f"The runtime has not been initialized, please call init_runtime first! ({what})")
        return self._runtime

    def _prepare_inputs(self, inputs, data_format, inputs_pass_through) -> Tuple[list, list, list]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        arrays = [np.asarray(x) for x in inputs]
        if data_format is None:
            log.warning("inference: The 'data_format' is not set, and its default value is 'nhwc'!")
        formats = [(f or "nhwc").lower() for f in _per_input(data_format, len(arrays), "data_format")]
        for fmt in formats:
            _check_choice("data_format", fmt, ("nhwc", "nchw"))
        passes = [bool(p) for p in _per_input(inputs_pass_through or 0, len(arrays), "inputs_pass_through")]
        converted = []
        for array in arrays:
            if array.dtype == np.float64:
                array = array.astype(np.float32)
            elif array.dtype not in (np.uint8, np.int8, np.float16, np.float32):
                array = array.astype(np.float32)
            converted.append(np.ascontiguousarray(array))
        return converted, formats, passes

    def inference(self, inputs, data_format=None, inputs_pass_through=None, get_frame_id=False):
        """Run once; returns the outputs as float32 arrays (None, with an error logged, without a runtime)."""
        if self._runtime is None:
            log.error("inference: The runtime has not been initialized, please call init_runtime first!")
            return None
        arrays, formats, passes = self._prepare_inputs(inputs, data_format, inputs_pass_through)
        outputs = self._runtime.run(arrays, formats, passes)
        self._ran_once = True
        if get_frame_id:
            self._frame_id = getattr(self, "_frame_id", -1) + 1
            return outputs, self._frame_id
        return outputs

    def eval_perf(self, is_print=True, fix_freq=True, csvfile=None) -> Dict[str, Any]:
        """Per-layer (perf_debug=True) or total time of the last run; estimated on the simulated NPU.

        csvfile (rknnlink's addition): also write the per-layer table (or the total) as CSV there."""
        runtime = self._require_runtime("eval_perf")
        if not getattr(self, "_ran_once", False):
            runtime.run(*self._zero_inputs())
            self._ran_once = True
        detail = runtime.perf_detail() if self._runtime_args.get("perf_debug") else None
        total = runtime.perf_run_us()
        estimated_for = runtime.platform if runtime.is_simulator else None
        text = reports.format_perf(total, detail, reports.FrequencyInfo(), estimated_for=estimated_for)
        if is_print:
            print(text, end="")
        if csvfile is not None:
            reports.write_perf_csv(Path(csvfile), total, detail, estimated=runtime.is_simulator)
        return {"total_time_us": total, "fps": (1e6 / total) if total else 0.0, "perf_detail": detail,
                "estimated": runtime.is_simulator, "platform": runtime.platform, "text": text}

    def _zero_inputs(self) -> tuple:
        """Inputs for a profiling run when the user has not run inference yet (shapes from the model)."""
        from rknnlink.api import segmented
        from rknnlink.model.format import read_model

        if segmented.is_bundle(self._model_bytes):
            raise ValueError("eval_perf: run inference() once first (a model with custom operators is timed on "
                             "the inputs you give it)")
        model = read_model(self._single_model())
        arrays, formats = [], []
        for spec in model.inputs:
            shape = list(model.tensors[spec.tensor].shape)
            if len(shape) == 4:
                shape = [shape[0], shape[2], shape[3], shape[1]]
            arrays.append(np.zeros(shape, np.float32))
            formats.append("nhwc")
        return arrays, formats, [False] * len(arrays)

    def eval_memory(self, is_print=True) -> Dict[str, int]:
        runtime = self._require_runtime("eval_memory")
        if not self._runtime_args.get("eval_mem") and self._runtime_args.get("target") is not None:
            raise ValueError("When init runtime, parameter <eval_mem> should be set to True")
        memory = runtime.memory()
        on_board = self._vendor.rknn if self._vendor is not None and not runtime.is_simulator else None
        if is_print:
            print(reports.format_memory(memory, len(on_board or self._model_bytes or b"")), end="")
        return memory

    def get_sdk_version(self) -> str:
        runtime = self._require_runtime("get_sdk_version")
        text = reports.format_sdk_version(f"{__version__} (rknnlink)", runtime.server_version(),
                                          runtime.runtime_version())
        return text

    def list_devices(self) -> Tuple[List[str], List[str]]:
        """(adb serials, USB bulk serials), printed in the toolkit's layout; an rknnlink daemon already
        listening on loopback is printed in a section of its own (it is what init_runtime would use)."""
        from rknnlink.api.devices import loopback_daemons

        try:
            from rknnlink.transport import list_adb_serials, list_usb_serials
        except ImportError as exc:
            log.error("list_devices: transports unavailable (%s); install rknnlink[host]", exc)
            adb, usb = [], []
        else:
            adb, usb = list_adb_serials(), list_usb_serials()
        print(reports.format_device_list(adb, usb, loopback_daemons()), end="")
        return adb, usb

    def accuracy_analysis(self, inputs, output_dir="./snapshot", target=None, device_id=None) -> int:
        """Per-layer golden (fp32 ONNX) vs simulator (and, with a target, board) outputs: error_analysis.txt
        and text dumps in the toolkit's layout (npy/ beside); output_dir=None writes only error_analysis.txt and
        map_name_to_file.txt, to ./snapshot, as the toolkit does."""
        from rknnlink.api.accuracy import run_accuracy_analysis

        if self._build is None:
            if self._custom_ops and self._model_bytes is not None:
                raise ValueError("accuracy_analysis does not support models with custom operators yet: compare "
                                 "inference() outputs with your float model instead.")
            raise ValueError("accuracy_analysis needs the float model: call load_onnx() and build() first "
                             "(a model from load_rknn has no float reference).")
        return run_accuracy_analysis(self, inputs, None if output_dir is None else Path(output_dir),
                                     target=target, device_id=device_id)

    def reg_custom_op(self, custom_op) -> int:
        """Register a custom operator (the toolkit's class interface: op_type, shape_infer, compute). Nodes of
        that op_type are computed by `compute` on the host, between NPU sub-graphs (rknnlink.api.segmented)."""
        from rknnlink.api.custom_op import check_custom_op

        op_type = check_custom_op(custom_op)
        self._custom_ops[op_type] = custom_op
        log.info("reg_custom_op: %s registered (computed on the host between NPU sub-graphs)", op_type)
        return 0

    def codegen(self, output_path, inputs=None, overwrite=False) -> int:
        """Generate a C deployment example (src/main.c, CMakeLists.txt, the model, the inputs as .npy)."""
        from rknnlink.api.codegen import generate
        from rknnlink.model.format import read_model

        if self._model_bytes is None:
            raise ValueError("codegen: nothing to generate for: call build() (or load_rknn()) first.")
        model = read_model(self._single_model())
        shapes = [list(model.tensors[spec.tensor].shape) for spec in model.inputs]
        name = f"{self._source_name or 'model'}.rknn"
        generate(self._model_bytes, name, shapes, output_path, inputs=inputs, overwrite=overwrite,
                 reverse_channels=[spec.reverse_channels for spec in model.inputs])
        return 0

    def optimize_onnx(self, model, optimized_path=None, passes_enable=None, inputs_for_dump=None) -> int:
        """Save the ONNX graph as the builder prepares it for the NPU (constant folding, BatchNormalization
        folded into convolutions, Identity/Dropout removed) to optimized_path (default <model>_optimized.onnx)."""
        import onnx

        from rknnlink.model.builder import load_onnx
        from rknnlink.model.prepare import prepare

        if passes_enable is not None:
            log.info("optimize_onnx: passes_enable is ignored; rknnlink runs its whole preparation")
        if inputs_for_dump is not None:
            log.info("optimize_onnx: inputs_for_dump is ignored; use accuracy_analysis for per-tensor dumps")
        prepared = prepare(load_onnx(model), fold_batchnorm=True).model
        if optimized_path is None:
            source = Path(model) if isinstance(model, (str, os.PathLike)) else Path("model.onnx")
            optimized_path = source.with_name(f"{source.stem}_optimized.onnx")
        onnx.save(prepared, str(optimized_path))
        log.info("optimize_onnx: saved %s", optimized_path)
        return 0

    def clear_op_cache(self) -> None:
        """The toolkit clears state kept by stateful (stream) operators between runs; the simulated NPU keeps
        none between inference() calls, so there is nothing to clear."""
        log.debug("clear_op_cache: no operator state is cached between runs")

    def release(self) -> None:
        self._release_runtime()
        root = logging.getLogger("rknnlink")
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        self._handlers = []

    def _release_runtime(self) -> None:
        if self._runtime is not None:
            try:
                self._runtime.close()
            finally:
                self._runtime = None
                self._ran_once = False
