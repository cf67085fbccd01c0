"""Graph rewrites before quantization (rknnlink.model.rewrite): each pattern fires, the fp32 result on the
simulator is unchanged against onnxruntime on the original graph, and it does not fire where it must not."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rknnlink.model import format as fmt
from rknnlink.model.builder import BuildConfig, build, load_onnx

try:
    from rknnlink.runtime import RuntimeLibrary

    LIB = RuntimeLibrary.load(backend="sim")
except Exception:  # the simulator is not built
    LIB = None

pytestmark = pytest.mark.skipif(LIB is None, reason="simulated NPU library unavailable")
RNG = np.random.default_rng(7)


class G:
    """Tiny graph writer: ``g.op('Add', x, g.c(3.0))`` returns the output name."""

    def __init__(self, shape: list) -> None:
        self.nodes, self.inits, self.k = [], [], 0
        self.shape = shape
        self.x = "x"

    def c(self, value) -> str:
        self.k += 1
        name = f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.k += 1
        out = f"{op_type.lower()}{self.k}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"n_{out}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, bias: bool = True) -> str:
        ins = [x, self.c(RNG.normal(0, 0.4, (cout, cin, 3, 3)))] + ([self.c(RNG.normal(0, 0.1, cout))] if bias else [])
        return self.op("Conv", *ins, kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def model(self, outputs: list, opset: int = 13) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "rw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                                  self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def check(model: onnx.ModelProto, scale: float = 3.0) -> list:
    """Build fp32, run on the simulator and onnxruntime, assert equal; return the simulator's layers."""
    x = (RNG.standard_normal(model.graph.input[0].type.tensor_type.shape.dim and
                             [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]) * scale)
    x = x.astype(np.float32)
    result = build(load_onnx(model), BuildConfig(float_dtype="float32", progress=False), False, None)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with LIB.init(result.data) as ctx:
        got = ctx.infer([x], formats=["nchw"])
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g.reshape(r.shape), r, rtol=1e-4, atol=1e-4)
    names = [o.name for o in model.graph.output]
    assert [result.sim_model.tensors[o.tensor].name for o in result.sim_model.outputs] == names
    return [(op.op_type, op.act) for op in result.sim_model.ops]


# ------------------------------------------------------------------------------------ affine folding


def test_paddle_affine_conv_mul_add_folds_into_conv():
    g = G([1, 3, 8, 8])
    y = g.op("Add", g.op("Mul", g.conv("x", 3, 4), g.c(1.7)), g.c(-0.3))
    assert check(g.model([g.op("Relu", y)])) == [("Conv", "Relu")]


@pytest.mark.parametrize("op,const_first", [("Mul", False), ("Div", False), ("Add", True), ("Sub", False),
                                            ("Sub", True)])
def test_per_channel_constant_folds(op, const_first):
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 4, bias=False)
    c = g.c(RNG.uniform(0.5, 2.0, (1, 4, 1, 1)))
    assert check(g.model([g.op(op, *((c, y) if const_first else (y, c)))])) == [("Conv", None)]


def test_conv_transpose_and_gemm_fold():
    g = G([1, 4, 5, 5])
    w = g.c(RNG.normal(0, 0.3, (4, 3, 2, 2)))
    y = g.op("Mul", g.op("ConvTranspose", "x", w, kernel_shape=[2, 2], strides=[2, 2]), g.c([[[0.5]], [[2]], [[-1]]]))
    assert check(g.model([y])) == [("ConvTranspose", None)]
    g = G([2, 6])
    y = g.op("Gemm", "x", g.c(RNG.normal(0, 0.5, (5, 6))), g.c(RNG.normal(0, 0.1, 5)), transB=1)
    assert check(g.model([g.op("Sub", y, g.c(RNG.normal(0, 1, 5)))])) == [("Gemm", None)]


def test_affine_does_not_fold_where_it_must_not():
    # Mul by a non-constant tensor
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 3)
    assert check(g.model([g.op("Mul", y, "x")])) == [("Conv", None), ("Mul", None)]
    # the Conv output has a second consumer
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 3)
    assert check(g.model([g.op("Add", g.op("Mul", y, g.c(2.0)), y)])) == [("Conv", None), ("Mul", None),
                                                                          ("Add", None)]
    # a constant that varies along a spatial axis, and c / y
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 3)
    assert check(g.model([g.op("Mul", y, g.c(RNG.uniform(1, 2, (1, 1, 6, 1))))])) == [("Conv", None), ("Mul", None)]
    g = G([1, 3, 6, 6])
    y = g.op("Relu", g.conv("x", 3, 3))
    assert check(g.model([g.op("Div", g.c(2.0), g.op("Add", y, g.c(1.0)))])) == [("Conv", "Relu"), ("Add", None),
                                                                                 ("Div", None)]
    # the intermediate tensor is a graph output
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 3)
    assert check(g.model([y, g.op("Mul", y, g.c(2.0))])) == [("Conv", None), ("Mul", None)]


# ------------------------------------------------------------------------------ HardSigmoid/Swish


def test_decomposed_hard_sigmoid_and_hard_swish_fuse():
    g = G([1, 4, 6, 6])
    hsig = g.op("Div", g.op("Clip", g.op("Add", "x", g.c(3.0)), g.c(0.0), g.c(6.0)), g.c(6.0))
    assert check(g.model([hsig])) == [("HardSigmoid", None)]
    g = G([1, 4, 6, 6])  # x * relu6(x + 3) / 6, the opset < 14 export of HardSwish
    hsw = g.op("Div", g.op("Mul", "x", g.op("Clip", g.op("Add", "x", g.c(3.0)), g.c(0.0), g.c(6.0))), g.c(6.0))
    assert check(g.model([hsw])) == [("HardSwish", None)]
    g = G([1, 4, 6, 6])  # torch's opset-13 export: x * HardSigmoid(x; 1/6, 0.5)
    hsw = g.op("Mul", "x", g.op("HardSigmoid", "x", alpha=1 / 6, beta=0.5))
    assert check(g.model([hsw])) == [("HardSwish", None)]
    g = G([1, 4, 6, 6])  # Paddle's hardsigmoid: clip(0.2 x + 0.5, 0, 1)
    y = g.op("Clip", g.op("Add", g.op("Mul", "x", g.c(0.2)), g.c(0.5)), g.c(0.0), g.c(1.0))
    assert check(g.model([y])) == [("HardSigmoid", None)]


def test_hard_activations_do_not_fuse_where_they_must_not():
    g = G([1, 4, 6, 6])  # Add 2, not 3
    y = g.op("Div", g.op("Clip", g.op("Add", "x", g.c(2.0)), g.c(0.0), g.c(6.0)), g.c(6.0))
    assert check(g.model([y])) == [("Add", "Clip"), ("Div", None)]  # only the usual activation fusion
    g = G([1, 4, 6, 6])  # the HardSigmoid's input is not the multiplied tensor
    hs = g.op("HardSigmoid", g.op("Relu", "x"), alpha=1 / 6, beta=0.5)
    assert check(g.model([g.op("Mul", "x", hs)])) == [("Relu", None), ("HardSigmoid", None), ("Mul", None)]
    g = G([1, 4, 6, 6])  # the inner Clip output is also a graph output
    clip = g.op("Clip", g.op("Add", "x", g.c(3.0)), g.c(0.0), g.c(6.0))
    assert check(g.model([clip, g.op("Div", clip, g.c(6.0))])) == [("Add", "Clip"), ("Div", None)]


def test_silu_still_fuses_after_the_rewrites():
    g = G([1, 3, 6, 6])
    y = g.conv("x", 3, 4)
    assert check(g.model([g.op("Mul", y, g.op("Sigmoid", y))])) == [("Conv", "SiLU")]


# ------------------------------------------------------------------------ GELU / LayerNorm / Mish


def _needs(op: str):
    return pytest.mark.skipif(op not in fmt.OP_TYPES, reason=f"the simulator has no {op} layer yet")


def _gelu_erf(g: G, x: str) -> str:
    e = g.op("Erf", g.op("Div", x, g.c(math.sqrt(2.0))))
    return g.op("Mul", g.op("Mul", x, g.op("Add", e, g.c(1.0))), g.c(0.5))


def _gelu_tanh(g: G, x: str) -> str:
    inner = g.op("Add", x, g.op("Mul", g.op("Pow", x, g.c(3.0)), g.c(0.044715)))
    t = g.op("Tanh", g.op("Mul", inner, g.c(math.sqrt(2 / math.pi))))
    return g.op("Mul", g.op("Mul", g.c(0.5), x), g.op("Add", t, g.c(1.0)))


@_needs("Gelu")
@pytest.mark.parametrize("form", [_gelu_erf, _gelu_tanh])
def test_decomposed_gelu_fuses(form):
    g = G([1, 8, 16])
    assert check(g.model([form(g, "x")])) == [("Gelu", None)]


@_needs("Gelu")
def test_gelu_does_not_fuse_with_a_wrong_constant():
    g = G([1, 8, 16])
    e = g.op("Erf", g.op("Div", "x", g.c(2.0)))
    y = g.op("Mul", g.op("Mul", "x", g.op("Add", e, g.c(1.0))), g.c(0.5))
    assert ("Gelu", None) not in check(g.model([y]))


def _layernorm(g: G, x: str, affine: bool = True, square: str = "Pow") -> str:
    mean = g.op("ReduceMean", x, axes=[-1])
    d = g.op("Sub", x, mean)
    sq = g.op("Pow", d, g.c(2.0)) if square == "Pow" else g.op("Mul", d, d)
    std = g.op("Sqrt", g.op("Add", g.op("ReduceMean", sq, axes=[-1]), g.c(1e-5)))
    y = g.op("Div", d, std)
    if affine:
        y = g.op("Add", g.op("Mul", y, g.c(RNG.uniform(0.5, 1.5, 16))), g.c(RNG.normal(0, 0.2, 16)))
    return y


@_needs("LayerNormalization")
@pytest.mark.parametrize("affine,square", [(True, "Pow"), (False, "Mul")])
def test_decomposed_layernorm_fuses(affine, square):
    g = G([1, 8, 16])
    assert check(g.model([_layernorm(g, "x", affine, square)])) == [("LayerNormalization", None)]


@_needs("LayerNormalization")
def test_layernorm_does_not_fuse_when_the_mean_is_reused():
    g = G([1, 8, 16])
    mean = g.op("ReduceMean", "x", axes=[-1])
    d = g.op("Sub", "x", mean)
    std = g.op("Sqrt", g.op("Add", g.op("ReduceMean", g.op("Pow", d, g.c(2.0)), axes=[-1]), g.c(1e-5)))
    layers = check(g.model([g.op("Div", d, std), mean]))
    assert ("LayerNormalization", None) not in layers


@_needs("Mish")
def test_mish_fuses():
    g = G([1, 4, 6, 6])
    assert check(g.model([g.op("Mul", "x", g.op("Tanh", g.op("Softplus", "x")))])) == [("Mish", None)]


# --------------------------------------------------------------------------- Linear (MatMul + bias)


def _linear(g: G, x: str, k: int, n: int, bias_first: bool = False, bias_shape: tuple = None) -> str:
    w, b = g.c(RNG.normal(0, 0.3, (k, n))), g.c(RNG.normal(0, 0.5, bias_shape or (n,)))
    mm = g.op("MatMul", x, w)
    return g.op("Add", b, mm) if bias_first else g.op("Add", mm, b)


@pytest.mark.parametrize("shape,bias_first", [([1, 6, 8], False), ([1, 6, 8], True), ([6, 8], False)])
def test_matmul_bias_add_becomes_gemm(shape, bias_first):
    g = G(shape)
    y = g.op("Relu", _linear(g, "x", 8, 5, bias_first))
    layers = check(g.model([y]))
    assert ("Gemm", "Relu") in layers and "MatMul" not in [t for t, _ in layers]
    assert [t for t, _ in layers].count("Reshape") == (2 if len(shape) == 3 else 0)


def test_matmul_bias_add_does_not_fuse_where_it_must_not():
    g = G([1, 6, 8])
    shared = g.op("MatMul", "x", g.c(RNG.normal(0, 0.3, (8, 5))))
    a = g.op("Add", shared, g.c(RNG.normal(0, 0.5, 5)))          # the product is also read elsewhere
    rows = _linear(g, "x", 8, 5, bias_shape=(6, 5))               # bias varies along the rows
    act = g.op("MatMul", "x", g.op("Transpose", "x", perm=[0, 2, 1]))  # B is an activation
    two = g.op("Add", act, g.c(RNG.normal(0, 0.5, 6)))
    layers = [t for t, _ in check(g.model([a, shared, rows, two]))]
    assert "Gemm" not in layers and layers.count("MatMul") == 3


def test_layer_scale_after_a_linear_folds_into_the_gemm():
    """ConvNeXt: Linear -> Mul(gamma per channel) -> residual Add; the Mul goes into W and the bias."""
    g = G([1, 4, 4, 8])
    y = g.op("Sub", g.op("Mul", _linear(g, "x", 8, 8), g.c(RNG.normal(0, 0.5, 8))), g.c(RNG.normal(0, 1, 8)))
    layers = [t for t, _ in check(g.model([g.op("Add", "x", y)]))]
    assert layers == ["Reshape", "Gemm", "Reshape", "Add"]
