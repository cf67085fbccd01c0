"""Load librknnrt (the vendor library on a board, our simulated NPU elsewhere) and drive it through ctypes.

Only numpy and the standard library are used, so this module runs on a board's Python 3.9.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rknnlink.runtime import abi
from rknnlink.runtime.errors import RknnError, error_from_call

log = logging.getLogger(__name__)

SIM_LIB_ENV = "RKNNLINK_SIM_LIB"
VENDOR_LIB_ENV = "LIBRKNNRT_PATH"
# Where Rockchip's images put the runtime: Linux aarch64/armhf, Linux lib64, Android 64-bit, RV1103/RV1106.
VENDOR_LIB_PATHS = (
    "/usr/lib/librknnrt.so",
    "/usr/lib64/librknnrt.so",
    "/vendor/lib64/librknnrt.so",
    "/oem/usr/lib/librknnmrt.so",
)

_NP_FROM_RKNN = {
    abi.RKNN_TENSOR_FLOAT32: np.dtype(np.float32),
    abi.RKNN_TENSOR_FLOAT16: np.dtype(np.float16),
    abi.RKNN_TENSOR_INT8: np.dtype(np.int8),
    abi.RKNN_TENSOR_UINT8: np.dtype(np.uint8),
    abi.RKNN_TENSOR_INT16: np.dtype(np.int16),
    abi.RKNN_TENSOR_UINT16: np.dtype(np.uint16),
    abi.RKNN_TENSOR_INT32: np.dtype(np.int32),
    abi.RKNN_TENSOR_UINT32: np.dtype(np.uint32),
    abi.RKNN_TENSOR_INT64: np.dtype(np.int64),
    abi.RKNN_TENSOR_BOOL: np.dtype(np.bool_),
}
# Input dtypes the runtime converts itself (rknn_input.type).
_RKNN_FROM_NP = {
    np.dtype(np.float32): abi.RKNN_TENSOR_FLOAT32,
    np.dtype(np.float16): abi.RKNN_TENSOR_FLOAT16,
    np.dtype(np.int8): abi.RKNN_TENSOR_INT8,
    np.dtype(np.uint8): abi.RKNN_TENSOR_UINT8,
}
_FORMATS = {"nchw": abi.RKNN_TENSOR_NCHW, "nhwc": abi.RKNN_TENSOR_NHWC}


def numpy_dtype(rknn_type: int) -> np.dtype:
    """numpy dtype holding one element of an rknn_tensor_type (raw bytes for INT4/BF16)."""
    return _NP_FROM_RKNN.get(int(rknn_type), np.dtype(np.uint8))


def rknn_type_of(dtype: Any) -> int:
    """rknn_tensor_type for an input numpy dtype, or RknnError naming the supported ones."""
    dt = np.dtype(dtype)
    if dt not in _RKNN_FROM_NP:
        raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                        f"input dtype {dt} is not supported; convert the array to uint8, int8, float16 or "
                        f"float32 (e.g. arr.astype(np.float32))")
    return _RKNN_FROM_NP[dt]


def as_input_array(value: Any) -> np.ndarray:
    """An input as the runtime takes it: float64 as float32, and integer/boolean values (indices, masks)
    as exact float32 (exact up to 2**24); uint8, int8, float16 and float32 as they are."""
    arr = np.asarray(value)
    if arr.dtype == np.float64 or (arr.dtype.kind in "iub" and arr.dtype not in (np.uint8, np.int8)):
        arr = arr.astype(np.float32)
    return arr


def output_type_of(dtype: Any) -> int:
    """rknn_tensor_type of an output array's numpy dtype (FLOAT32 for anything unknown)."""
    dt = np.dtype(dtype)
    for rknn_type, candidate in _NP_FROM_RKNN.items():
        if candidate == dt:
            return rknn_type
    return abi.RKNN_TENSOR_FLOAT32


def packaged_sim_path() -> Path:
    """The simulator library that `pip install -e .` builds next to the package."""
    return Path(__file__).resolve().parent.parent / "_native" / "librknnrt_sim.so"


def _c_str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class TensorAttr:
    """One input or output as the runtime describes it (rknn_tensor_attr in Python terms)."""

    index: int
    name: str
    dims: Tuple[int, ...]
    fmt: str            # "NCHW", "NHWC", "NC1HWC2", "UNDEFINED"
    dtype: np.dtype     # numpy dtype of one element
    rknn_type: int      # rknn_tensor_type value
    qnt_type: int
    zp: int
    scale: float
    n_elems: int
    size: int
    fl: int = 0
    w_stride: int = 0
    size_with_stride: int = 0
    h_stride: int = 0
    pass_through: bool = False

    @property
    def type_name(self) -> str:
        return abi.TYPE_NAMES.get(self.rknn_type, str(self.rknn_type))

    @property
    def fmt_code(self) -> int:
        return {v: k for k, v in abi.FORMAT_NAMES.items()}.get(self.fmt, abi.RKNN_TENSOR_UNDEFINED)

    @classmethod
    def from_struct(cls, s: abi.RknnTensorAttr) -> TensorAttr:
        n_dims = min(int(s.n_dims), abi.RKNN_MAX_DIMS)
        dims = tuple(int(d) for d in s.dims[:n_dims])
        return cls(index=int(s.index), name=_c_str(bytes(s.name)), dims=dims,
                   fmt=abi.FORMAT_NAMES.get(int(s.fmt), str(s.fmt)), dtype=numpy_dtype(s.type),
                   rknn_type=int(s.type), qnt_type=int(s.qnt_type), zp=int(s.zp), scale=float(s.scale),
                   n_elems=int(s.n_elems), size=int(s.size), fl=int(s.fl), w_stride=int(s.w_stride),
                   size_with_stride=int(s.size_with_stride), h_stride=int(s.h_stride),
                   pass_through=bool(s.pass_through))


@dataclass(frozen=True)
class LayerInfo:
    """One executed layer of the simulator (rknnlink_layer_info)."""

    index: int
    name: str
    op_type: str
    onnx_type: str
    dtype: int
    dims: Tuple[int, ...]
    macs: int
    bytes_rw: int
    est_time_us: float
    measured_time_us: float
    n_outputs: int
    cost_class: str = ""  # the cost model's unit: dense, depthwise, eltwise, move, free
    act_elems: int = 0  # elements charged at the activation-function rate


@dataclass(frozen=True)
class DumpInfo:
    """One dumped tensor of the simulator (rknnlink_dump_info); layer_index is None for graph inputs."""

    layer_index: Optional[int]
    output_slot: int
    name: str
    dtype: int
    qnt_type: int
    scale: float
    zp: int
    dims: Tuple[int, ...]
    n_elems: int


_CTX = abi.rknn_context
_CORE_FUNCTIONS = {
    "rknn_init": (ctypes.c_int, [ctypes.POINTER(_CTX), ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                 ctypes.POINTER(abi.RknnInitExtend)]),
    "rknn_destroy": (ctypes.c_int, [_CTX]),
    "rknn_query": (ctypes.c_int, [_CTX, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]),
    "rknn_inputs_set": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnInput)]),
    "rknn_run": (ctypes.c_int, [_CTX, ctypes.POINTER(abi.RknnRunExtend)]),
    "rknn_outputs_get": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnOutput),
                                        ctypes.POINTER(abi.RknnOutputExtend)]),
    "rknn_outputs_release": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnOutput)]),
}
_OPTIONAL_FUNCTIONS = {
    "rknn_dup_context": (ctypes.c_int, [ctypes.POINTER(_CTX), ctypes.POINTER(_CTX)]),
    "rknn_set_core_mask": (ctypes.c_int, [_CTX, ctypes.c_int]),
    "rknn_set_batch_core_num": (ctypes.c_int, [_CTX, ctypes.c_int]),
    "rknn_set_input_shapes": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnTensorAttr)]),
    "rknnlink_sim_version": (ctypes.c_int, []),
    "rknnlink_sim_layer_count": (ctypes.c_int, [_CTX, ctypes.POINTER(ctypes.c_uint32)]),
    "rknnlink_sim_layer_info": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnlinkLayerInfo),
                                               ctypes.c_uint32]),
    "rknnlink_sim_set_dump": (ctypes.c_int, [_CTX, ctypes.c_int]),
    "rknnlink_sim_dump_count": (ctypes.c_int, [_CTX, ctypes.POINTER(ctypes.c_uint32)]),
    "rknnlink_sim_dump_info": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.POINTER(abi.RknnlinkDumpInfo),
                                              ctypes.c_uint32]),
    "rknnlink_sim_dump_read": (ctypes.c_int, [_CTX, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32,
                                              ctypes.c_void_p, ctypes.c_uint32]),
    "rknnlink_sim_last_error": (ctypes.c_char_p, [_CTX]),
    "rknnlink_sim_init_error": (ctypes.c_char_p, []),
    "rknnlink_sim_platform_count": (ctypes.c_int, [ctypes.POINTER(ctypes.c_uint32)]),
    "rknnlink_sim_platform_info": (ctypes.c_int, [ctypes.c_uint32, ctypes.POINTER(abi.RknnlinkPlatformInfo),
                                                  ctypes.c_uint32]),
}


class RuntimeLibrary:
    """A loaded librknnrt-compatible shared library. Create contexts with `init(model_bytes)`."""

    def __init__(self, cdll: ctypes.CDLL, path: str, backend: str) -> None:
        self._cdll = cdll
        self.path = path
        self.backend = backend  # "vendor" or "sim"
        self._fn: Dict[str, Any] = {}
        for name, (restype, argtypes) in _CORE_FUNCTIONS.items():
            fn = getattr(cdll, name, None)
            if fn is None:
                raise OSError(f"{path} does not export {name}; it is not a librknnrt library")
            fn.restype, fn.argtypes = restype, argtypes
            self._fn[name] = fn
        for name, (restype, argtypes) in _OPTIONAL_FUNCTIONS.items():
            fn = getattr(cdll, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = restype, argtypes
                self._fn[name] = fn

    # -- loading
    @classmethod
    def load(cls, path: Optional[str] = None, backend: str = "auto") -> RuntimeLibrary:
        """Load the runtime.

        path: an explicit library file (backend then only labels it; the simulator is recognised by its
        extension symbols). backend: 'sim' -> $RKNNLINK_SIM_LIB, else the packaged librknnrt_sim.so;
        'vendor' -> $LIBRKNNRT_PATH, then /usr/lib/librknnrt.so, /usr/lib64/librknnrt.so,
        /vendor/lib64/librknnrt.so, /oem/usr/lib/librknnmrt.so; 'auto' -> vendor if found, else sim.
        """
        if backend not in ("auto", "vendor", "sim"):
            raise ValueError(f"backend must be 'auto', 'vendor' or 'sim', not {backend!r}")
        if path is not None:
            return cls._open(str(path), backend)
        if backend in ("vendor", "auto"):
            vendor = cls.find_vendor()
            if vendor is not None:
                log.info("using the vendor NPU runtime %s", vendor)
                return cls._open(vendor, "vendor")
            if backend == "vendor":
                raise FileNotFoundError(
                    "no vendor librknnrt found: set LIBRKNNRT_PATH or install librknnrt.so to one of "
                    + ", ".join(VENDOR_LIB_PATHS) + " (from airockchip/rknn-toolkit2 rknpu2/runtime)")
        sim = cls.find_sim()
        if backend == "auto":
            log.info("no vendor librknnrt found; using the simulated NPU %s", sim)
        return cls._open(sim, "sim")

    @staticmethod
    def find_vendor() -> Optional[str]:
        """Path of the vendor runtime ($LIBRKNNRT_PATH first), or None."""
        env = os.environ.get(VENDOR_LIB_ENV)
        if env:
            if not Path(env).is_file():
                raise FileNotFoundError(f"LIBRKNNRT_PATH={env} does not exist; fix or unset it")
            return env
        for candidate in VENDOR_LIB_PATHS:
            if Path(candidate).is_file():
                return candidate
        return None

    @staticmethod
    def find_sim() -> str:
        """Path of the simulated NPU library ($RKNNLINK_SIM_LIB first); the error says how to build it."""
        env = os.environ.get(SIM_LIB_ENV)
        if env:
            if not Path(env).is_file():
                raise FileNotFoundError(f"RKNNLINK_SIM_LIB={env} does not exist; run `make -C runtime_c` "
                                        f"or unset it")
            return env
        packaged = packaged_sim_path()
        if packaged.is_file():
            return str(packaged)
        raise FileNotFoundError(
            f"the simulated NPU library {packaged} is missing; build it with `pip install -e .` (or "
            f"`make sim`) in the rknnlink checkout, or point RKNNLINK_SIM_LIB at a librknnrt_sim.so")

    @classmethod
    def _open(cls, path: str, backend: str) -> RuntimeLibrary:
        try:
            cdll = ctypes.CDLL(path, mode=getattr(os, "RTLD_LOCAL", 0) | getattr(os, "RTLD_NOW", 0))
        except OSError as exc:
            raise OSError(f"cannot load the NPU runtime {path}: {exc}; check the file's architecture "
                          f"(file {path}) and its dependencies (ldd {path})") from exc
        lib = cls(cdll, path, backend)
        if lib.is_simulator:
            lib.backend = "sim"
        elif backend == "auto":
            lib.backend = "vendor"
        return lib

    # -- properties
    @property
    def is_simulator(self) -> bool:
        return "rknnlink_sim_version" in self._fn

    def has(self, function: str) -> bool:
        return function in self._fn

    def fn(self, name: str) -> Any:
        return self._fn[name]

    def init_error_text(self) -> str:
        """The simulator's reason for the last failed rknn_init in this thread ("" elsewhere)."""
        getter = self._fn.get("rknnlink_sim_init_error")
        if getter is None:
            return ""
        raw = getter()
        return raw.decode("utf-8", "replace") if raw else ""

    def init(self, model: bytes, flags: int = 0) -> RuntimeContext:
        """rknn_init on an in-memory model; RknnError with the runtime's reason on failure."""
        if not isinstance(model, (bytes, bytearray, memoryview)):
            raise TypeError(f"model must be bytes, not {type(model).__name__}; read the .rknn file first")
        model = bytes(model)
        if not model:
            raise RknnError(abi.RKNN_ERR_MODEL_INVALID, None, "the model is empty (0 bytes)")
        handle = _CTX(0)
        buf = ctypes.create_string_buffer(model, len(model))
        ret = self._fn["rknn_init"](ctypes.byref(handle), buf, len(model), int(flags), None)
        if ret != 0:
            raise error_from_call("rknn_init", ret, self.init_error_text())
        return RuntimeContext(self, handle.value, buf)


class RuntimeContext:
    """One rknn_context: query attributes, set inputs, run, fetch outputs, profile. Close it or use `with`."""

    def __init__(self, lib: RuntimeLibrary, handle: int, model_buffer: Any = None) -> None:
        self.lib = lib
        self._handle: Optional[int] = handle
        self._model_buffer = model_buffer  # the runtime may keep pointers into the model
        self._inputs_keepalive: List[Any] = []
        num = abi.RknnInputOutputNum()
        self._query(abi.RKNN_QUERY_IN_OUT_NUM, num)
        self.n_inputs = int(num.n_input)
        self.n_outputs = int(num.n_output)
        self._shape_sets: Optional[List[List[List[int]]]] = None
        self._refresh_attrs()

    def _refresh_attrs(self) -> None:
        self.attrs_generation = getattr(self, "attrs_generation", -1) + 1  # PreparedRun.valid compares it
        self.input_attrs = [self._attr(abi.RKNN_QUERY_INPUT_ATTR, i) for i in range(self.n_inputs)]
        self.output_attrs = [self._attr(abi.RKNN_QUERY_OUTPUT_ATTR, i) for i in range(self.n_outputs)]

    # -- dynamic input shapes (models built with config(dynamic_input=...))
    def input_shape_sets(self) -> List[List[List[int]]]:
        """The shape sets the model was built for, each a list of input shapes as RKNN_QUERY_INPUT_ATTR
        reports them (4-D inputs NHWC); a static model has one set."""
        if self._shape_sets is None:
            per_input = []
            try:
                for i in range(self.n_inputs):
                    ranges = abi.RknnInputRange()
                    ranges.index = i
                    self._query(abi.RKNN_QUERY_INPUT_DYNAMIC_RANGE, ranges)
                    per_input.append([[int(d) for d in ranges.dyn_range[k][:ranges.n_dims]]
                                      for k in range(ranges.shape_number)])
                self._shape_sets = [list(shapes) for shapes in zip(*per_input)]
            except RknnError:  # a runtime without the query: the static shapes
                self._shape_sets = [[list(a.dims) for a in self.input_attrs]]
        return self._shape_sets

    def set_input_shapes(self, shapes: Sequence[Sequence[int]], fmt: str = "nhwc") -> None:
        """rknn_set_input_shapes: switch to the shape set whose inputs have these shapes ('nhwc' or 'nchw'
        dims for 4-D inputs), then re-read the input and output attributes."""
        if len(shapes) != self.n_inputs:
            raise RknnError(abi.RKNN_ERR_PARAM_INVALID, None,
                            f"set_input_shapes needs {self.n_inputs} shapes, got {len(shapes)}")
        attrs = (abi.RknnTensorAttr * max(self.n_inputs, 1))()
        for i, shape in enumerate(shapes):
            attrs[i].index = i
            attrs[i].n_dims = len(shape)
            for d, value in enumerate(shape):
                attrs[i].dims[d] = int(value)
            attrs[i].fmt = _FORMATS[fmt.lower()] if len(shape) == 4 else abi.RKNN_TENSOR_UNDEFINED
        self._call("rknn_set_input_shapes", self.handle, self.n_inputs, attrs)
        self._refresh_attrs()

    def _follow_input_shapes(self, arrays: Sequence[Any], formats: Optional[Sequence[Optional[str]]]) -> None:
        """A dynamic-shape model given inputs of another built set switches to it (what a script calling
        inference() with a new shape expects; C users call rknn_set_input_shapes themselves)."""
        given = []
        for i, value in enumerate(arrays):
            shape = list(np.shape(value))
            fmt = (formats[i] if formats is not None and i < len(formats) else None) or "nhwc"
            if len(shape) == 4 and fmt.lower() == "nchw":
                shape = [shape[0], shape[2], shape[3], shape[1]]
            given.append(shape)
        if all(math.prod(g) == a.n_elems for g, a in zip(given, self.input_attrs)):
            return
        sets = self.input_shape_sets()
        if len(sets) > 1 and given in sets:
            self.set_input_shapes(given, "nhwc")

    # -- plumbing
    @property
    def handle(self) -> int:
        if self._handle is None:
            raise RknnError(abi.RKNN_ERR_CTX_INVALID, None,
                            "the runtime context is closed; create a new one with RuntimeLibrary.init(model)")
        return self._handle

    @property
    def is_simulator(self) -> bool:
        return self.lib.is_simulator

    def last_error_text(self) -> str:
        getter = self.lib._fn.get("rknnlink_sim_last_error")
        if getter is None or self._handle is None:
            return ""
        raw = getter(self._handle)
        return raw.decode("utf-8", "replace") if raw else ""

    def _check(self, function: str, ret: int) -> None:
        if ret != 0:
            raise error_from_call(function, ret, self.last_error_text())

    def _call(self, function: str, *args: Any) -> None:
        """Call a bound library function and raise RknnError (with the runtime's reason) if it fails."""
        self._check(function, self.lib.fn(function)(*args))

    def _query(self, cmd: int, struct: ctypes.Structure) -> None:
        ret = self.lib.fn("rknn_query")(self.handle, cmd, ctypes.byref(struct), ctypes.sizeof(struct))
        self._check(f"rknn_query(cmd={cmd})", ret)

    def _attr(self, cmd: int, index: int) -> TensorAttr:
        attr = abi.RknnTensorAttr()
        attr.index = index
        self._query(cmd, attr)
        return TensorAttr.from_struct(attr)

    @property
    def native_input_attrs(self) -> List[TensorAttr]:
        return [self._attr(abi.RKNN_QUERY_NATIVE_INPUT_ATTR, i) for i in range(self.n_inputs)]

    @property
    def native_output_attrs(self) -> List[TensorAttr]:
        return [self._attr(abi.RKNN_QUERY_NATIVE_OUTPUT_ATTR, i) for i in range(self.n_outputs)]

    # -- inference
    @property
    def kept_inputs(self) -> Tuple[Any, ...]:
        """The buffers of the last inputs set (set_inputs, a PreparedRun), which this context keeps alive
        because the runtime was given pointers into them."""
        return tuple(self._inputs_keepalive)

    def keep_inputs(self, buffers: Sequence[Any]) -> None:
        """Keep `buffers` alive instead of kept_inputs: for a caller about to free the memory the last inputs
        lived in (a board worker unmapping a client's shared-memory ring), with copies of them that it uses
        from now on (a dump's replay)."""
        self._inputs_keepalive = list(buffers)

    def set_inputs(self, arrays: Sequence[Any], formats: Optional[Sequence[Optional[str]]] = None,
                   pass_through: Optional[Sequence[bool]] = None) -> None:
        """rknn_inputs_set for all inputs. formats: 'nhwc' (default for 4-D) or 'nchw' per input."""
        inputs, keep = self._input_structs(arrays, formats, pass_through)
        self._inputs_keepalive = keep
        self._check("rknn_inputs_set", self.lib.fn("rknn_inputs_set")(self.handle, self.n_inputs, inputs))

    def _input_structs(self, arrays: Sequence[Any], formats: Optional[Sequence[Optional[str]]],
                       pass_through: Optional[Sequence[bool]]) -> Tuple[Any, List[np.ndarray]]:
        """The checked rknn_input array of set_inputs and the arrays its buffers point into."""
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        if len(arrays) != self.n_inputs:
            names = ", ".join(a.name for a in self.input_attrs)
            raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                            f"the model has {self.n_inputs} input(s) ({names}) but {len(arrays)} were given")
        if not any(pass_through or []):
            self._follow_input_shapes(arrays, formats)
        inputs = (abi.RknnInput * max(self.n_inputs, 1))()
        keep: List[np.ndarray] = []
        for i, (value, attr) in enumerate(zip(arrays, self.input_attrs)):
            fmt = formats[i] if formats is not None and i < len(formats) else None
            through = bool(pass_through[i]) if pass_through is not None and i < len(pass_through) else False
            arr = self._prepare_input(i, value, attr, fmt, through)
            keep.append(arr)
            inputs[i].index = i
            inputs[i].buf = arr.ctypes.data
            inputs[i].size = arr.nbytes
            inputs[i].pass_through = 1 if through else 0
            inputs[i].type = attr.rknn_type if through else rknn_type_of(arr.dtype)
            inputs[i].fmt = self._input_format(attr, fmt)
        return inputs, keep

    @staticmethod
    def _input_format(attr: TensorAttr, fmt: Optional[str]) -> int:
        if fmt is not None:
            return _FORMATS[fmt.lower()]
        return abi.RKNN_TENSOR_NHWC if len(attr.dims) == 4 else attr.fmt_code

    @staticmethod
    def _prepare_input(i: int, value: Any, attr: TensorAttr, fmt: Optional[str], through: bool) -> np.ndarray:
        if fmt is not None and fmt.lower() not in _FORMATS:
            raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                            f"input {i} ({attr.name}): format {fmt!r} is unknown; use 'nhwc' or 'nchw'")
        arr = np.asarray(value) if through else as_input_array(value)
        arr = np.ascontiguousarray(arr)
        if through:
            if arr.nbytes != attr.size:
                raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                                f"input {i} ({attr.name}) is pass-through, so it must hold exactly "
                                f"{attr.size} bytes of {attr.type_name} in the runtime's native layout "
                                f"(see native_input_attrs); got {arr.nbytes} bytes")
            return arr
        rknn_type_of(arr.dtype)
        if arr.size != attr.n_elems:
            raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                            f"input {i} ({attr.name}) expects {attr.n_elems} elements (shape "
                            f"{list(attr.dims)} {attr.fmt}); got shape {list(arr.shape)} with {arr.size}")
        return arr

    def run(self) -> None:
        self._check("rknn_run", self.lib.fn("rknn_run")(self.handle, None))

    def get_outputs(self, want_float: bool = True) -> List[np.ndarray]:
        """rknn_outputs_get into fresh numpy arrays passed as is_prealloc buffers (so nothing can leak)."""
        outputs, arrays = self._output_structs(want_float)
        self._call("rknn_outputs_get", self.handle, self.n_outputs, outputs, None)
        self._call("rknn_outputs_release", self.handle, self.n_outputs, outputs)
        return [self._shaped(arr, attr) for arr, attr in zip(arrays, self.output_attrs)]

    def _output_structs(self, want_float: bool) -> Tuple[Any, List[np.ndarray]]:
        """An rknn_output array of is_prealloc buffers and the fresh arrays it points into."""
        outputs = (abi.RknnOutput * max(self.n_outputs, 1))()
        arrays: List[np.ndarray] = []
        for i, attr in enumerate(self.output_attrs):
            dtype = np.dtype(np.float32) if want_float else attr.dtype
            count = attr.n_elems
            arr = np.empty(count, dtype=dtype)
            arrays.append(arr)
            outputs[i].want_float = 1 if want_float else 0
            outputs[i].is_prealloc = 1
            outputs[i].index = i
            outputs[i].buf = arr.ctypes.data
            outputs[i].size = arr.nbytes
        return outputs, arrays

    @staticmethod
    def _shaped(arr: np.ndarray, attr: TensorAttr) -> np.ndarray:
        if attr.dims and math.prod(attr.dims) == arr.size:
            return arr.reshape(attr.dims)
        return arr

    def infer(self, inputs: Sequence[Any], formats: Optional[Sequence[Optional[str]]] = None,
              pass_through: Optional[Sequence[bool]] = None, want_float: bool = True) -> List[np.ndarray]:
        """set_inputs + run + get_outputs."""
        self.set_inputs(inputs, formats, pass_through)
        self.run()
        return self.get_outputs(want_float)

    def prepare(self, layout: Sequence[Tuple[Any, Sequence[int], Optional[str], bool]],
                want_float: bool = True) -> PreparedRun:
        """A PreparedRun for inputs of this layout: (numpy dtype, shape, format, pass_through) per input."""
        return PreparedRun(self, layout, want_float)

    # -- queries
    def perf_detail(self) -> str:
        """The runtime's per-layer table (needs RKNN_FLAG_COLLECT_PERF_MASK at init and a completed run)."""
        detail = abi.RknnPerfDetail()
        self._query(abi.RKNN_QUERY_PERF_DETAIL, detail)
        if not detail.perf_data or detail.data_len == 0:
            return ""
        text = ctypes.string_at(detail.perf_data, int(detail.data_len))
        return text.split(b"\0", 1)[0].decode("utf-8", "replace")

    def perf_run_us(self) -> int:
        run = abi.RknnPerfRun()
        self._query(abi.RKNN_QUERY_PERF_RUN, run)
        return int(run.run_duration)

    def sdk_version(self) -> Tuple[str, str]:
        ver = abi.RknnSdkVersion()
        self._query(abi.RKNN_QUERY_SDK_VERSION, ver)
        return _c_str(bytes(ver.api_version)), _c_str(bytes(ver.drv_version))

    def mem_size(self) -> Dict[str, int]:
        mem = abi.RknnMemSize()
        self._query(abi.RKNN_QUERY_MEM_SIZE, mem)
        return {"total_weight_size": int(mem.total_weight_size),
                "total_internal_size": int(mem.total_internal_size),
                "total_dma_allocated_size": int(mem.total_dma_allocated_size),
                "total_sram_size": int(mem.total_sram_size),
                "free_sram_size": int(mem.free_sram_size)}

    def custom_string(self) -> str:
        custom = abi.RknnCustomString()
        self._query(abi.RKNN_QUERY_CUSTOM_STRING, custom)
        return _c_str(bytes(custom.string))

    def set_core_mask(self, mask: int) -> None:
        if not self.lib.has("rknn_set_core_mask"):
            raise RknnError(abi.RKNN_ERR_PARAM_INVALID, None,
                            f"{self.lib.path} has no rknn_set_core_mask (a single-core runtime); "
                            f"use core_mask=0")
        self._check("rknn_set_core_mask", self.lib.fn("rknn_set_core_mask")(self.handle, int(mask)))

    def dup(self) -> RuntimeContext:
        """rknn_dup_context: a second context sharing this one's weights."""
        if not self.lib.has("rknn_dup_context"):
            raise RknnError(abi.RKNN_ERR_PARAM_INVALID, None, f"{self.lib.path} has no rknn_dup_context")
        src = _CTX(self.handle)
        out = _CTX(0)
        self._check("rknn_dup_context", self.lib.fn("rknn_dup_context")(ctypes.byref(src), ctypes.byref(out)))
        return RuntimeContext(self.lib, out.value, self._model_buffer)

    # -- simulator extensions
    def _require_sim(self, what: str) -> None:
        if not self.lib.is_simulator:
            raise RknnError(abi.RKNN_ERR_PARAM_INVALID, None,
                            f"{what} needs the rknnlink simulated NPU; the vendor runtime {self.lib.path} "
                            f"cannot provide it (use RKNN_LOG_LEVEL=5 / RKNN_DUMP_DIR on the board instead)")

    def layer_infos(self) -> List[LayerInfo]:
        self._require_sim("layer_infos()")
        count = ctypes.c_uint32(0)
        self._call("rknnlink_sim_layer_count", self.handle, ctypes.byref(count))
        infos = []
        for i in range(count.value):
            s = abi.RknnlinkLayerInfo()
            ret = self.lib.fn("rknnlink_sim_layer_info")(self.handle, i, ctypes.byref(s), ctypes.sizeof(s))
            self._check("rknnlink_sim_layer_info", ret)
            n_dims = min(int(s.n_dims), 8)
            infos.append(LayerInfo(index=int(s.index), name=_c_str(bytes(s.name)),
                                   op_type=_c_str(bytes(s.op_type)),
                                   onnx_type=_c_str(bytes(s.onnx_type)), dtype=int(s.dtype),
                                   dims=tuple(int(d) for d in s.dims[:n_dims]), macs=int(s.macs),
                                   bytes_rw=int(s.bytes_rw), est_time_us=float(s.est_time_us),
                                   measured_time_us=float(s.measured_time_us), n_outputs=int(s.n_outputs),
                                   cost_class=abi.COST_CLASS_NAMES.get(int(s.cost_class), "unknown"),
                                   act_elems=int(s.act_elems)))
        return infos

    def set_dump(self, enable: bool) -> None:
        self._require_sim("set_dump()")
        self._call("rknnlink_sim_set_dump", self.handle, 1 if enable else 0)

    def dumps(self) -> List[Tuple[DumpInfo, np.ndarray, np.ndarray]]:
        """Every tensor kept by the last run with dumps on: (info, float32 values, raw values)."""
        self._require_sim("dumps()")
        count = ctypes.c_uint32(0)
        self._call("rknnlink_sim_dump_count", self.handle, ctypes.byref(count))
        return [self._dump(i) for i in range(count.value)]

    def _dump(self, index: int) -> Tuple[DumpInfo, np.ndarray, np.ndarray]:
        s = abi.RknnlinkDumpInfo()
        self._call("rknnlink_sim_dump_info", self.handle, index, ctypes.byref(s), ctypes.sizeof(s))
        n_dims = min(int(s.n_dims), 8)
        dims = tuple(int(d) for d in s.dims[:n_dims])
        info = DumpInfo(layer_index=None if s.layer_index == 0xFFFFFFFF else int(s.layer_index),
                        output_slot=int(s.output_slot), name=_c_str(bytes(s.name)), dtype=int(s.dtype),
                        qnt_type=int(s.qnt_type), scale=float(s.scale), zp=int(s.zp), dims=dims,
                        n_elems=int(s.n_elems))
        f32 = np.empty(info.n_elems, dtype=np.float32)
        raw = np.empty(info.n_elems, dtype=numpy_dtype(info.dtype))
        ret = self.lib.fn("rknnlink_sim_dump_read")(self.handle, index, f32.ctypes.data, f32.size,
                                                    raw.ctypes.data, raw.nbytes)
        self._check("rknnlink_sim_dump_read", ret)
        if dims and int(np.prod(dims)) == info.n_elems:
            f32, raw = f32.reshape(dims), raw.reshape(dims)
        return info, f32, raw

    # -- lifetime
    def close(self) -> None:
        """rknn_destroy; safe to call twice."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        self._inputs_keepalive = []
        ret = self.lib.fn("rknn_destroy")(handle)
        if ret != 0:
            log.warning("rknn_destroy returned %d", ret)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> RuntimeContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down ctypes already
            pass


def _address(view: memoryview) -> int:
    """Address of a contiguous buffer's first byte, without making an array of it."""
    if not view.nbytes:
        return 0
    if view.readonly:
        return int(np.frombuffer(view, np.uint8).ctypes.data)
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class PreparedRun:
    """RuntimeContext.infer for inputs of one fixed layout, checked and turned into rknn_input structures
    once: a call only points those structures at the caller's buffers (no array is made of an input, nothing
    is converted or copied on this side) and makes the runtime calls, with fresh output arrays. What a board
    server needs that runs one layout again and again (a pipeline's frames): the per-call checks of
    set_inputs cost as much as moving the bytes.

    Inputs the runtime cannot take as they are (e.g. int32, which set_inputs turns into float32) go through
    RuntimeContext.infer instead, with the same result. `valid` turns False once the context's attributes
    change (a dynamic-shape model switched to another shape set): prepare again then."""

    def __init__(self, ctx: RuntimeContext, layout: Sequence[Tuple[Any, Sequence[int], Optional[str], bool]],
                 want_float: bool) -> None:
        self.ctx, self.want_float = ctx, want_float
        self.dtypes = [np.dtype(dtype) for dtype, _shape, _fmt, _through in layout]
        self.shapes = [tuple(int(d) for d in shape) for _dtype, shape, _fmt, _through in layout]
        self.formats = [fmt for _dtype, _shape, fmt, _through in layout]
        self.passes = [bool(through) for _dtype, _shape, _fmt, through in layout]
        samples = [np.empty(shape, dtype) for dtype, shape in zip(self.dtypes, self.shapes)]
        self._inputs, kept = ctx._input_structs(samples, self.formats, self.passes)  # the checks of set_inputs
        self.generation = ctx.attrs_generation
        self.direct = all(k.dtype == s.dtype and k.nbytes == s.nbytes for k, s in zip(kept, samples))
        self._outputs, _arrays = ctx._output_structs(want_float)
        self._out_types = [np.dtype(np.float32) if want_float else a.dtype for a in ctx.output_attrs]
        self._out_counts = [a.n_elems for a in ctx.output_attrs]
        self._out_shapes = [tuple(a.dims) if a.dims and math.prod(a.dims) == a.n_elems else (a.n_elems,)
                            for a in ctx.output_attrs]
        fn = ctx.lib.fn
        self._set, self._run, self._get, self._release = (fn("rknn_inputs_set"), fn("rknn_run"),
                                                          fn("rknn_outputs_get"), fn("rknn_outputs_release"))

    @property
    def valid(self) -> bool:
        return self.generation == self.ctx.attrs_generation

    @property
    def output_layout(self) -> List[Tuple[np.dtype, Tuple[int, ...], int]]:
        """(dtype, shape, bytes) of every output as a call returns it: what a caller sizing buffers for a
        BoundRun needs."""
        return [(dtype, shape, count * dtype.itemsize)
                for dtype, shape, count in zip(self._out_types, self._out_shapes, self._out_counts)]

    def __call__(self, datas: Sequence[memoryview]) -> List[np.ndarray]:
        """Outputs of one inference of `datas` (the inputs' bytes, C-contiguous, of the prepared layout)."""
        ctx = self.ctx
        if not self.direct:
            arrays = [np.frombuffer(d, dtype).reshape(shape)
                      for d, dtype, shape in zip(datas, self.dtypes, self.shapes)]
            return ctx.infer(arrays, self.formats, self.passes, self.want_float)
        handle, inputs, outputs = ctx.handle, self._inputs, self._outputs
        if len(datas) != ctx.n_inputs:
            raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None,
                            f"the model has {ctx.n_inputs} input(s) but {len(datas)} were given")
        for i, data in enumerate(datas):
            if data.nbytes != inputs[i].size:
                raise RknnError(abi.RKNN_ERR_INPUT_INVALID, None, f"input {i}: {data.nbytes} bytes where the "
                                f"prepared layout has {inputs[i].size}")
            inputs[i].buf = _address(data)
        ctx._inputs_keepalive = list(datas)
        ctx._check("rknn_inputs_set", self._set(handle, ctx.n_inputs, inputs))
        ctx._check("rknn_run", self._run(handle, None))
        arrays = []
        for i, (dtype, count) in enumerate(zip(self._out_types, self._out_counts)):
            arr = np.empty(count, dtype)
            outputs[i].buf = arr.ctypes.data
            arrays.append(arr)
        ctx._check("rknn_outputs_get", self._get(handle, ctx.n_outputs, outputs, None))
        ctx._check("rknn_outputs_release", self._release(handle, ctx.n_outputs, outputs))
        return [arr.reshape(shape) for arr, shape in zip(arrays, self._out_shapes)]


class BoundRun:
    """A PreparedRun pointed once at fixed input and output buffers (a board worker's ring slot and its
    reply area): a call is the four runtime calls and nothing else - no array is made, nothing allocated,
    nothing converted here, and the outputs land where the caller reads them. What bounds a pipelining
    worker is its one thread's Python per inference (perf), and an ordinary PreparedRun call still makes
    output arrays and points the structures at every call's buffers.

    The caller keeps the buffers alive and of the same size while it uses this one (they are kept referenced
    here); `valid` as PreparedRun's. Outputs are written as PreparedRun would return them (float32 unless
    the plan was prepared for raw outputs), each C-contiguous in its buffer."""

    def __init__(self, plan: PreparedRun, datas: Sequence[memoryview], outs: Sequence[memoryview]) -> None:
        ctx = plan.ctx
        if not plan.direct:
            raise ValueError("only a plan whose inputs go to the runtime as they are can be bound")
        if len(datas) != ctx.n_inputs or len(outs) != ctx.n_outputs:
            raise ValueError(f"{len(datas)} inputs and {len(outs)} outputs for a model of {ctx.n_inputs} and "
                             f"{ctx.n_outputs}")
        self.plan, self.datas, self.outs = plan, list(datas), list(outs)
        self._inputs = (abi.RknnInput * max(ctx.n_inputs, 1))()
        self._outputs = (abi.RknnOutput * max(ctx.n_outputs, 1))()
        for i, data in enumerate(self.datas):
            self._inputs[i] = plan._inputs[i]
            if data.nbytes != self._inputs[i].size:
                raise ValueError(f"input {i}: {data.nbytes} bytes where the plan has {self._inputs[i].size}")
            self._inputs[i].buf = _address(data)
        for i, (out, (_dtype, _shape, nbytes)) in enumerate(zip(self.outs, plan.output_layout)):
            self._outputs[i] = plan._outputs[i]
            if out.nbytes != nbytes or out.readonly:
                raise ValueError(f"output {i}: a writable buffer of {nbytes} bytes is needed")
            self._outputs[i].buf = _address(out)
            self._outputs[i].size = out.nbytes

    @property
    def valid(self) -> bool:
        return self.plan.valid

    def __call__(self) -> None:
        """One inference of the bound inputs into the bound outputs."""
        plan = self.plan
        ctx = plan.ctx
        handle, n_in, n_out = ctx.handle, ctx.n_inputs, ctx.n_outputs
        ctx._inputs_keepalive = self.datas
        ctx._check("rknn_inputs_set", plan._set(handle, n_in, self._inputs))
        ctx._check("rknn_run", plan._run(handle, None))
        ctx._check("rknn_outputs_get", plan._get(handle, n_out, self._outputs, None))
        ctx._check("rknn_outputs_release", plan._release(handle, n_out, self._outputs))
