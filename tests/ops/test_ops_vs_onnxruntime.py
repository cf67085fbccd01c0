"""Every simulator operator against onnxruntime: one small ONNX model per operator and attribute
variant (onnx.helper), converted by rknnlink.model to fp32, fp16 and int8, run on the simulated NPU and
compared with onnxruntime fp32 on the same input.

Tolerances: fp32 1e-4 relative to the output's magnitude; fp16 3e-3 (inputs, weights and every output
are rounded to binary16); int8 cosine >= 0.99 (single op, calibrated on the test input's distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model.builder import BuildConfig, build

FP32_TOL, FP16_TOL, INT8_COS = 1e-4, 3e-3, 0.99


@dataclass
class Case:
    """One single-node model: float graph inputs (shapes), constant inputs by slot, attributes."""

    name: str
    op: str
    inputs: list
    consts: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    opset: int = 13
    gen: Optional[Callable[[np.random.Generator, tuple], np.ndarray]] = None
    post: Optional[str] = None  # a fused activation node after the op (Relu, Clip, LeakyRelu, Sigmoid)
    int8: bool = True
    n_out: int = 1
    in_types: dict = field(default_factory=dict)   # graph input k -> TensorProto type (default FLOAT)
    gens: dict = field(default_factory=dict)       # graph input k -> generator (default: gen)
    exact: bool = False  # integer/boolean results: equal in fp32, nearly all equal in fp16/int8


def _rng_w(shape: tuple, seed: int = 0, scale: float = 0.5) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0.0, scale, shape)).astype(np.float32)


def positive(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return np.abs(rng.normal(0.0, 1.0, shape)).astype(np.float32) + 0.1


def away_from_zero(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    x = rng.normal(0.0, 1.0, shape).astype(np.float32)
    return np.where(x < 0, x - 0.5, x + 0.5).astype(np.float32)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def indices(high: int, low: int = 0) -> Callable:
    def gen(rng: np.random.Generator, shape: tuple) -> np.ndarray:
        return rng.integers(low, high, shape).astype(np.int64)
    return gen


def booleans(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.random(shape) < 0.5


def spread(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Distinct values at least 0.05 apart (selections and comparisons stable under fp16/int8 rounding)."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float32) * 0.05 - n * 0.025).reshape(shape)


def wide(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(-4.0, 4.0, shape).astype(np.float32)


F = np.float32
B, I64 = TensorProto.BOOL, TensorProto.INT64
LN_W, LN_B = _rng_w((16,), 20) + 1.0, _rng_w((16,), 21, 0.1)
TRANSFORMER_CASES = [
    # normalisations (opset 17 LayerNormalization, 18/21 GroupNormalization)
    Case("layernorm_last", "LayerNormalization", [[2, 5, 16]], {1: LN_W, 2: LN_B}, dict(axis=-1, epsilon=1e-6),
         opset=17),
    Case("layernorm_axis1_noscale_bias", "LayerNormalization", [[2, 4, 2, 2]], {1: np.ones((4, 2, 2), F)},
         dict(axis=1), opset=17),
    Case("layernorm_bcast_scale", "LayerNormalization", [[1, 3, 4, 8]],
         {1: _rng_w((1, 8), 22) + 1, 2: _rng_w((8,), 23)},
         dict(axis=2), opset=17),
    Case("groupnorm_3groups", "GroupNormalization", [[2, 6, 4, 4]], {1: _rng_w((6,), 24) + 1, 2: _rng_w((6,), 25)},
         dict(num_groups=3, epsilon=1e-5), opset=21),
    # opset 18-20: scale and bias hold one value per group (broadcast over the group's channels)
    Case("groupnorm_opset18_per_group", "GroupNormalization", [[2, 6, 4, 4]],
         {1: _rng_w((3,), 34) + 1, 2: _rng_w((3,), 35)}, dict(num_groups=3, epsilon=1e-5), opset=18),
    Case("groupnorm_opset20_one_group", "GroupNormalization", [[1, 4, 3, 5]],
         {1: _rng_w((1,), 36) + 1, 2: _rng_w((1,), 37)}, dict(num_groups=1), opset=20),
    Case("groupnorm_opset21", "GroupNormalization", [[1, 8, 5, 3]], {1: _rng_w((8,), 26) + 1, 2: _rng_w((8,), 27)},
         dict(num_groups=2), opset=21),
    Case("instancenorm", "InstanceNormalization", [[2, 3, 5, 5]], {1: _rng_w((3,), 28) + 1, 2: _rng_w((3,), 29)},
         dict(epsilon=1e-5)),
    Case("instancenorm_1d", "InstanceNormalization", [[1, 4, 12]], {1: _rng_w((4,), 30) + 1, 2: _rng_w((4,), 31)}),
    # activations and unary maths
    Case("erf", "Erf", [[1, 3, 5, 5]]),
    Case("gelu_none", "Gelu", [[2, 4, 16]], gen=wide, opset=20),
    Case("gelu_tanh", "Gelu", [[2, 4, 16]], attrs=dict(approximate="tanh"), gen=wide, opset=20),
    Case("softplus_wide", "Softplus", [[2, 32]], gen=wide),
    Case("mish", "Mish", [[1, 3, 5, 5]], gen=wide, opset=18),
    Case("reciprocal", "Reciprocal", [[2, 3, 4]], gen=away_from_zero),
    Case("log", "Log", [[2, 3, 4]], gen=positive),
    Case("sin", "Sin", [[2, 3, 4]], gen=wide),
    Case("cos", "Cos", [[2, 3, 4]], gen=wide),
    Case("pow_const_exponent_half", "Pow", [[2, 3, 4]], {1: np.array(0.5, F)}, gen=positive),
    Case("pow_two_inputs", "Pow", [[2, 3, 4], [3, 4]], gens={1: lambda r, s: r.uniform(0.5, 2.0, s).astype(F)},
         gen=positive),
    Case("max_const", "Max", [[2, 3, 4]], {1: np.array(0.2, F)}),
    Case("min3", "Min", [[2, 3, 4], [4], [3, 1]]),
    # comparisons, logic and selection (booleans as float 0/1)
    Case("equal_const", "Equal", [[2, 3, 4]], {1: np.array(1.0, F)},
         gen=lambda r, s: r.integers(0, 3, s).astype(F), int8=False),
    Case("equal_integers", "Equal", [[2, 3, 4], [3, 4]], in_types={0: I64, 1: I64}, gen=indices(3)),
    Case("greater", "Greater", [[2, 3, 4], [3, 4]], gen=spread),
    Case("greater_or_equal", "GreaterOrEqual", [[2, 3, 4]], {1: np.array(0.025, F)}, gen=spread, opset=16),
    Case("less", "Less", [[2, 3, 4], [4]], gen=spread),
    Case("less_or_equal", "LessOrEqual", [[2, 3, 4]], {1: np.array(0.025, F)}, gen=spread, opset=16),
    Case("not", "Not", [[2, 3, 4]], in_types={0: B}, gens={0: booleans}),
    Case("and", "And", [[2, 3, 4], [3, 4]], in_types={0: B, 1: B}, gen=booleans),
    Case("or", "Or", [[2, 3, 4], [4]], in_types={0: B, 1: B}, gen=booleans),
    Case("xor", "Xor", [[2, 3, 4], [2, 3, 4]], in_types={0: B, 1: B}, gen=booleans),
    Case("where_bcast", "Where", [[2, 1, 4], [2, 3, 4], [3, 1]], in_types={0: B}, gens={0: booleans}),
    Case("where_const_fill", "Where", [[1, 1, 4, 4], [2, 2, 4, 4]], {2: np.array(-3.0, F)}, in_types={0: B},
         gens={0: booleans}),
    # data movement and indexing
    Case("expand", "Expand", [[3, 1]], {1: i64(2, 3, 4)}),
    Case("expand_same_rank", "Expand", [[1, 4, 1, 3]], {1: i64(2, 1, 5, 1)}),
    Case("tile", "Tile", [[2, 3, 4]], {1: i64(1, 2, 3)}),
    Case("tile_first", "Tile", [[2, 3]], {1: i64(3, 1)}),
    Case("cast_to_int64", "Cast", [[2, 3, 4]], attrs=dict(to=TensorProto.INT64), gen=wide),
    Case("cast_to_float16", "Cast", [[2, 3, 4]], attrs=dict(to=TensorProto.FLOAT16), gen=wide),
    Case("cast_bool_to_float", "Cast", [[2, 3, 4]], attrs=dict(to=TensorProto.FLOAT), in_types={0: B},
         gens={0: booleans}),
    Case("cast_to_bool", "Cast", [[2, 3, 4]], attrs=dict(to=TensorProto.BOOL),
         gen=lambda r, s: r.integers(-1, 2, s).astype(F), int8=False),
    Case("cast_int_to_float", "Cast", [[5, 6]], attrs=dict(to=TensorProto.FLOAT), in_types={0: I64},
         gens={0: indices(100, -100)}),
    Case("gather_embedding", "Gather", [[10, 8], [2, 5]], attrs=dict(axis=0), in_types={1: I64},
         gens={1: indices(10)}),
    Case("gather_runtime_axis1_negative", "Gather", [[2, 6, 3], [4]], attrs=dict(axis=1), in_types={1: I64},
         gens={1: indices(6, -6)}),
    Case("gather_elements_const", "GatherElements", [[3, 4]], {1: np.array([[0, 2], [1, -1], [3, 0]], np.int64)},
         dict(axis=1)),
    Case("gather_elements_runtime_axis0", "GatherElements", [[4, 3], [2, 3]], attrs=dict(axis=0),
         in_types={1: I64}, gens={1: indices(4)}),
    Case("argmax_keepdims", "ArgMax", [[2, 5, 7]], attrs=dict(axis=1), gen=spread),
    Case("argmax_last_nokeep", "ArgMax", [[3, 6]], attrs=dict(axis=-1, keepdims=0, select_last_index=1),
         gen=lambda r, s: r.integers(0, 3, s).astype(F), int8=False),
    Case("argmin", "ArgMin", [[2, 5, 7]], attrs=dict(axis=2, keepdims=0), gen=spread),
    Case("topk_largest", "TopK", [[2, 10]], {1: i64(3)}, dict(axis=-1), gen=spread, n_out=2),
    Case("topk_smallest_axis0", "TopK", [[6, 4]], {1: i64(2)}, dict(axis=0, largest=0), gen=spread, n_out=2),
    # reductions
    Case("reducesum_keep0", "ReduceSum", [[2, 3, 4, 5]], {1: i64(1, 3)}, attrs=dict(keepdims=0)),
    Case("reducemin", "ReduceMin", [[2, 3, 4, 5]], attrs=dict(axes=[2, 3], keepdims=1)),
    Case("reducemin_opset18", "ReduceMin", [[2, 3, 4]], {1: i64(-1)}, attrs=dict(keepdims=0), opset=18),
    Case("reduceprod", "ReduceProd", [[2, 3, 4]], attrs=dict(axes=[1], keepdims=1),
         gen=lambda r, s: r.uniform(0.5, 1.5, s).astype(F)),
    Case("reducel2", "ReduceL2", [[2, 3, 4, 5]], attrs=dict(axes=[1], keepdims=0)),
    Case("reducel2_all", "ReduceL2", [[3, 4]], attrs=dict(keepdims=1)),
    # composite ops decomposed at preparation
    Case("einsum_attention_scores", "Einsum", [[1, 2, 5, 8], [1, 2, 6, 8]], attrs=dict(equation="bhid,bhjd->bhij"),
         opset=12),
    Case("einsum_attention_values", "Einsum", [[1, 2, 5, 6], [1, 2, 6, 8]], attrs=dict(equation="bhij,bhjd->bhid"),
         opset=13),
    Case("einsum_projection", "Einsum", [[2, 5, 8]], {1: _rng_w((8, 6), 32)}, attrs=dict(equation="bnd,dk->bnk")),
    Case("einsum_heads_permuted", "Einsum", [[2, 4, 3, 8], [2, 5, 3, 8]], attrs=dict(equation="bihd,bjhd->bhij")),
    Case("depth_to_space_dcr", "DepthToSpace", [[1, 8, 3, 4]], attrs=dict(blocksize=2)),
    Case("depth_to_space_crd", "DepthToSpace", [[1, 8, 3, 4]], attrs=dict(blocksize=2, mode="CRD")),
    Case("space_to_depth", "SpaceToDepth", [[1, 2, 6, 4]], attrs=dict(blocksize=2)),
] + [
    # recurrent layers: one layer, each direction; T=5, B=2, I=6, H=4
    Case(f"{op.lower()}_{direction}{'_h0' if init else ''}{'_lbr' if lbr and op == 'GRU' else ''}", op,
         [[5, 2, 6]] + ([[d, 2, 4]] if init else []),
         {1: _rng_w((d, g * 4, 6), 40 + g), 2: _rng_w((d, g * 4, 4), 41 + g), 3: _rng_w((d, 2 * g * 4), 42 + g, 0.1),
          **({4: ""} if init else {})},
         dict(hidden_size=4, direction=direction, **({"linear_before_reset": lbr} if op == "GRU" else {})),
         n_out=3 if op == "LSTM" else 2)
    for op, g in (("LSTM", 4), ("GRU", 3))
    for direction, d, init, lbr in (("forward", 1, False, 0), ("reverse", 1, True, 1), ("bidirectional", 2, True, 0),
                                    ("bidirectional", 2, False, 1))
]

CASES = [
    # convolutions
    Case("conv3x3_pad1", "Conv", [[1, 4, 9, 9]], {1: _rng_w((6, 4, 3, 3)), 2: _rng_w((6,), 1)},
         dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    Case("conv_s2_asym_pads", "Conv", [[1, 3, 11, 10]], {1: _rng_w((8, 3, 3, 3))},
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0])),
    Case("conv_dilation2", "Conv", [[1, 3, 12, 12]], {1: _rng_w((5, 3, 3, 3)), 2: _rng_w((5,), 2)},
         dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),
    Case("conv_group2_relu", "Conv", [[1, 6, 8, 8]], {1: _rng_w((4, 3, 3, 3)), 2: _rng_w((4,), 3)},
         dict(kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1]), post="Relu"),
    Case("conv_depthwise_s2_relu6", "Conv", [[1, 16, 14, 14]], {1: _rng_w((16, 1, 3, 3)), 2: _rng_w((16,), 4)},
         dict(kernel_shape=[3, 3], group=16, strides=[2, 2], pads=[1, 1, 1, 1]), post="Clip"),
    Case("conv_pointwise_leaky", "Conv", [[1, 24, 7, 7]], {1: _rng_w((40, 24, 1, 1), 5, 0.2)},
         dict(kernel_shape=[1, 1]), post="LeakyRelu"),
    Case("conv_sigmoid", "Conv", [[1, 3, 6, 6]], {1: _rng_w((4, 3, 3, 3))}, dict(kernel_shape=[3, 3]), post="Sigmoid"),
    Case("conv1d", "Conv", [[1, 4, 20]], {1: _rng_w((6, 4, 5)), 2: _rng_w((6,), 6)},
         dict(kernel_shape=[5], strides=[2], pads=[2, 1])),
    Case("conv3d", "Conv", [[1, 2, 5, 6, 6]], {1: _rng_w((3, 2, 3, 3, 3))},
         dict(kernel_shape=[3, 3, 3], pads=[1, 0, 1, 1, 0, 1])),
    Case("convtranspose_s2", "ConvTranspose", [[1, 4, 5, 5]], {1: _rng_w((4, 3, 3, 3)), 2: _rng_w((3,), 7)},
         dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    Case("convtranspose_group2", "ConvTranspose", [[1, 4, 4, 4]], {1: _rng_w((4, 2, 2, 2))},
         dict(kernel_shape=[2, 2], strides=[2, 2], group=2)),
    # matrix products
    Case("gemm_transb_bias", "Gemm", [[2, 32]], {1: _rng_w((20, 32), 8, 0.2), 2: _rng_w((20,), 9)}, dict(transB=1)),
    Case("gemm_transa_alpha_beta", "Gemm", [[16, 3]], {1: _rng_w((16, 10), 10, 0.2), 2: _rng_w((10,), 11)},
         dict(transA=1, alpha=0.5, beta=2.0)),
    Case("matmul_const", "MatMul", [[3, 5, 12]], {1: _rng_w((12, 7), 12)}),
    Case("matmul_two_inputs_bcast", "MatMul", [[2, 1, 4, 6], [3, 6, 5]]),
    # a folded constant on the left (DETR's object queries times the encoder's keys), batch-broadcast
    Case("matmul_const_a_bcast", "MatMul", [[2, 3, 6, 5]], {0: _rng_w((3, 4, 6), 14)}),
    Case("gemm_const_a", "Gemm", [[6, 5]], {0: _rng_w((4, 6), 15), 2: _rng_w((5,), 16)}),
    # element-wise with broadcasting
    Case("add_channel_const", "Add", [[1, 3, 4, 5]], {1: _rng_w((3, 1, 1), 13)}),
    Case("add_two_inputs", "Add", [[2, 3, 4], [3, 1]]),
    Case("sub_scalar", "Sub", [[1, 3, 4, 5]], {1: np.array(0.3, F)}),
    Case("mul_bcast", "Mul", [[2, 1, 4], [3, 1]]),
    Case("div_const", "Div", [[1, 3, 4, 5]], {1: np.array([2.0, -0.5, 4.0], F).reshape(3, 1, 1)}),
    Case("sum3", "Sum", [[2, 3, 4], [4], [3, 1]]),
    # rows of 256 elements and more: int8 per-row tables (a per-channel constant, an SE block's gate)
    Case("add_channel_const_rows", "Add", [[1, 4, 16, 20]], {1: _rng_w((4, 1, 1), 17)}),
    Case("mul_gate_rows", "Mul", [[1, 4, 16, 20], [1, 4, 1, 1]]),
    Case("max2", "Max", [[2, 3, 4], [3, 4]]),
    Case("min2", "Min", [[2, 3, 4], [2, 1, 4]]),
    Case("pow_square", "Pow", [[2, 3, 4]], {1: np.array(2.0, F)}, gen=positive),
    Case("prelu_channel", "PRelu", [[1, 3, 4, 4]], {1: np.array([0.1, 0.2, 0.3], F).reshape(3, 1, 1)}),
    # unary
    Case("relu", "Relu", [[1, 3, 5, 5]]),
    Case("clip", "Clip", [[1, 3, 5, 5]], {1: np.array(-0.5, F), 2: np.array(0.8, F)}),
    Case("leakyrelu", "LeakyRelu", [[1, 3, 5, 5]], attrs=dict(alpha=0.2)),
    Case("sigmoid", "Sigmoid", [[1, 3, 5, 5]]),
    Case("hardsigmoid", "HardSigmoid", [[1, 3, 5, 5]], attrs=dict(alpha=0.25, beta=0.4)),
    Case("hardswish", "HardSwish", [[1, 3, 5, 5]], opset=14),
    Case("tanh", "Tanh", [[1, 3, 5, 5]]),
    Case("exp", "Exp", [[1, 3, 5, 5]]),
    Case("elu", "Elu", [[1, 3, 5, 5]], attrs=dict(alpha=0.7)),
    Case("selu", "Selu", [[1, 3, 5, 5]]),
    Case("neg", "Neg", [[1, 3, 5, 5]]),
    Case("abs", "Abs", [[1, 3, 5, 5]]),
    Case("softplus", "Softplus", [[1, 3, 5, 5]]),
    Case("sqrt", "Sqrt", [[1, 3, 5, 5]], gen=positive),
    # normalisation and reductions
    Case("softmax_last", "Softmax", [[2, 3, 10]]),
    Case("softmax_axis1", "Softmax", [[2, 5, 4]], attrs=dict(axis=1)),
    Case("logsoftmax", "LogSoftmax", [[2, 10]], attrs=dict(axis=-1)),
    Case("batchnorm", "BatchNormalization", [[1, 3, 4, 4]],
         {1: np.array([1.0, 0.5, 2.0], F), 2: np.array([0.1, -0.2, 0.3], F), 3: np.array([0.0, 0.5, -0.5], F),
          4: np.array([1.0, 2.0, 0.5], F)}),
    Case("batchnorm_planes", "BatchNormalization", [[1, 3, 20, 24]],
         {1: np.array([1.0, 0.5, 2.0], F), 2: np.array([0.1, -0.2, 0.3], F), 3: np.array([0.0, 0.5, -0.5], F),
          4: np.array([1.0, 2.0, 0.5], F)}),
    Case("lrn", "LRN", [[1, 6, 4, 4]], attrs=dict(size=3, alpha=1e-2, beta=0.75, bias=1.0)),
    Case("reducemean", "ReduceMean", [[2, 3, 4, 5]], attrs=dict(axes=[2, 3], keepdims=1)),
    Case("reducemax", "ReduceMax", [[2, 3, 4, 5]], attrs=dict(axes=[1], keepdims=0)),
    Case("reducesum", "ReduceSum", [[2, 3, 4, 5]], {1: i64(-1)}, attrs=dict(keepdims=1)),
    # pooling
    Case("maxpool_3x3_s2_p1", "MaxPool", [[1, 3, 9, 9]], attrs=dict(kernel_shape=[3, 3], strides=[2, 2],
                                                                   pads=[1, 1, 1, 1])),
    Case("maxpool_5x5_s1_p2", "MaxPool", [[1, 4, 20, 20]], attrs=dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])),
    Case("maxpool_ceil", "MaxPool", [[1, 2, 8, 8]], attrs=dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    Case("avgpool_exclude_pad", "AveragePool", [[1, 3, 7, 7]],
         attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    Case("avgpool_include_pad", "AveragePool", [[1, 3, 7, 7]],
         attrs=dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    Case("globalavgpool", "GlobalAveragePool", [[1, 8, 5, 6]]),
    Case("globalmaxpool", "GlobalMaxPool", [[1, 8, 5, 6]]),
    # data movement
    Case("concat_axis1", "Concat", [[1, 2, 4, 4], [1, 3, 4, 4]], attrs=dict(axis=1)),
    Case("split_axis1", "Split", [[1, 6, 4]], {1: i64(2, 4)}, attrs=dict(axis=1), n_out=2),
    Case("slice_steps", "Slice", [[2, 6, 8]], {1: i64(1, -1), 2: i64(5, 0), 3: i64(1, 2), 4: i64(2, -3)}),
    Case("reshape", "Reshape", [[2, 3, 4]], {1: i64(4, -1)}),
    Case("flatten", "Flatten", [[2, 3, 4, 5]], attrs=dict(axis=2)),
    Case("transpose", "Transpose", [[2, 3, 4, 5]], attrs=dict(perm=[0, 2, 3, 1])),
    Case("pad_constant", "Pad", [[1, 2, 4, 4]], {1: i64(0, 0, 1, 2, 0, 0, 2, 1), 2: np.array(0.5, F)},
         attrs=dict(mode="constant")),
    Case("pad_reflect", "Pad", [[1, 2, 4, 4]], {1: i64(0, 0, 1, 2, 0, 0, 2, 1)}, attrs=dict(mode="reflect")),
    Case("pad_edge", "Pad", [[1, 2, 4, 4]], {1: i64(0, 0, 1, 2, 0, 0, 2, 1)}, attrs=dict(mode="edge")),
    Case("resize_nearest_x2", "Resize", [[1, 2, 3, 4]], {1: "", 2: np.array([1, 1, 2, 2], F)},
         attrs=dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    Case("resize_nearest_half_pixel", "Resize", [[1, 3, 10, 12]], {1: "", 2: "", 3: i64(1, 3, 25, 7)},
         attrs=dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor")),
    Case("resize_linear", "Resize", [[1, 2, 3, 4]], {1: "", 2: "", 3: i64(1, 2, 7, 9)},
         attrs=dict(mode="linear", coordinate_transformation_mode="half_pixel")),
    Case("gather_axis1", "Gather", [[2, 5, 3]], {1: i64(4, 0, -1, 2)}, attrs=dict(axis=1)),
    Case("squeeze", "Squeeze", [[1, 3, 1, 4]], {1: i64(0, 2)}),
    Case("unsqueeze", "Unsqueeze", [[3, 4]], {1: i64(0, 3)}),
] + TRANSFORMER_CASES


def make_model(case: Case) -> onnx.ModelProto:
    names, inits, graph_inputs, k = [], [], [], 0
    n_slots = len(case.inputs) + len(case.consts)
    for slot in range(n_slots):
        if slot in case.consts:
            value = case.consts[slot]
            if isinstance(value, str):
                names.append(value)
                continue
            names.append(f"c{slot}")
            inits.append(numpy_helper.from_array(np.asarray(value), f"c{slot}"))
        else:
            names.append(f"x{k}")
            graph_inputs.append(helper.make_tensor_value_info(f"x{k}", case.in_types.get(k, TensorProto.FLOAT),
                                                              case.inputs[k]))
            k += 1
    outs = [f"y{i}" for i in range(case.n_out)]
    node_out = ["t"] if case.post else outs
    nodes = [helper.make_node(case.op, names, node_out, name=f"{case.op.lower()}_node", **case.attrs)]
    if case.post == "Clip":
        inits += [numpy_helper.from_array(np.array(0.0, F), "lo"), numpy_helper.from_array(np.array(6.0, F), "hi")]
        nodes.append(helper.make_node("Clip", ["t", "lo", "hi"], outs, name="act"))
    elif case.post == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["t"], outs, name="act", alpha=0.1))
    elif case.post:
        nodes.append(helper.make_node(case.post, ["t"], outs, name="act"))
    graph = helper.make_graph(nodes, case.name, graph_inputs, [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def make_inputs(case: Case, seed: int) -> list:
    rng = np.random.default_rng(seed)
    gen = case.gen or (lambda r, s: r.normal(0.0, 1.0, s).astype(np.float32))
    return [case.gens.get(k, gen)(rng, tuple(shape)) for k, shape in enumerate(case.inputs)]


def run_ort(model: onnx.ModelProto, xs: list) -> list:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {f"x{i}": x for i, x in enumerate(xs)})


def write_dataset(folder: Path, case: Case, n: int = 6) -> Path:
    lines = []
    for s in range(n):
        xs = make_inputs(case, 100 + s)
        files = []
        for i, x in enumerate(xs):
            path = folder / f"s{s}_x{i}.npy"
            np.save(path, x)
            files.append(path.name)
        lines.append(" ".join(files))
    (folder / "dataset.txt").write_text("\n".join(lines) + "\n")
    return folder / "dataset.txt"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / max(1.0, float(np.max(np.abs(ref)))))


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_matches_onnxruntime(case: Case, mode: str, sim_lib, tmp_path: Path):
    if mode == "int8" and not case.int8:
        pytest.skip(f"{case.name} has no int8 form")
    model = make_model(case)
    xs = make_inputs(case, 1)
    refs = run_ort(model, xs)
    cfg = BuildConfig(progress=False, float_dtype="float32" if mode == "fp32" else "float16")
    dataset = write_dataset(tmp_path, case) if mode == "int8" else None
    built = build(model, cfg, mode == "int8", dataset)
    formats = ["nchw" if len(x.shape) == 4 else None for x in xs]
    with sim_lib.init(built.data) as ctx:
        outs = ctx.infer(xs, formats=formats)
    assert len(outs) == len(refs)
    for got, ref in zip(outs, refs):
        got = np.asarray(got).reshape(ref.shape)
        if case.exact or ref.dtype.kind in "iub":
            agree = float(np.mean(got == ref.astype(np.float32)))
            assert agree >= (1.0 if mode == "fp32" else 0.95), f"{case.name} {mode}: {agree:.3f} equal"
            continue
        if mode == "fp32":
            assert rel_error(got, ref) <= FP32_TOL, f"{case.name} fp32 error {rel_error(got, ref):.2e}"
        elif mode == "fp16":
            assert rel_error(got, ref) <= FP16_TOL, f"{case.name} fp16 error {rel_error(got, ref):.2e}"
        else:
            assert cosine(got, ref) >= INT8_COS, f"{case.name} int8 cosine {cosine(got, ref):.5f}"


def test_fused_activation_is_one_layer(sim_lib):
    """Conv followed by Clip(0, 6) runs as one ConvClip layer whose output matches onnxruntime."""
    case = CASES[4]
    model = make_model(case)
    xs = make_inputs(case, 3)
    ref = run_ort(model, xs)[0]
    built = build(model, BuildConfig(progress=False, float_dtype="float32"), False, None)
    with sim_lib.init(built.data) as ctx:
        got = ctx.infer(xs, formats=["nchw"])[0]
        types = [layer.op_type for layer in ctx.layer_infos()]
    assert types == ["ConvClip"], types
    assert rel_error(np.asarray(got).reshape(ref.shape), ref) <= FP32_TOL
