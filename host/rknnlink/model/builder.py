"""ONNX -> rknnlink simulator model: the build the toolkit's ``RKNN.build`` performs, in the open.

Pipeline: :func:`load_onnx` (cut, fix shapes) -> :func:`prepare` (shapes, constant folding, Identity/Dropout
removal, BatchNormalization folding) -> :func:`lower` (explicit attributes, SiLU and activation fusion) ->
calibration (int8 only) -> tensor data types and quantisation -> :func:`write_model`.

Data types per build mode (docs/quantization.md has the reasoning):

* fp32 (``float_dtype='float32'``, our extension): everything FLOAT32, the exact float reference.
* fp16 (``float_dtype='float16'``, the toolkit's float build): activations FLOAT16, weights and other float
  constants FLOAT16, biases and BatchNormalization parameters FLOAT32.
* int8 (``quantized_dtype='w8a8'``): activations int8 asymmetric per tensor (graph inputs with the
  normalised-input range; outputs int8 too, except a graph output a Conv/Gemm writes, which is float16
  from its accumulator: precision.accumulator_outputs); Conv/ConvTranspose/Gemm/MatMul weights int8 *symmetric*
  (zero point 0) per output channel (``quantized_method='channel'``) or per tensor ('layer'); biases int32
  with scale ``s_x * s_w``; other constants stay FLOAT32 (the runtime computes those ops in float).
  Layers named in ``float_layers`` (hybrid quantization) run in float16 with FLOAT16 outputs.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..runtime.platforms import platform_names
from . import format as fmt
from . import range_search
from .bias_correction import CORRECTED_OPS, bias_scales, correct_biases
from .calibration import (
    TensorStats,
    asymmetric_params,
    choose_range,
    quantize_bias,
    quantize_weights,
    quantize_weights_affine,
    shares_input_quantisation,
    weight_error_shift,
)
from .dataset import Sample, read_dataset
from .errors import BuildError, UnsupportedOperatorError
from .lower import INTEGER_VALUE_TYPES, LNode, lower
from .precision import accumulator_outputs, auto_float_layers, fused_links
from .prepare import PreparedGraph, load_onnx, make_session, prepare
from .ranges import clip_activation_ranges
from .rewrite import derived_value, rewrite, source_tensor, view_source
from .weight_rounding import accumulate_hessian, hessian_key, round_weight, rounded_layer_key

LOG = logging.getLogger(__name__)

__all__ = ["BuildConfig", "BuildResult", "BuildError", "UnsupportedOperatorError", "load_onnx", "build",
           "hybrid_quantization_step1", "hybrid_quantization_step2", "read_dataset", "Sample"]

PRODUCER = "rknnlink 0.1.0"
TARGET_PLATFORMS = platform_names()  # the one platform table (runtime_c/src/platforms.c)
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Float16-link readers whose producers get asymmetric per-channel weights (_Assembler.weight_is_asymmetric).
ASYMMETRIC_WEIGHT_READERS = ("Gelu", "LayerNormalization")
BIAS_CORRECTIONS = (None, "off", "analytic", "empirical")
WEIGHT_ROUNDINGS = (None, "nearest", "gptq")


@dataclass
class BuildConfig:
    """The subset of ``RKNN.config(...)`` that shapes a build; names and defaults follow the toolkit."""

    mean_values: Optional[list] = None
    std_values: Optional[list] = None
    quant_img_rgb2bgr: bool = False
    quantized_dtype: str = "w8a8"
    quantized_algorithm: str = "normal"
    quantized_method: str = "channel"
    float_dtype: str = "float16"
    target_platform: str = "rk3588"
    custom_string: Optional[str] = None
    optimization_level: int = 3  # 0 keeps the graph as is: no BatchNormalization folding, no fusion
    progress: bool = True
    # int8 only (rknnlink's extension): cross-layer equalisation (rewrite.equalize_cross_layer); None = default
    # True: every pair, "depthwise": pairs with a depthwise Conv, False: none
    cross_layer_equalization: Optional[bool | str] = None
    # int8 'normal' only (rknnlink's extension): 'auto' clips heavy-tailed activation ranges (model/ranges.py)
    activation_clipping: Optional[str] = None
    # int8 only (rknnlink's extension): None = default ('empirical' with quantized_algorithm 'normal' and with
    # 'mmse' per channel, else 'analytic'), 'analytic' (Nagel 2019, from the weight rounding alone),
    # 'empirical' (analytic, then the measured mean output error layer by layer in the simulator:
    # model/bias_correction.py), 'off'
    bias_correction: Optional[str] = None
    # int8 only (rknnlink's extension): how Conv/Gemm/MatMul weights are rounded onto their scales: None =
    # default (weight_rounding_mode), 'nearest', or 'gptq' (error-compensating, model/weight_rounding.py)
    weight_rounding: Optional[str] = None

    def weight_rounding_mode(self) -> str:
        """weight_rounding with the default resolved (docs/quantization.md, "GPTQ weight rounding")."""
        if self.weight_rounding is not None:
            return self.weight_rounding
        return "nearest"

    def bias_correction_mode(self) -> str:
        """bias_correction with the default resolved: 'empirical' was measured with 'normal' and with 'mmse'
        per channel (the corpus rows in docs/quantization.md: mmse/channel det 0.98769 -> 0.99199, rec
        0.97854 -> 0.98255); kl_divergence and mmse per tensor keep 'analytic' (mmse/layer: rec 0.97344 ->
        0.96706 with it, although det gained)."""
        if self.bias_correction is not None:
            return self.bias_correction
        empirical = self.quantized_algorithm == "normal" or (
            self.quantized_algorithm == "mmse" and self.quantized_method == "channel")
        return "empirical" if empirical else "analytic"

    def equalize(self, quantize: bool) -> bool | str:
        """Which cross-layer equalisation this build runs (False, True or "depthwise"): as set, else the
        default of int8 builds (float builds gain nothing from it)."""
        from .rewrite import cle_default
        if self.optimization_level <= 0:
            return False
        if self.cross_layer_equalization is None:
            return quantize and cle_default(self.quantized_method, self.quantized_algorithm)
        return self.cross_layer_equalization

    def validate(self) -> None:
        """Raise BuildError naming the first bad setting and its allowed values."""
        checks = [("quantized_dtype", ("w8a8",)), ("quantized_algorithm", ("normal", "kl_divergence", "mmse")),
                  ("quantized_method", ("channel", "layer")), ("float_dtype", ("float16", "float32"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise BuildError(f"config {name}={getattr(self, name)!r} is not supported; use one of "
                                 f"{list(allowed)}")
        if (self.target_platform or "rk3588").lower() not in TARGET_PLATFORMS:
            raise BuildError(f"target_platform {self.target_platform!r} is unknown; use one of "
                             f"{list(TARGET_PLATFORMS)}")
        if self.cross_layer_equalization not in (None, True, False, "depthwise"):
            raise BuildError(f"config cross_layer_equalization={self.cross_layer_equalization!r} is not "
                             "supported; use None (the default), True, False or 'depthwise'")
        if self.activation_clipping not in (None, "off", "auto"):
            raise BuildError(f"config activation_clipping={self.activation_clipping!r} is not supported; use "
                             "None, 'off' or 'auto'")
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise BuildError(f"config bias_correction={self.bias_correction!r} is not supported; use one of "
                             f"{list(BIAS_CORRECTIONS)}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise BuildError(f"config weight_rounding={self.weight_rounding!r} is not supported; use one of "
                             f"{list(WEIGHT_ROUNDINGS)}")
        if self.custom_string is not None and len(self.custom_string.encode()) > fmt.MAX_CUSTOM_STRING:
            raise BuildError("custom_string is longer than 1023 bytes; shorten it")

    def per_input(self, values: Optional[list], n_inputs: int, what: str) -> list:
        """Normalise mean/std to one list per input (a flat list is accepted for one input)."""
        if values is None:
            return [None] * n_inputs
        values = list(values)
        if values and not isinstance(values[0], (list, tuple, np.ndarray)):
            values = [values]
        if len(values) != n_inputs:
            raise BuildError(f"config {what} has {len(values)} entries but the model has {n_inputs} inputs; "
                             "give one list per input, e.g. [[123.675, 116.28, 103.53]]")
        return [None if v is None else [float(x) for x in v] for v in values]


@dataclass
class BuildResult:
    """What :func:`build` produces: the file bytes and everything needed to explain them."""

    data: bytes
    sim_model: fmt.SimModel
    prepared_onnx: Any
    tensor_map: dict = field(default_factory=dict)
    quant_params: dict = field(default_factory=dict)
    # tensors cross-layer equalisation divided per channel: name::cle -> (ONNX tensor, divisor per channel)
    rescaled: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- build


def build(model: Any, config: BuildConfig, do_quantization: bool, dataset: str | Path | None = None,
          rknn_batch_size: Optional[int] = None, float_layers: Iterable[str] = frozenset(),
          ranges: Optional[dict] = None, fixed_ranges: Optional[dict] = None) -> BuildResult:
    """Build a simulator model from an ONNX ModelProto (see the module docstring for data types).

    ``dataset`` (dataset.txt) is required for int8 unless ``ranges`` (tensor name -> (min, max), as
    hybrid_quantization_step2 passes them) already fix every activation range. ``float_layers`` names
    layers (ONNX node names or their output tensor names) kept in float16 in an int8 build.
    ``fixed_ranges`` (tensor name -> (min, max)) are a pre-quantised model's own parameters
    (:mod:`rknnlink.model.prequant`): they make the build int8 and win over calibrated ranges; without a
    dataset the other activations take their producer's input range.
    """
    config.validate()
    optimise = config.optimization_level > 0
    pg = prepare(model, fold_batchnorm=optimise)
    do_quantization = do_quantization or bool(fixed_ranges)
    equalize = False if fixed_ranges else config.equalize(do_quantization)  # a pre-quantised model keeps its weights
    nodes = lower_and_rewrite(pg, optimise, equalize)
    stats: dict = {}
    # fp32 values of the Conv/Gemm outputs per calibration sample, for the empirical bias correction
    # (a pre-quantised model keeps its own parameters: no empirical step)
    empirical = config.bias_correction_mode() == "empirical" and not fixed_ranges
    kept: Optional[list] = [] if empirical else None
    if fixed_ranges and ranges is None and dataset is None:
        from .prequant import complete_ranges
        ranges = complete_ranges(pg, nodes, activation_names(pg, nodes), fixed_ranges)
    if do_quantization:
        if ranges is None:
            if dataset is None:
                raise BuildError("build(do_quantization=True) needs dataset='dataset.txt' (one line per "
                                 "calibration sample) or do_quantization=False for a float16 model")
            stats = calibrate(pg, nodes, dataset, config, kept)
        else:
            stats = _stats_from_ranges(pg, nodes, ranges)
        for name, (lo, hi) in (fixed_ranges or {}).items():
            if name in stats:
                stats[name] = TensorStats(min=float(lo), max=float(hi))
    pg1, nodes1 = pg, nodes
    if rknn_batch_size is not None and int(rknn_batch_size) > 1:
        pg, nodes = _batched(model, int(rknn_batch_size), pg, nodes, optimise, equalize)
    mode = "int8" if do_quantization else ("fp16" if config.float_dtype == "float16" else "fp32")
    float_layers = set(float_layers)
    if do_quantization and optimise:
        float_layers |= auto_float_layers(nodes, pg.outputs, stats, config.quantized_algorithm, pg)
    # a pre-quantised model's outputs keep the int8 quantisation its own QuantizeLinear gave them
    float_outputs = not fixed_ranges
    asm = _Assembler(pg, nodes, config, mode, stats, float_layers, int(rknn_batch_size or 1), float_outputs)
    sim = asm.run()
    weight_ratios: dict = {}
    if do_quantization and dataset is not None and ranges is None and not fixed_ranges and range_search.wanted(config):
        sim1 = sim if asm.batch == 1 else _Assembler(pg1, nodes1, config, mode, stats, float_layers, 1).run()
        found = range_search.search_ranges(sim1, pg1, dataset, config, stats)
        if range_search.apply(stats, found) or found.weight_ratios:
            weight_ratios = found.weight_ratios
            asm = _Assembler(pg, nodes, config, mode, stats, float_layers, asm.batch, weight_ratios=weight_ratios)
            sim = asm.run()
    if empirical and asm.empirical_bias_correction() and dataset is not None:
        if asm.batch == 1:
            correct_biases(sim, pg, dataset, config, kept)
        else:
            # measured on the batch-1 model (calibration samples are single frames); the batched model gets
            # the same int32 biases, so its frames compute exactly what a batch-1 build computes
            sim1 = _Assembler(pg1, nodes1, config, mode, stats, float_layers, 1, float_outputs,
                              weight_ratios=weight_ratios).run()
            correct_biases(sim1, pg1, dataset, config, kept)
            corrected = _int32_biases(sim1)
            for name, t in _int32_biases(sim).items():
                if name in corrected and corrected[name].data.shape == t.data.shape:
                    t.data = corrected[name].data
        _refresh_bias_params(sim, asm.quant_params)
    data = fmt.write_model(sim)
    return BuildResult(data=data, sim_model=sim, prepared_onnx=pg.model, tensor_map=asm.tensor_map,
                       quant_params=asm.quant_params,
                       rescaled=dict(pg.rescaled))


def _int32_biases(sim: fmt.SimModel) -> dict:
    """{tensor name: SimTensor} of the int32 biases of the Conv/ConvTranspose/Gemm ops of ``sim``."""
    return {sim.tensors[op.inputs[2]].name: sim.tensors[op.inputs[2]] for op in sim.ops
            if op.op_type in CORRECTED_OPS and len(op.inputs) > 2
            and op.inputs[2] is not None and sim.tensors[op.inputs[2]].dtype == fmt.INT32}


def _refresh_bias_params(sim: fmt.SimModel, quant_params: dict) -> None:
    """The quantization config lists each bias's float values: after the empirical correction, the
    corrected ones (int32 value times its scale)."""
    for name, t in _int32_biases(sim).items():
        qp = quant_params.get(name)
        if qp is None or t.data is None:
            continue
        flat = (t.data.reshape(-1).astype(np.float64) * bias_scales(t)).tolist()
        if qp["qmethod"] == "channel" and len(flat) == len(qp["min"]):
            qp["min"] = qp["max"] = qp["ori_min"] = qp["ori_max"] = [float(v) for v in flat]
        elif qp["qmethod"] == "layer":
            qp["min"] = qp["ori_min"] = [float(min(flat))]
            qp["max"] = qp["ori_max"] = [float(max(flat))]


def lower_and_rewrite(pg: PreparedGraph, optimise: bool, equalize: bool | str = False) -> list:
    """Lower every node; with ``optimise`` (optimization_level > 0) apply the graph rewrites of
    :mod:`.rewrite` (affine folding, pattern fusions, then SiLU/activation fusion; ``equalize``:
    cross-layer equalisation)."""
    nodes = _fold_gemm_scalars(lower(pg, fuse=False), pg)
    return rewrite(nodes, pg, equalize) if optimise else nodes


def activation_names(pg: PreparedGraph, nodes: Sequence[LNode]) -> list:
    """Graph inputs then every operator output, in execution order (the tensors calibration observes)."""
    names = list(pg.inputs)
    for n in nodes:
        names.extend(o for o in n.outputs if o not in names)
    return names


def calibrate(pg: PreparedGraph, nodes: Sequence[LNode], dataset: str | Path, config: BuildConfig,
              keep: Optional[list] = None) -> dict:
    """Run the float prepared graph over dataset.txt and collect per-tensor statistics.

    Two passes for kl_divergence/mmse: ranges first, then histograms over those ranges. ``keep`` (a list)
    receives, per sample, the float32 values of the Conv/ConvTranspose/Gemm outputs, which the empirical
    bias correction compares the int8 model with (no second onnxruntime pass).
    """
    names = activation_names(pg, nodes)
    onnx_names = [n for n in names if source_tensor(pg, n) is None]  # views are reshaped copies of these
    onnx_names += list(dict.fromkeys(s for n in names for s in [source_tensor(pg, n)] if s and s not in onnx_names))
    views = [(n, onnx_names.index(source_tensor(pg, n))) for n in names if source_tensor(pg, n) is not None]
    sess = make_session(pg.model, onnx_names)
    shapes = [pg.shapes[n] for n in pg.inputs]
    mean = config.per_input(config.mean_values, len(pg.inputs), "mean_values")
    std = config.per_input(config.std_values, len(pg.inputs), "std_values")
    stats = {n: TensorStats() for n in names + onnx_names}

    ort_types = {"tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
                 "tensor(bool)": np.bool_}
    feed_types = {i.name: ort_types.get(i.type, np.float32) for i in sess.get_inputs()}

    def run_all(desc: str = "calibration") -> Iterable[list]:
        progress = desc if config.progress else False
        for sample in read_dataset(dataset, shapes, mean, std, config.quant_img_rgb2bgr, progress):
            feeds = {n: x.astype(feed_types.get(n, np.float32)) for n, x in zip(pg.inputs, sample.normalised)}
            values = sess.run(onnx_names, feeds)
            yield values + [derived_value(pg, n, values[k]) for n, k in views]

    # Inputs of Conv/Gemm also get per-channel means: bias correction needs them.
    channel_axis = {n.inputs[0]: (1 if n.op_type == "Conv" else (0 if n.attrs.get("transA") else 1))
                    for n in nodes if n.op_type in ("Conv", "Gemm") and n.inputs[0] in stats}
    # Inputs of the layers whose weights GPTQ rounds get H = sum of x x^T per patch geometry.
    hessian_keys: dict = {}
    if config.weight_rounding_mode() == "gptq":
        for n in nodes:
            w = pg.constants.get(n.inputs[1]) if len(n.inputs) > 1 else None
            key = None if w is None else rounded_layer_key(n.op_type, n.attrs, w)
            if key is not None and n.inputs[0] in stats:
                hessian_keys.setdefault(n.inputs[0], set()).add(key)
    rng = np.random.default_rng(0)  # which positions of a large map H reads (weight_rounding.MAX_PATCH_VALUES)
    count = 0
    names = onnx_names + [n for n, _ in views]
    kept_names = {n.outputs[0] for n in nodes if n.op_type in CORRECTED_OPS}
    for values in run_all():
        count += 1
        if keep is not None:
            keep.append({n: np.asarray(v, np.float32) for n, v in zip(names, values) if n in kept_names})
        for n, v in zip(names, values):
            stats[n].update_range(np.asarray(v))
            if n in channel_axis:
                stats[n].update_channel_mean(np.asarray(v), channel_axis[n])
            for key in hessian_keys.get(n, ()):
                if stats[n].hessians is None:
                    stats[n].hessians = {}
                accumulate_hessian(stats[n].hessians, key, np.asarray(v), rng)
    LOG.info("calibrated %d tensors over %d samples", len(names), count)
    clipping = config.quantized_algorithm == "normal" and config.activation_clipping not in (None, "off")
    if config.quantized_algorithm != "normal" or clipping:
        kinds = ("abs",) if config.quantized_algorithm == "kl_divergence" else ("signed",)
        for values in run_all(f"calibration ({config.quantized_algorithm} histograms)"):
            for n, v in zip(names, values):
                stats[n].update_hist(np.asarray(v), kinds)
    if clipping:
        stats = clip_activation_ranges(stats, config.activation_clipping)
    return stats


def _stats_from_ranges(pg: PreparedGraph, nodes: Sequence[LNode], ranges: dict) -> dict:
    stats = {}
    for n in activation_names(pg, nodes):
        if n not in ranges:
            raise BuildError(f"the quantization config has no range for tensor {n!r}; rerun "
                             "hybrid_quantization_step1 for this model")
        lo, hi = ranges[n]
        stats[n] = TensorStats(min=float(lo), max=float(hi))
    return stats


def _fold_gemm_scalars(nodes: list, pg: PreparedGraph) -> list:
    """Gemm alpha/beta multiply into constant B/C so the int8 bias scale is simply s_x * s_w."""
    for n in nodes:
        if n.op_type != "Gemm":
            continue
        for slot, attr in ((1, "alpha"), (2, "beta")):
            value = n.attrs.get(attr, 1.0)
            name = n.inputs[slot] if slot < len(n.inputs) else None
            if value != 1.0 and name in pg.constants:
                new = f"{name}__{attr}_{n.name}"
                pg.constants[new] = (pg.constants[name] * value).astype(pg.constants[name].dtype)
                pg.shapes[new] = tuple(pg.constants[new].shape)
                n.inputs[slot] = new
                n.attrs[attr] = 1.0
    return nodes


_AXIS_OPS = ("Concat", "Split", "Softmax", "LogSoftmax", "Gather")


def _batched(model: Any, batch: int, pg1: PreparedGraph, nodes1: list, optimise: bool,
             equalize: bool | str = False) -> tuple:
    """Re-prepare with the batch dimension multiplied and check every op is batch-agnostic."""
    from .prepare import real_inputs
    m = copy.deepcopy(model)
    for vi in real_inputs(m):
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            raise BuildError(f"rknn_batch_size needs inputs with a batch dimension; {vi.name!r} is a scalar")
        dims[0].dim_value = dims[0].dim_value * batch
    for o in m.graph.output:  # declared output shapes carry the old batch: let inference redo them
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    try:
        pg = prepare(m, fold_batchnorm=optimise)
        nodes = lower_and_rewrite(pg, optimise, equalize)
    except (BuildError, UnsupportedOperatorError) as exc:
        raise BuildError(f"rknn_batch_size={batch} needs batch-agnostic operators, but with batch {batch} the "
                         f"graph is invalid ({exc}); build with rknn_batch_size=None") from exc
    if [n.op_type for n in nodes] != [n.op_type for n in nodes1]:
        raise BuildError(f"rknn_batch_size={batch}: the graph changes with the batch size; build with "
                         "rknn_batch_size=None")
    for n1, n in zip(nodes1, nodes):
        bad = None
        if n.op_type in _AXIS_OPS and n.attrs.get("axis") == 0:
            bad = "it works along the batch axis"
        elif n.op_type == "Transpose" and n.attrs["perm"][0] != 0:
            bad = "it moves the batch axis"
        elif n.op_type in ("ReduceMean", "ReduceMax", "ReduceSum", "Slice") and 0 in n.attrs.get("axes", []):
            bad = "it works along the batch axis"
        elif n.op_type == "Gemm" and n.attrs.get("transA"):
            bad = "transA moves the batch axis"
        for o1, o in zip(n1.outputs, n.outputs):
            s1, s = pg1.shapes[o1], pg.shapes[o]
            if not s1 or s[0] != s1[0] * batch or s[1:] != s1[1:]:
                want = [s1[0] * batch, *s1[1:]] if s1 else "a batch dimension"
                bad = bad or f"its output {o!r} has shape {list(s)} instead of {want}"
        if bad:
            raise BuildError(f"rknn_batch_size={batch} needs batch-agnostic operators, but {n.onnx_type} "
                             f"{n.name!r} is not ({bad}); build with rknn_batch_size=None and run the frames "
                             "one by one")
    return pg, nodes


# --------------------------------------------------------------------------------------- assembling


class _Assembler:
    """Turns lowered nodes into SimTensors/SimOps with the data types of the build mode."""

    def __init__(self, pg: PreparedGraph, nodes: list, config: BuildConfig, mode: str, stats: dict,
                 float_layers: set, batch: int, float_outputs: bool = True,
                 weight_ratios: Optional[dict] = None) -> None:
        self.pg, self.nodes, self.config, self.mode = pg, nodes, config, mode
        self.stats, self.float_layers, self.batch = stats, float_layers, batch
        self.float_outputs = float_outputs  # Conv/Gemm graph outputs in float16 (precision.accumulator_outputs)
        self.fp32_input_layers: set = set()
        self.sum_inputs: set = set()
        self.links: dict = {}  # float16-linked tensor -> the op type that reads it (precision.fused_links)
        self.tensors: list = []
        self.index: dict = {}
        self.tensor_map: dict = {}
        self.quant_params: dict = {}
        self.act_dtype: dict = {}
        self.weights_q: dict = {}  # (weight name, axis, asymmetric) -> (q, scales, zero points); the bias needs it too
        # weight name -> ratios of max|w| / 127 (one, or one per channel) that range_search chose for it
        self.weight_ratios: dict = dict(weight_ratios or {})
        self._check_float_layers()

    def _check_float_layers(self) -> None:
        known = {n.name for n in self.nodes} | {o for n in self.nodes for o in n.outputs}
        unknown = sorted(set(self.float_layers) - known)
        if unknown:
            raise BuildError(f"float16 layers {unknown} are not layers of the prepared model; use node names "
                             f"such as {[n.name for n in self.nodes[:3]]}")

    def op_is_int8(self, n: LNode) -> bool:
        if self.mode != "int8":
            return False
        return n.name not in self.float_layers and not any(o in self.float_layers for o in n.outputs)

    def input_layers_in_fp32(self, consumers: dict) -> set:
        """fp16 builds: names of the convolutions that read a graph input and run with that input and their
        weights in float32 (their output is float16). The NPU reads the user's image exactly and folds the
        mean/std normalisation into the first layer; an image in [0, 1] has a large mean that the first
        layer's bias cancels, so binary16 rounding of its input and weights becomes per-channel offsets that
        a deep network amplifies (docs/quantization.md, "float16 builds")."""
        if self.mode != "fp16":
            return set()
        names = set()
        for name in self.pg.inputs:
            readers = consumers.get(name, [])
            if readers and all(c.op_type == "Conv" and c.inputs[0] == name for c in readers):
                names.update(c.name for c in readers)
        return names

    def float16_links(self, consumers: dict) -> dict:
        """int8 builds: Conv/Gemm outputs (and views of them) written in float16 because only a residual Add,
        a GELU or a LayerNormalization reads them, which then requantises once, as the NPU's fused layers
        do, or because they are graph outputs (precision.accumulator_outputs: no clipping to the calibrated
        range, no last rounding; not for a pre-quantised model, whose own output quantisation is kept);
        {tensor: reader op type, or precision.OUTPUT_LINK}."""
        if self.mode != "int8":
            return {}
        producer = {o: n for n in self.nodes for o in n.outputs}
        links = fused_links(self.nodes, self.pg.outputs, self.pg.constants, self.pg.shapes)
        if self.float_outputs:
            links.update(accumulator_outputs(self.nodes, self.pg.outputs))
        return {name: reader for name, reader in links.items()
                if self.op_is_int8(producer[name]) and all(self.op_is_int8(c) for c in consumers.get(name, []))}

    def float_type(self) -> int:
        return fmt.FLOAT32 if self.mode == "fp32" else fmt.FLOAT16

    def run(self) -> fmt.SimModel:
        consumers: dict = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    consumers.setdefault(i, []).append(n)
        self.fp32_input_layers = self.input_layers_in_fp32(consumers)
        self.links = self.float16_links(consumers)
        self.sum_inputs = set(self.links)
        for name in self.pg.inputs:
            int8 = any(self.op_is_int8(c) for c in consumers.get(name, []))
            fp32 = any(c.name in self.fp32_input_layers for c in consumers.get(name, []))
            self.add_activation(name, fmt.KIND_INPUT, int8, float32=fp32)
        outputs = set(self.pg.outputs)
        ops = []
        for n in self.nodes:
            ops.append(self.add_op(n, outputs))
        cfg = self.config
        ins = []
        means = cfg.per_input(cfg.mean_values, len(self.pg.inputs), "mean_values")
        stds = cfg.per_input(cfg.std_values, len(self.pg.inputs), "std_values")
        for k, name in enumerate(self.pg.inputs):
            ins.append(self.io_spec(name, means[k], stds[k]))
        outs = []
        for name in self.pg.outputs:
            if name not in self.index or self.tensors[self.index[name]].kind != fmt.KIND_OUTPUT:
                raise BuildError(f"graph output {name!r} is not computed by any operator (it is a constant or "
                                 "an input); remove it from the outputs")
            outs.append(fmt.IoSpec(tensor=self.index[name]))
        return fmt.SimModel(target_platform=(cfg.target_platform or "rk3588").lower(),
                            custom_string=cfg.custom_string or "", producer=PRODUCER,
                            name=self.pg.model.graph.name or "model", build_mode=self.mode,
                            batch_size=self.batch, tensors=self.tensors, ops=ops, inputs=ins, outputs=outs)

    def io_spec(self, name: str, mean: Optional[list], std: Optional[list]) -> fmt.IoSpec:
        shape = self.pg.shapes[name]
        channels = shape[1] if len(shape) >= 2 else 1
        if mean is not None or std is not None:
            mean = list(mean) if mean is not None else [0.0] * channels
            std = list(std) if std is not None else [1.0] * channels
            if len(mean) == 1:
                mean = mean * channels
            if len(std) == 1:
                std = std * channels
            if len(mean) != channels or len(std) != channels or channels > fmt.MAX_NORM_CHANNELS:
                raise BuildError(f"mean/std for input {name!r} have {len(mean)}/{len(std)} values but the input "
                                 f"has {channels} channels (shape {list(shape)})")
            if any(s <= 0 for s in std):
                raise BuildError(f"std_values for input {name!r} must be > 0")
        return fmt.IoSpec(tensor=self.index[name], mean=mean, std=std,
                          reverse_channels=bool(self.config.quant_img_rgb2bgr and len(shape) == 4),
                          layout=fmt.LAYOUT_NHWC if len(shape) == 4 else fmt.LAYOUT_NCHW)

    # ---- tensors

    def add_tensor(self, t: fmt.SimTensor, onnx_name: str) -> int:
        self.index[t.name] = len(self.tensors)
        self.tensors.append(t)
        self.tensor_map[t.name] = view_source(onnx_name) or onnx_name
        return self.index[t.name]

    def add_activation(self, name: str, kind: int, int8: bool, share_from: Optional[str] = None,
                       float32: bool = False) -> int:
        shape = self.pg.shapes[name]
        if self.pg.elem_types.get(name) in INTEGER_VALUE_TYPES or (float32 and not int8):
            # integer/boolean values (indices, masks) stay exact float32 in every mode (docs/model-format.md),
            # and so does an fp16 build's image input (input_layers_in_fp32)
            self.act_dtype[name] = fmt.FLOAT32
            return self.add_tensor(fmt.SimTensor(name, fmt.FLOAT32, shape, kind), name)
        if not int8:
            self.act_dtype[name] = self.float_type()
            return self.add_tensor(fmt.SimTensor(name, self.float_type(), shape, kind), name)
        src = share_from if share_from is not None and self.act_dtype.get(share_from) == fmt.INT8 else None
        if src is not None:
            t_src = self.tensors[self.index[src]]
            scale, zp = t_src.scale, t_src.zero_point
            self.quant_params[name] = dict(self.quant_params[src])
        else:
            st = self.stats.get(name)
            if st is None:
                raise BuildError(f"no calibration statistics for tensor {name!r}")
            algorithm = self.config.quantized_algorithm
            if kind == fmt.KIND_OUTPUT and algorithm in ("kl_divergence", "mmse"):
                # The entropy (or mmse) threshold trades a tensor's rare large values for resolution on the bulk; in a
                # model's output those rare values are the answer (the top logit, a confident score).
                algorithm = "normal"
            lo, hi = choose_range(st, algorithm)
            scale, zp = asymmetric_params(lo, hi)
            self.quant_params[name] = _qp("asym", "layer", "int8", [lo], [hi], [scale], [zp], [st.min], [st.max])
        self.act_dtype[name] = fmt.INT8
        return self.add_tensor(fmt.SimTensor(name, fmt.INT8, shape, kind, scale=scale, zero_point=zp,
                                             qnt_type=fmt.QNT_AFFINE), name)

    def add_constant(self, name: str, arr: np.ndarray, dtype: int, onnx_name: str, **quant: Any) -> int:
        key = name
        k = 1
        while key in self.index:
            existing = self.tensors[self.index[key]]
            probe = fmt.SimTensor(key, dtype, arr.shape, fmt.KIND_CONSTANT, data=arr, **quant)
            if existing == probe:
                return self.index[key]
            key, k = f"{name}#{k}", k + 1
        return self.add_tensor(fmt.SimTensor(key, dtype, arr.shape, fmt.KIND_CONSTANT, data=arr, **quant),
                               onnx_name)

    def const_input(self, n: LNode, slot: int, name: str) -> int:
        arr = np.asarray(self.pg.constants[name])
        int8 = self.op_is_int8(n)
        if arr.dtype.kind in "iub":
            dt = {np.dtype(np.int32): fmt.INT32, np.dtype(np.int64): fmt.INT64, np.dtype(np.bool_): fmt.BOOL,
                  np.dtype(np.int8): fmt.INT8, np.dtype(np.uint8): fmt.UINT8}.get(arr.dtype, fmt.INT64)
            return self.add_constant(name, arr.astype(fmt.NUMPY_DTYPES[dt]), dt, name)
        arr = arr.astype(np.float32)
        if int8 and n.op_type in WEIGHT_OPS and slot == 1:
            return self.quant_weight(n, name, arr)
        if int8 and n.op_type in ("MatMul", "Gemm") and slot == 0:
            # a folded constant left operand (e.g. DETR's object queries) times an activation: the int8
            # GEMM takes int8 on both sides, so it is quantised per tensor like a weight
            return self.quant_weight(n, name, arr, per_tensor=True)
        if int8 and n.op_type in ("Conv", "ConvTranspose", "Gemm") and slot == 2:
            idx = self.quant_bias(n, name, arr)
            if idx is not None:
                return idx
        is_bias = n.op_type in ("Conv", "ConvTranspose", "Gemm") and slot == 2
        if (self.mode == "fp32" or int8 or is_bias or n.op_type == "BatchNormalization"
                or n.name in self.fp32_input_layers):
            return self.add_constant(name, arr, fmt.FLOAT32, name)
        return self.add_constant(name, arr.astype(np.float16), fmt.FLOAT16, name)

    def weight_axis(self, n: LNode, w: np.ndarray) -> Optional[int]:
        if self.config.quantized_method == "layer":
            return None
        if n.op_type == "Conv":
            return 0
        if n.op_type == "ConvTranspose":
            return 1 if n.attrs.get("group", 1) == 1 else None
        if n.op_type == "Gemm":
            return 0 if n.attrs.get("transB", 0) else 1
        return w.ndim - 1 if w.ndim == 2 else None

    def weight_is_asymmetric(self, n: LNode, axis: Optional[int]) -> bool:
        """Per-channel weights of a Conv/Gemm whose output stays float16 for a GELU or LayerNormalization
        (precision.fused_links) are asymmetric (calibration.quantize_weights_affine); all others symmetric.

        RKNN-Toolkit2 2.5.0 quantises every weight so: recomputing its layers from its own int8 inputs
        reproduces its int8 outputs at >= 99.9% of positions with (max - min) / 255 and a zero point per
        channel, against 86-95% with max|w| / 127 (every layer of ResNet-18, ConvNeXt-T and EfficientNet-B0,
        PP-OCRv4's recogniser's first ones). Everywhere, it lost here as often as it gained (16 held-out
        crops: EfficientNet-B0 0.91345 -> 0.90988, ViT-Ti 0.98799 -> 0.98736; ResNet-18 and ConvNeXt-T
        gain). Before a float layer that reads the float16 accumulator no output rounding hides the weight
        rounding; there the finer grid gained on ConvNeXt-T and ViT-Ti (docs/quantization.md has the
        numbers)."""
        return axis is not None and self.links.get(n.outputs[0]) in ASYMMETRIC_WEIGHT_READERS

    def weight_search(self, axis: Optional[int]) -> bool:
        """Whether symmetric weights get calibration.weight_scales' clipping search instead of max|w|:
        with 'mmse' and per-tensor weights only. One scale for a whole layer is set by its widest channel,
        and clipping that channel gives every other one finer steps (PP-OCRv4 rec, mmse/layer: 0.933 ->
        0.965). Per channel the clipped weights' errors are one-signed and add up over the accumulation,
        which the weights' own MSE does not see (rec, mmse/channel: 0.985 -> 0.976)."""
        return self.config.quantized_algorithm == "mmse" and axis is None

    def quantized_weight(self, n: LNode, name: str, w: np.ndarray, axis: Optional[int]) -> tuple:
        """(q, scales, zero points) of a weight, computed once (the bias correction needs them too)."""
        asymmetric = self.weight_is_asymmetric(n, axis)
        key = (name, axis, asymmetric)
        if key not in self.weights_q:
            if asymmetric:
                self.weights_q[key] = quantize_weights_affine(w, axis)
            else:
                q, scales = quantize_weights(w, axis, search=self.weight_search(axis),
                                             ratios=self.weight_ratios.get(name))
                q = self.compensated_rounding(n, name, w, scales, q)
                self.weights_q[key] = (q, scales, np.zeros(len(scales), np.int32))
        return self.weights_q[key]

    def compensated_rounding(self, n: LNode, name: str, w: np.ndarray, scales: np.ndarray,
                             q: np.ndarray) -> np.ndarray:
        """With weight_rounding='gptq', the levels of a layer's weight (slot 1) that weight_rounding.
        round_weight chooses on the same ``scales`` from the layer's input statistics; else ``q``."""
        if self.config.weight_rounding_mode() != "gptq" or len(n.inputs) < 2 or n.inputs[1] != name:
            return q
        st = self.stats.get(n.inputs[0])
        key = hessian_key(n.op_type, n.attrs)
        acc = (st.hessians or {}).get(key) if st is not None and key is not None else None
        hessian = acc.value() if acc is not None else None
        if hessian is None:
            return q
        levels = round_weight(w, scales, n.op_type, n.attrs, hessian)
        return q if levels is None else levels

    def quant_weight(self, n: LNode, name: str, w: np.ndarray, per_tensor: bool = False) -> int:
        axis = None if per_tensor else self.weight_axis(n, w)
        q, scales, zps = self.quantized_weight(n, name, w, axis)
        n_ch = len(scales)
        lo = [float(v) for v in (np.min(np.moveaxis(w, axis, 0).reshape(n_ch, -1), axis=1) if axis is not None
                                 else [np.min(w)])]
        hi = [float(v) for v in (np.max(np.moveaxis(w, axis, 0).reshape(n_ch, -1), axis=1) if axis is not None
                                 else [np.max(w)])]
        asym = bool(zps.any())
        qlo = [float(((-128 - z) if asym else -127) * s) for s, z in zip(scales, zps)]
        qhi = [float((127 - z) * s) for s, z in zip(scales, zps)]
        self.quant_params[name] = _qp("asym" if asym else "sym", "channel" if axis is not None else "layer",
                                      "int8", qlo, qhi, [float(s) for s in scales], [int(z) for z in zps], lo, hi)
        if axis is None:
            return self.add_constant(name, q, fmt.INT8, name, scale=float(scales[0]), zero_point=int(zps[0]),
                                     qnt_type=fmt.QNT_AFFINE)
        return self.add_constant(name, q, fmt.INT8, name, qnt_type=fmt.QNT_CHANNEL, quant_axis=axis,
                                 quant_scales=scales, quant_zero_points=zps.astype(np.int32))

    def quant_bias(self, n: LNode, name: str, b: np.ndarray) -> Optional[int]:
        x_name, w_name = n.inputs[0], n.inputs[1]
        wq = self.quant_params.get(w_name)
        if wq is None or x_name not in self.quant_params:
            return None
        sx = self.quant_params[x_name]["scale"][0]
        sw = np.asarray(wq["scale"], dtype=np.float64)
        n_out = self.pg.shapes[n.outputs[0]][1] if len(self.pg.shapes[n.outputs[0]]) > 1 else b.size
        if b.size != n_out or (len(sw) != 1 and len(sw) != n_out):
            return None  # an unusual broadcast bias (e.g. Gemm C of shape (M, N)) stays float
        flat = self.bias_corrected(n, b.reshape(-1).astype(np.float64))
        if len(sw) == 1:
            s = float(np.float32(sx * sw[0]))
            q = quantize_bias(flat, np.array([s])).reshape(b.shape)
            self.quant_params[name] = _qp("sym", "layer", "int32", [float(flat.min())], [float(flat.max())],
                                          [s], [0], [float(flat.min())], [float(flat.max())])
            return self.add_constant(name, q, fmt.INT32, name, scale=s, zero_point=0, qnt_type=fmt.QNT_AFFINE)
        scales = (sx * sw).astype(np.float32)
        q = quantize_bias(flat, scales).reshape(flat.shape)
        self.quant_params[name] = _qp("sym", "channel", "int32", flat.tolist(), flat.tolist(),
                                      scales.tolist(), [0] * len(scales), flat.tolist(), flat.tolist())
        return self.add_constant(name, q, fmt.INT32, name, qnt_type=fmt.QNT_CHANNEL, quant_axis=0,
                                 quant_scales=scales, quant_zero_points=np.zeros(len(scales), np.int32))

    def empirical_bias_correction(self) -> bool:
        """Whether build() follows the analytic correction with the empirical one (model/bias_correction.py):
        int8 builds with calibration statistics (a batched build takes the biases its batch-1 model gets)."""
        return self.mode == "int8" and self.config.bias_correction_mode() == "empirical"

    def bias_corrected(self, n: LNode, b: np.ndarray) -> np.ndarray:
        """The bias minus the mean output shift that int8 weight rounding causes (calibration.
        weight_error_shift); unchanged when the layer's input has no channel statistics."""
        if self.config.bias_correction_mode() == "off":
            return b
        st = self.stats.get(n.inputs[0])
        mean = st.channel_mean if st is not None else None
        w = self.pg.constants.get(n.inputs[1])
        if mean is None or w is None:
            return b
        w = np.asarray(w, np.float32)
        axis = self.weight_axis(n, w)
        q, scales, zps = self.quantized_weight(n, n.inputs[1], w, axis)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis] = -1
        deq = (q.astype(np.float64) - zps.reshape(shape)) * scales.reshape(shape)
        shift = weight_error_shift(w, deq, mean, n.op_type, n.attrs.get("group", 1), n.attrs.get("transB", 0))
        if shift is None or shift.shape != b.shape:
            return b
        return b - shift

    # ---- ops

    def add_op(self, n: LNode, outputs: set) -> fmt.SimOp:
        ins = []
        for slot, name in enumerate(n.inputs):
            if name is None:
                ins.append(None)
            elif name in self.pg.constants:
                ins.append(self.const_input(n, slot, name))
            else:
                ins.append(self.index[name])
        int8 = self.op_is_int8(n)
        outs = []
        for o in n.outputs:
            kind = fmt.KIND_OUTPUT if o in outputs else fmt.KIND_INTERMEDIATE
            share = n.inputs[0] if shares_input_quantisation(n.op_type, n.attrs) else None
            outs.append(self.add_activation(o, kind, int8 and o not in self.sum_inputs, share_from=share))
            if o in self.sum_inputs and o in self.stats:
                # listed in the quantization config like the toolkit's (hybrid step 2 reads every range)
                st = self.stats[o]
                lo, hi = choose_range(st, self.config.quantized_algorithm)
                self.quant_params[o] = _qp("asym", "layer", "float16", [lo], [hi], [], [], [st.min], [st.max])
        return fmt.SimOp(op_type=n.op_type, name=n.name, inputs=ins, outputs=outs, attrs=dict(n.attrs),
                         act=n.act, act_params=n.act_params)


def _qp(qtype: str, qmethod: str, dtype: str, lo: list, hi: list, scale: list, zp: list, ori_lo: list,
        ori_hi: list) -> dict:
    f = [float(np.float32(v)) for v in scale]
    return {"qtype": qtype, "qmethod": qmethod, "dtype": dtype, "min": [float(v) for v in lo],
            "max": [float(v) for v in hi], "scale": f, "zero_point": [int(v) for v in zp],
            "ori_min": [float(v) for v in ori_lo], "ori_max": [float(v) for v in ori_hi]}


# ------------------------------------------------------------------------------- hybrid quantization


def hybrid_quantization_step1(model: Any, config: BuildConfig, dataset: str | Path,
                              out_dir: str | Path = ".", name: Optional[str] = None,
                              rknn_batch_size: Optional[int] = None) -> tuple:
    """Calibrate and write ``{name}.model`` (the ONNX), ``{name}.data`` (build settings, JSON) and
    ``{name}.quantization.cfg`` (YAML: ``custom_quantize_layers: {}`` and ``quantize_parameters``).

    Edit the cfg's ``custom_quantize_layers`` (``layer_name: float16``) and pass the three paths to
    :func:`hybrid_quantization_step2`. Returns the three paths.
    """
    import yaml
    config.validate()
    result = build(model, config, True, dataset, rknn_batch_size=rknn_batch_size)
    name = name or (model.graph.name or "model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path, data_path, cfg_path = (out / f"{name}.model", out / f"{name}.data",
                                       out / f"{name}.quantization.cfg")
    model_path.write_bytes(model.SerializeToString())
    settings = {"format": "rknnlink-hybrid-1", "config": asdict(config), "rknn_batch_size": rknn_batch_size,
                "layers": [op.name for op in result.sim_model.ops]}
    data_path.write_text(json.dumps(settings, indent=1))
    cfg = {"custom_quantize_layers": {}, "quantize_parameters": result.quant_params}
    header = ("# rknnlink hybrid quantization config. Add entries like `layer_name: float16` under\n"
              "# custom_quantize_layers to keep those layers in float16; activation min/max may be edited.\n")
    cfg_path.write_text(header + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=200))
    return str(model_path), str(data_path), str(cfg_path)


def hybrid_quantization_step2(model_input: str | Path, data_input: str | Path,
                              model_quantization_cfg: str | Path,
                              config: Optional[BuildConfig] = None) -> BuildResult:
    """Build the int8 model from step1's files, honouring ``custom_quantize_layers`` (-> float16).

    Activation ranges come from the cfg's min/max (so edits take effect); no dataset is needed.
    """
    import onnx
    import yaml
    for p in (model_input, data_input, model_quantization_cfg):
        if not Path(p).is_file():
            raise BuildError(f"hybrid_quantization_step2: {str(p)!r} does not exist; pass the three files "
                             "hybrid_quantization_step1 wrote")
    try:
        settings = json.loads(Path(data_input).read_text())
        assert settings.get("format") == "rknnlink-hybrid-1"
    except Exception as exc:
        raise BuildError(f"{str(data_input)!r} is not an rknnlink hybrid .data file; rerun step1") from exc
    try:
        cfg = yaml.safe_load(Path(model_quantization_cfg).read_text()) or {}
    except yaml.YAMLError as exc:
        raise BuildError(f"{str(model_quantization_cfg)!r} is not valid YAML: {exc}") from exc
    if config is None:
        config = BuildConfig(**settings["config"])
    layers = cfg.get("custom_quantize_layers") or {}
    float_layers = set()
    for layer, dtype in layers.items():
        if str(dtype) not in ("float16", "float32"):
            raise BuildError(f"custom_quantize_layers: {layer}: {dtype!r} is not supported; use float16")
        float_layers.add(layer)
    ranges = {}
    for tname, qp in (cfg.get("quantize_parameters") or {}).items():
        # activations: asym per tensor; weights are recomputed (asymmetric ones are listed per channel)
        if (isinstance(qp, dict) and qp.get("qtype") == "asym" and qp.get("qmethod") != "channel"
                and qp.get("min") and qp.get("max")):
            ranges[tname] = (float(qp["min"][0]), float(qp["max"][0]))
    model = onnx.load(str(model_input))
    return build(model, config, True, None, rknn_batch_size=settings.get("rknn_batch_size"),
                 float_layers=float_layers, ranges=ranges)
