"""TFLite flatbuffer -> ONNX, read with the ``tflite`` package (the schema's generated Python accessors).

Layout, as the toolkit does it: a TFLite model is NHWC throughout, the NPU is NCHW. Every 4-D activation is
stored NCHW in the ONNX graph (graph inputs too, so the user's NHWC image is transposed by the runtime's
input conversion exactly as for an ONNX model); operators that are layout-neutral (reshape, transpose,
gather, fully connected) see the NHWC value through a Transpose inserted once per tensor. 4-D graph
outputs are transposed back, so outputs have the TFLite model's own shapes and names.
``input_is_nchw=True`` declares that the 4-D inputs are already channel-first (a model converted from
PyTorch): they are kept as they are.

Quantised models (int8 / uint8, per tensor or per channel): constants are dequantised into float
initializers; every quantised activation's (scale, zero point) is returned in :attr:`Conversion.quant`,
which ``build(do_quantization=False)`` uses instead of calibration (:mod:`rknnlink.model.prequant`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import BuildError
from .common import NCHW_TO_NHWC, NHWC_TO_NCHW, Conversion, LayerError, OnnxGraph, Unsupported, check_file, same_padding

LOG = logging.getLogger(__name__)

ADVICE = ("Convert the model to ONNX (e.g. with tf2onnx) and cut it before these operators with "
          "load_onnx(outputs=[...]), or replace them in the source model.")

# tflite.TensorType -> numpy
_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
             9: np.int8, 10: np.float64}
_QUANT_TYPES = {3: "uint8", 9: "int8", 7: "int16"}


def _tflite():
    try:
        import tflite
    except ImportError as exc:
        raise BuildError("load_tflite needs the 'tflite' package (the TFLite flatbuffer schema): "
                         "pip install 'rknnlink[host]' or pip install tflite") from exc
    return tflite


@dataclass
class _Tensor:
    name: str
    shape: tuple
    dtype: int
    data: Optional[np.ndarray]  # raw buffer contents for constants
    scale: Optional[np.ndarray] = None
    zero_point: Optional[np.ndarray] = None
    axis: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.dtype in _QUANT_TYPES


class _Converter:
    def __init__(self, data: bytes, name: str, input_is_nchw: bool) -> None:
        tfl = _tflite()
        self.tfl = tfl
        try:
            self.model = tfl.Model.GetRootAsModel(data, 0)
            sub = self.model.Subgraphs(0)
        except Exception as exc:
            raise BuildError(f"cannot parse {name!r} as a TFLite flatbuffer: {exc}") from exc
        if sub is None:
            raise BuildError(f"{name!r} has no subgraph; it is not a TFLite model")
        self.data = data
        self.sub = sub
        self.input_is_nchw = input_is_nchw
        self.g = OnnxGraph(name)
        self.tensors = [self._read_tensor(i) for i in range(sub.TensorsLength())]
        for t in self.tensors:
            self.g.claim(t.name)
        self.values: Dict[int, tuple] = {}  # tensor index -> (onnx name, 'nchw' | 'plain')
        self.consts: Dict[int, np.ndarray] = {}
        self.layout_copies: Dict[tuple, str] = {}
        self.quant: Dict[str, dict] = {}
        self.outputs = set(int(i) for i in sub.OutputsAsNumpy())
        self.unsupported = Unsupported("TFLite", ADVICE)
        names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
        self.opnames = []
        for i in range(self.model.OperatorCodesLength()):
            code = self.model.OperatorCodes(i)
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            if builtin == tfl.BuiltinOperator.CUSTOM:
                custom = code.CustomCode()
                self.opnames.append(f"CUSTOM:{custom.decode() if custom else '?'}")
            else:
                self.opnames.append(names.get(builtin, f"BUILTIN_{builtin}"))

    # ------------------------------------------------------------------ tensors

    def _read_tensor(self, i: int) -> _Tensor:
        t = self.sub.Tensors(i)
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{i}"
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        buf = self.model.Buffers(t.Buffer())
        raw = None
        dtype = int(t.Type())
        if buf is not None:
            if buf.DataLength():
                raw = buf.DataAsNumpy().tobytes()
            elif buf.Offset() > 1:  # large models keep buffers after the flatbuffer
                raw = self.data[buf.Offset():buf.Offset() + buf.Size()]
        data = None
        if raw is not None:
            if dtype not in _NP_TYPES:
                data = np.zeros(0)
            else:
                data = np.frombuffer(raw, dtype=_NP_TYPES[dtype]).reshape(shape).copy()
        out = _Tensor(name, shape, dtype, data)
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            out.scale = q.ScaleAsNumpy().astype(np.float64)
            out.zero_point = (q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength()
                              else np.zeros(len(out.scale), np.int64))
            out.axis = int(q.QuantizedDimension())
        return out

    def is_const(self, idx: int) -> bool:
        return idx in self.consts or self.tensors[idx].data is not None

    def const(self, idx: int) -> np.ndarray:
        """The float (dequantised) or integer value of a constant tensor."""
        if idx in self.consts:
            return self.consts[idx]
        t = self.tensors[idx]
        if t.data is None:
            raise LayerError(f"input {t.name!r} must be a constant")
        arr = t.data
        if t.scale is not None and arr.dtype in (np.int8, np.uint8, np.int16, np.int32):  # int32: biases
            shape = [1] * arr.ndim
            if len(t.scale) > 1:
                shape[t.axis] = -1
            arr = ((arr.astype(np.float64) - t.zero_point.reshape(shape)) * t.scale.reshape(shape))
            arr = arr.astype(np.float32)
        elif arr.dtype in (np.float16, np.float64):
            arr = arr.astype(np.float32)
        self.consts[idx] = arr
        return arr

    def shape(self, idx: int) -> tuple:
        return self.tensors[idx].shape

    def value(self, idx: int, layout: str) -> str:
        """The ONNX name holding tensor ``idx`` in ``layout`` ('nchw': 4-D stored channel-first; 'plain')."""
        if self.is_const(idx):
            arr = self.const(idx)
            if layout == "nchw" and arr.ndim == 4:
                arr = arr.transpose(NHWC_TO_NCHW)
            return self.g.const(self.tensors[idx].name + ("_nchw" if layout == "nchw" else ""), arr)
        if idx not in self.values:
            raise LayerError(f"input {self.tensors[idx].name!r} is computed by an operator that was not converted")
        name, have = self.values[idx]
        if have == layout or len(self.shape(idx)) != 4:
            return name
        key = (idx, layout)
        if key not in self.layout_copies:
            perm = NHWC_TO_NCHW if layout == "nchw" else NCHW_TO_NHWC
            out = self.g.node("Transpose", [name], self.g.fresh(f"{name}_{'nchw' if layout == 'nchw' else 'nhwc'}"),
                              perm=list(perm))
            self.copy_quant(out, name)
            self.layout_copies[key] = out
        return self.layout_copies[key]

    def layout_of(self, idx: int) -> str:
        if self.is_const(idx) or len(self.shape(idx)) != 4:
            return "plain"
        return self.values[idx][1] if idx in self.values else "nchw"

    def copy_quant(self, dst: str, src: str) -> None:
        if src in self.quant:
            self.quant[dst] = dict(self.quant[src], source=self.quant[src].get("source", src))

    def record_quant(self, name: str, idx: int) -> None:
        t = self.tensors[idx]
        if t.quantized and len(t.scale) == 1:
            self.quant[name] = {"scale": float(t.scale[0]), "zero_point": int(t.zero_point[0]),
                                "dtype": _QUANT_TYPES[t.dtype], "source": t.name}

    def out_name(self, idx: int, layout: str) -> str:
        """Name for the ONNX tensor computing output ``idx`` (graph outputs computed NCHW get a suffix)."""
        name = self.tensors[idx].name
        if idx in self.outputs and layout == "nchw" and len(self.shape(idx)) == 4:
            return self.g.fresh(name + "_nchw")
        return name

    def set_value(self, idx: int, name: str, layout: str) -> None:
        self.values[idx] = (name, layout if len(self.shape(idx)) == 4 else "plain")
        self.record_quant(name, idx)

    def emit(self, idx: int, layout: str, op_type: str, inputs: list, act: int = 0, **attrs: Any) -> str:
        """One ONNX node computing tensor ``idx``, followed by the fused activation if there is one."""
        final = self.out_name(idx, layout)
        if act == 0:
            self.g.node(op_type, inputs, final, **attrs)
        else:
            pre = self.g.node(op_type, inputs, self.g.fresh(final + "_preact"), **attrs)
            self.fused_activation(act, pre, final)
            self.tensors_quant_alias(pre, idx)
        self.set_value(idx, final, layout)
        return final

    def tensors_quant_alias(self, name: str, idx: int) -> None:
        """A fused activation's input is never materialised by TFLite: it shares the output's parameters
        (saturating what the activation would clip anyway)."""
        self.record_quant(name, idx)

    def fused_activation(self, act: int, x: str, out: str) -> None:
        if act == 1:
            self.g.node("Relu", [x], out)
        elif act == 2:
            self.g.node("Clip", [x, self.g.const("m1", np.float32(-1)), self.g.const("p1", np.float32(1))], out)
        elif act == 3:
            self.g.node("Clip", [x, self.g.const("zero", np.float32(0)), self.g.const("six", np.float32(6))], out)
        elif act == 4:
            self.g.node("Tanh", [x], out)
        else:
            raise LayerError(f"fused activation {act} (SIGN_BIT) is not supported")

    # ------------------------------------------------------------------ conversion

    def run(self) -> Conversion:
        for idx in (int(i) for i in self.sub.InputsAsNumpy()):
            t = self.tensors[idx]
            if len(t.shape) == 4 and not self.input_is_nchw:
                n, h, w, c = t.shape
                self.g.add_input(t.name, [n, c, h, w])
                self.set_value(idx, t.name, "nchw")
            else:
                self.g.add_input(t.name, t.shape)
                self.set_value(idx, t.name, "plain")
            if any(d < 1 for d in t.shape):
                raise BuildError(f"TFLite input {t.name!r} has a dynamic shape {list(t.shape)}; re-convert the "
                                 "model with a fixed input shape")
        for k in range(self.sub.OperatorsLength()):
            op = self.sub.Operators(k)
            opname = self.opnames[op.OpcodeIndex()]
            ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(i) for i in op.OutputsAsNumpy()]
            handler = _HANDLERS.get(opname)
            layer = self.tensors[outs[0]].name if outs else f"op_{k}"
            if handler is None:
                self.unsupported.add(opname, layer)
                continue
            if any(i >= 0 and not self.is_const(i) and i not in self.values for i in ins):
                continue  # fed by a layer that failed: reported there
            try:
                handler(self, op, ins, outs)
            except LayerError as exc:
                self.unsupported.add(opname, layer, str(exc))
        self.unsupported.raise_if_any()
        for idx in (int(i) for i in self.sub.OutputsAsNumpy()):
            name = self.tensors[idx].name
            value = self.value(idx, self.layout_of(idx))
            if self.layout_of(idx) == "nchw":
                self.g.node("Transpose", [value], name, perm=list(NCHW_TO_NHWC))
            elif value != name:
                self.g.node("Identity", [value], name)
            self.copy_quant(name, value)
            self.g.add_output(name)
        return Conversion(self.g.model("rknnlink.tflite"), self.quant)

    def options(self, op: Any, cls_name: str) -> Any:
        table = op.BuiltinOptions()
        opts = getattr(self.tfl, cls_name)()
        if table is None:
            return None
        opts.Init(table.Bytes, table.Pos)
        return opts

    def axis_nchw(self, axis: int, rank: int, layout: str) -> int:
        axis = axis + rank if axis < 0 else axis
        if layout == "nchw" and rank == 4:
            return (0, 2, 3, 1)[axis]
        return axis


# ---------------------------------------------------------------------- operator translations
# Each takes (converter, operator, input tensor indices, output tensor indices).


def _conv_pads(c: _Converter, padding: int, in_shape: tuple, kernel: tuple, strides: tuple,
               dilations: tuple) -> list:
    if padding == 1:  # VALID
        return [0, 0, 0, 0]
    (t, b), (left, r) = (same_padding(in_shape[1], kernel[0], strides[0], dilations[0]),
                         same_padding(in_shape[2], kernel[1], strides[1], dilations[1]))
    return [t, left, b, r]


def _conv2d(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "Conv2DOptions")
    w = c.const(ins[1])  # (O, KH, KW, I)
    x_shape = c.shape(ins[0])
    groups = x_shape[3] // w.shape[3]
    strides, dil = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    inputs = [c.value(ins[0], "nchw"), c.g.const(c.tensors[ins[1]].name, w.transpose(0, 3, 1, 2))]
    if len(ins) > 2 and ins[2] >= 0:
        inputs.append(c.g.const(c.tensors[ins[2]].name, c.const(ins[2]).astype(np.float32)))
    c.emit(outs[0], "nchw", "Conv", inputs, o.FusedActivationFunction(), kernel_shape=list(w.shape[1:3]),
           strides=list(strides), dilations=list(dil), group=groups,
           pads=_conv_pads(c, o.Padding(), x_shape, w.shape[1:3], strides, dil))


def _depthwise(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "DepthwiseConv2DOptions")
    w = c.const(ins[1])  # (1, KH, KW, C*M)
    x_shape = c.shape(ins[0])
    strides, dil = (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor())
    inputs = [c.value(ins[0], "nchw"), c.g.const(c.tensors[ins[1]].name, w.transpose(3, 0, 1, 2))]
    if len(ins) > 2 and ins[2] >= 0:
        inputs.append(c.g.const(c.tensors[ins[2]].name, c.const(ins[2]).astype(np.float32)))
    c.emit(outs[0], "nchw", "Conv", inputs, o.FusedActivationFunction(), kernel_shape=list(w.shape[1:3]),
           strides=list(strides), dilations=list(dil), group=x_shape[3],
           pads=_conv_pads(c, o.Padding(), x_shape, w.shape[1:3], strides, dil))


def _transpose_conv(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "TransposeConvOptions")
    w = c.const(ins[1])  # (O, KH, KW, I)
    x_shape, y_shape = c.shape(ins[2]), c.shape(outs[0])
    strides = (o.StrideH(), o.StrideW())
    pads, out_pad = [], []
    for axis in (0, 1):
        k, s, n_in, n_out = w.shape[1 + axis], strides[axis], x_shape[1 + axis], y_shape[1 + axis]
        total = (n_in - 1) * s + k - n_out
        if o.Padding() == 1:
            total = 0
        extra = max(-total, 0)
        total = max(total, 0)
        pads.append((total // 2, total - total // 2))
        out_pad.append(extra)
    inputs = [c.value(ins[2], "nchw"), c.g.const(c.tensors[ins[1]].name, w.transpose(3, 0, 1, 2))]
    if len(ins) > 3 and ins[3] >= 0:
        inputs.append(c.g.const(c.tensors[ins[3]].name, c.const(ins[3]).astype(np.float32)))
    act = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
    c.emit(outs[0], "nchw", "ConvTranspose", inputs, act, kernel_shape=list(w.shape[1:3]), strides=list(strides),
           pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
           output_padding=out_pad if any(out_pad) else None)


def _pool(onnx_op: str) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        o = c.options(op, "Pool2DOptions")
        kernel, strides = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        pads = _conv_pads(c, o.Padding(), c.shape(ins[0]), kernel, strides, (1, 1))
        extra = {"count_include_pad": 0} if onnx_op == "AveragePool" else {}
        c.emit(outs[0], "nchw", onnx_op, [c.value(ins[0], "nchw")], o.FusedActivationFunction(),
               kernel_shape=list(kernel), strides=list(strides), pads=pads, **extra)
    return convert


def _fully_connected(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "FullyConnectedOptions")
    if o is not None and o.WeightsFormat() != 0:
        raise LayerError("shuffled weights format is not supported")
    x = c.value(ins[0], "plain")
    x_shape = c.shape(ins[0])
    k = c.shape(ins[1])[1]
    rows = int(np.prod(x_shape)) // k
    if len(x_shape) != 2 or x_shape[1] != k:
        x = c.g.node("Reshape", [x, c.g.const("fc_shape", np.array([rows, k], np.int64))],
                     c.g.fresh(c.tensors[outs[0]].name + "_flat"))
        c.copy_quant(x, c.values[ins[0]][0] if ins[0] in c.values else "")
    act = o.FusedActivationFunction() if o is not None else 0
    y_shape = c.shape(outs[0])
    if c.is_const(ins[1]):
        inputs = [x, c.g.const(c.tensors[ins[1]].name, c.const(ins[1]))]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(c.g.const(c.tensors[ins[2]].name, c.const(ins[2]).astype(np.float32)))
        if len(y_shape) == 2:
            c.emit(outs[0], "plain", "Gemm", inputs, act, transB=1)
            return
        flat = c.g.node("Gemm", inputs, c.g.fresh(c.tensors[outs[0]].name + "_2d"), transB=1)
        c.emit(outs[0], "plain", "Reshape", [flat, c.g.const("fc_out", np.array(y_shape, np.int64))], act)
        return
    raise LayerError("weights computed at run time are not supported")


def _binary(onnx_op: str) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        opts = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}
        o = c.options(op, opts[onnx_op.upper()]) if onnx_op.upper() in opts else None
        act = o.FusedActivationFunction() if o is not None else 0
        out_rank = len(c.shape(outs[0]))
        layout = "plain"
        if out_rank == 4 and any(not c.is_const(i) and c.layout_of(i) == "nchw" for i in ins):
            layout = "nchw"
        inputs = []
        for i in ins:
            if c.is_const(i):
                arr = c.const(i)
                if layout == "nchw":
                    arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape).transpose(NHWC_TO_NCHW)
                inputs.append(c.g.const(c.tensors[i].name, arr.astype(np.float32)))
            elif layout == "nchw" and len(c.shape(i)) != 4:
                plain = c.value(i, "plain")
                full = (1,) * (4 - len(c.shape(i))) + c.shape(i)
                r = c.g.node("Reshape", [plain, c.g.const("bcast_shape", np.array(full, np.int64))])
                inputs.append(c.g.node("Transpose", [r], perm=list(NHWC_TO_NCHW)))
            else:
                inputs.append(c.value(i, layout))
        c.emit(outs[0], layout, onnx_op, inputs, act)
    return convert


def _unary(onnx_op: str, **attrs: Any) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        layout = c.layout_of(ins[0])
        c.emit(outs[0], layout, onnx_op, [c.value(ins[0], layout)], **attrs)
    return convert


def _clip(lo: float, hi: float) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        layout = c.layout_of(ins[0])
        c.emit(outs[0], layout, "Clip", [c.value(ins[0], layout), c.g.const("clip_lo", np.float32(lo)),
                                         c.g.const("clip_hi", np.float32(hi))])
    return convert


def _leaky_relu(c: _Converter, op: Any, ins: list, outs: list) -> None:
    layout = c.layout_of(ins[0])
    c.emit(outs[0], layout, "LeakyRelu", [c.value(ins[0], layout)],
           alpha=float(c.options(op, "LeakyReluOptions").Alpha()))


def _prelu(c: _Converter, op: Any, ins: list, outs: list) -> None:
    layout = c.layout_of(ins[0])
    alpha = c.const(ins[1]).astype(np.float32)
    if layout == "nchw":
        alpha = alpha.reshape((1,) * (4 - alpha.ndim) + alpha.shape).transpose(NHWC_TO_NCHW)[0]
    c.emit(outs[0], layout, "PRelu", [c.value(ins[0], layout), c.g.const(c.tensors[ins[1]].name, alpha)])


def _softmax(c: _Converter, op: Any, ins: list, outs: list) -> None:
    layout = c.layout_of(ins[0])
    rank = len(c.shape(ins[0]))
    x = c.value(ins[0], layout)
    beta = float(c.options(op, "SoftmaxOptions").Beta())
    if beta != 1.0:
        x = c.g.node("Mul", [x, c.g.const("beta", np.float32(beta))])
    c.emit(outs[0], layout, "Softmax", [x], axis=c.axis_nchw(-1, rank, layout))


def _concat(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "ConcatenationOptions")
    rank = len(c.shape(outs[0]))
    layout = "nchw" if rank == 4 and any(c.layout_of(i) == "nchw" for i in ins) else "plain"
    c.emit(outs[0], layout, "Concat", [c.value(i, layout) for i in ins], o.FusedActivationFunction(),
           axis=c.axis_nchw(o.Axis(), rank, layout))


def _reshape(c: _Converter, op: Any, ins: list, outs: list) -> None:
    shape = np.array(c.shape(outs[0]), np.int64)
    c.emit(outs[0], "plain", "Reshape", [c.value(ins[0], "plain"), c.g.const("shape", shape)])
    # a 4-D result is stored as the TFLite value ('plain'); a consumer that needs NCHW transposes it


def _transpose(c: _Converter, op: Any, ins: list, outs: list) -> None:
    perm = [int(p) for p in c.const(ins[1])]
    layout = c.layout_of(ins[0])
    if layout == "nchw":  # compose with the stored layout instead of transposing twice
        perm = [NHWC_TO_NCHW[p] for p in perm]
    c.emit(outs[0], "plain", "Transpose", [c.value(ins[0], layout)], perm=perm)


def _resize(mode: str, opts_name: str) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        o = c.options(op, opts_name)
        align, half = bool(o.AlignCorners()), bool(o.HalfPixelCenters())
        n, h, w, ch = c.shape(outs[0])
        attrs: Dict[str, Any] = {"mode": mode}
        if mode == "linear":
            attrs["coordinate_transformation_mode"] = ("align_corners" if align else
                                                       "half_pixel" if half else "asymmetric")
        else:
            # TF nearest: floor of the asymmetric (or half-pixel-centred) source coordinate, round with
            # align_corners; half_pixel + round_prefer_ceil is floor((x + 0.5) / scale).
            attrs["coordinate_transformation_mode"] = ("align_corners" if align else
                                                       "half_pixel" if half else "asymmetric")
            attrs["nearest_mode"] = "round_prefer_ceil" if (align or half) else "floor"
        sizes = c.g.const("sizes", np.array([n, ch, h, w], np.int64))
        c.emit(outs[0], "nchw", "Resize", [c.value(ins[0], "nchw"), "", "", sizes], **attrs)
    return convert


def _pad(c: _Converter, op: Any, ins: list, outs: list) -> None:
    pads = c.const(ins[1]).astype(np.int64)
    layout = c.layout_of(ins[0])
    rank = pads.shape[0]
    order = [c.axis_nchw(a, rank, layout) for a in range(rank)]
    begin, end = [0] * rank, [0] * rank
    for a in range(rank):
        begin[order[a]], end[order[a]] = int(pads[a, 0]), int(pads[a, 1])
    inputs = [c.value(ins[0], layout), c.g.const("pads", np.array(begin + end, np.int64))]
    if len(ins) > 2 and ins[2] >= 0:
        inputs.append(c.g.const("pad_value", np.asarray(c.const(ins[2]), np.float32).reshape(())))
    c.emit(outs[0], layout, "Pad", inputs, mode="constant")


def _mirror_pad(c: _Converter, op: Any, ins: list, outs: list) -> None:
    if c.options(op, "MirrorPadOptions").Mode() != 0:
        raise LayerError("SYMMETRIC mirror padding is not supported (REFLECT is)")
    pads = c.const(ins[1]).astype(np.int64)
    layout = c.layout_of(ins[0])
    rank = pads.shape[0]
    begin, end = [0] * rank, [0] * rank
    for a in range(rank):
        j = c.axis_nchw(a, rank, layout)
        begin[j], end[j] = int(pads[a, 0]), int(pads[a, 1])
    c.emit(outs[0], layout, "Pad", [c.value(ins[0], layout), c.g.const("pads", np.array(begin + end, np.int64))],
           mode="reflect")


def _reduce(onnx_op: str) -> Callable:
    def convert(c: _Converter, op: Any, ins: list, outs: list) -> None:
        keep = bool(c.options(op, "ReducerOptions").KeepDims())
        rank = len(c.shape(ins[0]))
        layout = c.layout_of(ins[0])
        axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in np.ravel(c.const(ins[1]))})
        mapped = [c.axis_nchw(a, rank, layout) for a in axes]
        kept_nhwc = [a for a in range(rank) if a not in axes]
        kept_stored = [a for a in (0, 3, 1, 2) if a not in axes] if layout == "nchw" else kept_nhwc
        x = c.value(ins[0], layout)
        if keep or kept_stored == kept_nhwc:
            final = c.out_name(outs[0], layout if keep else "plain")
            c.g.reduce(onnx_op, x, mapped, int(keep), final)
            c.set_value(outs[0], final, layout if keep else "plain")
            return
        r = c.g.reduce(onnx_op, x, mapped, 1)
        t = c.g.node("Transpose", [r], perm=list(NCHW_TO_NHWC))
        c.emit(outs[0], "plain", "Reshape", [t, c.g.const("shape", np.array(c.shape(outs[0]), np.int64))])
    return convert


def _strided_slice(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "StridedSliceOptions")
    if o.EllipsisMask() or o.NewAxisMask():
        raise LayerError("ellipsis_mask / new_axis_mask are not supported")
    if c.is_const(ins[0]):
        _fold_strided_slice(c, o, ins, outs)
        return
    begin, end, strides = (c.const(i).astype(np.int64).ravel() for i in ins[1:4])
    in_shape = c.shape(ins[0])
    rank = len(in_shape)
    layout = c.layout_of(ins[0])
    starts, ends, axes, steps = [], [], [], []
    for a in range(len(begin)):
        s, e, st = int(begin[a]), int(end[a]), int(strides[a])
        if o.BeginMask() >> a & 1:
            s = 0 if st > 0 else in_shape[a] - 1
        if o.EndMask() >> a & 1:
            e = in_shape[a] if st > 0 else -(2 ** 62)
        if o.ShrinkAxisMask() >> a & 1:
            s = s + in_shape[a] if s < 0 else s
            e, st = s + 1, 1
        starts.append(s)
        ends.append(e)
        axes.append(c.axis_nchw(a, rank, layout))
        steps.append(st)
    inputs = [c.value(ins[0], layout)] + [c.g.const(n, np.array(v, np.int64)) for n, v in
                                         (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))]
    if not o.ShrinkAxisMask():
        c.emit(outs[0], layout, "Slice", inputs)
        return
    sliced = c.g.node("Slice", inputs)
    c.copy_quant(sliced, c.values[ins[0]][0])
    if layout == "nchw":
        sliced = c.g.node("Transpose", [sliced], perm=list(NCHW_TO_NHWC))
    c.emit(outs[0], "plain", "Reshape", [sliced, c.g.const("shape", np.array(c.shape(outs[0]), np.int64))])


def _shape(c: _Converter, op: Any, ins: list, outs: list) -> None:
    """Shapes are static here: SHAPE (and the shape arithmetic after it) folds into constants."""
    c.consts[outs[0]] = np.array(c.shape(ins[0]), np.int32)


def _pack(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "PackOptions")
    axis = int(o.Axis())
    if all(c.is_const(i) for i in ins):
        c.consts[outs[0]] = np.stack([c.const(i) for i in ins], axis=axis)
        return
    rank = len(c.shape(outs[0]))
    axis = axis + rank if axis < 0 else axis
    parts = [c.g.node("Unsqueeze", [c.value(i, "plain"), c.g.const("axes", np.array([axis], np.int64))])
             for i in ins]
    c.emit(outs[0], "plain", "Concat", parts, axis=axis)


def _fold_strided_slice(c: _Converter, o: Any, ins: list, outs: list) -> None:
    x = c.const(ins[0])
    begin, end, strides = (c.const(i).astype(np.int64).ravel() for i in ins[1:4])
    index = []
    for a in range(len(begin)):
        b = None if o.BeginMask() >> a & 1 else int(begin[a])
        e = None if o.EndMask() >> a & 1 else int(end[a])
        if o.ShrinkAxisMask() >> a & 1:
            index.append(int(begin[a]))
        else:
            index.append(slice(b, e, int(strides[a])))
    c.consts[outs[0]] = np.asarray(x[tuple(index)])


def _slice(c: _Converter, op: Any, ins: list, outs: list) -> None:
    begin, size = c.const(ins[1]).astype(np.int64).ravel(), c.const(ins[2]).astype(np.int64).ravel()
    in_shape = c.shape(ins[0])
    layout = c.layout_of(ins[0])
    ends = [int(b + s) if s >= 0 else in_shape[a] for a, (b, s) in enumerate(zip(begin, size))]
    axes = [c.axis_nchw(a, len(in_shape), layout) for a in range(len(begin))]
    c.emit(outs[0], layout, "Slice", [c.value(ins[0], layout), c.g.const("starts", begin),
                                      c.g.const("ends", np.array(ends, np.int64)),
                                      c.g.const("axes", np.array(axes, np.int64))])


def _split(c: _Converter, op: Any, ins: list, outs: list, x_idx: int, axis: int, sizes: list) -> None:
    rank = len(c.shape(x_idx))
    layout = c.layout_of(x_idx)
    names = [c.out_name(o, layout) for o in outs]
    c.g.node("Split", [c.value(x_idx, layout), c.g.const("split", np.array(sizes, np.int64))], names[0],
             outputs=names, axis=c.axis_nchw(axis, rank, layout))
    for o, n in zip(outs, names):
        c.set_value(o, n, layout)


def _split_op(c: _Converter, op: Any, ins: list, outs: list) -> None:
    axis = int(np.ravel(c.const(ins[0]))[0])
    shape = c.shape(ins[1])
    axis = axis + len(shape) if axis < 0 else axis
    _split(c, op, ins, outs, ins[1], axis, [shape[axis] // len(outs)] * len(outs))


def _split_v(c: _Converter, op: Any, ins: list, outs: list) -> None:
    axis = int(np.ravel(c.const(ins[2]))[0])
    shape = c.shape(ins[0])
    axis = axis + len(shape) if axis < 0 else axis
    _split(c, op, ins, outs, ins[0], axis, [c.shape(o)[axis] for o in outs])


def _gather(c: _Converter, op: Any, ins: list, outs: list) -> None:
    axis = int(c.options(op, "GatherOptions").Axis())
    c.emit(outs[0], "plain", "Gather", [c.value(ins[0], "plain"),
                                        c.g.const("indices", c.const(ins[1]).astype(np.int64))], axis=axis)


def _batch_matmul(c: _Converter, op: Any, ins: list, outs: list) -> None:
    o = c.options(op, "BatchMatMulOptions")
    xs = []
    for i, adj in zip(ins[:2], (o.AdjX(), o.AdjY())):
        v = c.value(i, "plain")
        if adj:
            r = len(c.shape(i))
            v = c.g.node("Transpose", [v], perm=list(range(r - 2)) + [r - 1, r - 2])
        xs.append(v)
    c.emit(outs[0], "plain", "MatMul", xs)


def _quantize(c: _Converter, op: Any, ins: list, outs: list) -> None:
    """QUANTIZE / DEQUANTIZE change the number format, not the value: constants fold, activations alias."""
    if c.is_const(ins[0]):
        c.consts[outs[0]] = c.const(ins[0]).astype(np.float32)
        return
    name, layout = c.values[ins[0]]
    c.values[outs[0]] = (name, layout if len(c.shape(outs[0])) == 4 else "plain")
    if name not in c.quant:  # a float graph input quantised on entry takes that quantisation
        c.record_quant(name, outs[0])


def _mean_of_hw(c: _Converter, op: Any, ins: list, outs: list) -> None:
    _reduce("ReduceMean")(c, op, ins, outs)


_HANDLERS: Dict[str, Callable] = {
    "CONV_2D": _conv2d, "DEPTHWISE_CONV_2D": _depthwise, "TRANSPOSE_CONV": _transpose_conv,
    "FULLY_CONNECTED": _fully_connected, "AVERAGE_POOL_2D": _pool("AveragePool"),
    "MAX_POOL_2D": _pool("MaxPool"), "ADD": _binary("Add"), "SUB": _binary("Sub"), "MUL": _binary("Mul"),
    "DIV": _binary("Div"), "MAXIMUM": _binary("Max"), "MINIMUM": _binary("Min"),
    "CONCATENATION": _concat, "RESHAPE": _reshape, "SQUEEZE": _reshape, "EXPAND_DIMS": _reshape,
    "TRANSPOSE": _transpose,
    "RESIZE_BILINEAR": _resize("linear", "ResizeBilinearOptions"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("nearest", "ResizeNearestNeighborOptions"),
    "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _mirror_pad, "MEAN": _mean_of_hw, "SUM": _reduce("ReduceSum"),
    "REDUCE_MAX": _reduce("ReduceMax"), "SOFTMAX": _softmax, "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"), "RELU": _unary("Relu"), "RELU6": _clip(0.0, 6.0), "RELU_N1_TO_1": _clip(-1.0, 1.0),
    "RELU_0_TO_1": _clip(0.0, 1.0), "HARD_SWISH": _unary("HardSwish"), "LEAKY_RELU": _leaky_relu,
    "PRELU": _prelu, "ELU": _unary("Elu", alpha=1.0), "EXP": _unary("Exp"), "ABS": _unary("Abs"),
    "NEG": _unary("Neg"), "SQRT": _unary("Sqrt"), "STRIDED_SLICE": _strided_slice, "SLICE": _slice,
    "SPLIT": _split_op, "SPLIT_V": _split_v, "GATHER": _gather, "BATCH_MATMUL": _batch_matmul,
    "DEQUANTIZE": _quantize, "QUANTIZE": _quantize, "SHAPE": _shape, "PACK": _pack,
}


def supported_operators() -> List[str]:
    return sorted(_HANDLERS)


def convert_tflite(model: Any, input_is_nchw: bool = False) -> Conversion:
    """Read a .tflite file (path or bytes) into an ONNX model plus its fixed quantisation parameters."""
    if isinstance(model, (bytes, bytearray)):
        data, name = bytes(model), "model"
    else:
        path = check_file(model, "Model file")
        data, name = path.read_bytes(), Path(path).stem
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise BuildError(f"{name!r} is not a TFLite model (no 'TFL3' identifier); pass a .tflite file")
    conversion = _Converter(data, name, input_is_nchw).run()
    LOG.info("TFLite %s: %d ONNX nodes, %d pre-quantised tensors", name, len(conversion.model.graph.node),
             len(conversion.quant))
    return conversion
