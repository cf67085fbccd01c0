"""The simulator's NPU cost model against Rockchip's published board latencies (rknn_model_zoo V2.3.2).

Builds the zoo's architectures (bench/zoo_models.py, seeded weights; the PP-OCRv4 det/rec are the real ONNX
files of the rapidocr_onnxruntime wheel) at the table's input shapes in the table's dtype, loads each into the
simulator in this process with perf_debug (RKNN_FLAG_COLLECT_PERF_MASK) for every platform of the table that
RKNN-Toolkit2 targets (RK3566/RK3568, RK3562, RK3588 one core, RK3576 one core), runs it once and reads the
PERF_DETAIL total. Prints estimate, published time and ratio per row, then the summary: median ratio
estimate/published, median |error|, share within +-25% (acceptance: >= 85 %, <= 15 %; aim 90 %, 10 %).

The cost model is linear in its per-platform constants (docs/cost-model.md), so the same run fits them: the
per-layer work the simulator reports (rknnlink_layer_info: cost class, MACs, activation elements, bytes) times
1/rate, plus the layer overhead. ``--fit`` prints the constants fitted on all models as C rows for
runtime_c/src/platforms.c; every run also fits on half of the models and reports the error on the other half
(halves stratified by architecture family). Before fitting, the bench checks that this formula reproduces the
simulator's own estimates. ``--save`` keeps the measured layers, ``--load`` refits from them without building.

Usage: python bench/bench_cost_model.py [--models a,b,...] [--fit] [--no-run] [--check] [--save F | --load F]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import pickle
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rknnlink.model import format as fmt  # noqa: E402
from rknnlink.model.builder import BuildConfig, activation_names, build, load_onnx  # noqa: E402
from rknnlink.model.lower import lower  # noqa: E402
from rknnlink.model.prepare import prepare  # noqa: E402
from rknnlink.runtime import RuntimeLibrary, abi  # noqa: E402
from rknnlink.runtime.perf import parse_perf_detail  # noqa: E402
from rknnlink.runtime.platforms import Platform, find_platform  # noqa: E402

# Published FPS (rknn_model_zoo V2.3.2 README, "Model performance benchmark (FPS)"): dtype, then
# RK3566/RK3568, RK3562, RK3588 (1 core), RK3576 (1 core). RV1109/RV1126/RK1808 are RKNN-Toolkit (v1)
# platforms, not targets of RKNN-Toolkit2: not benchmarked.
PUBLISHED: Dict[str, Tuple[str, Tuple[float, float, float, float]]] = {
    "mobilenetv2-12": ("int8", (180.7, 281.3, 450.7, 467.0)),
    "resnet50-v2-7": ("int8", (37.9, 54.9, 110.1, 99.0)),
    "yolov5s_relu": ("int8", (25.5, 33.2, 66.1, 65.0)),
    "yolov5n": ("int8", (39.7, 47.4, 82.5, 112.7)),
    "yolov5s": ("int8", (19.3, 23.6, 48.4, 57.5)),
    "yolov5m": ("int8", (8.6, 10.8, 20.9, 23.7)),
    "yolov7-tiny": ("int8", (27.9, 36.5, 72.7, 74.8)),
    "yolov8n": ("int8", (34.0, 40.9, 73.5, 90.2)),
    "yolov8s": ("int8", (15.1, 18.4, 38.0, 40.8)),
    "yolov8m": ("int8", (6.5, 8.2, 16.2, 16.7)),
    "yolov8n-obb": ("int8", (33.9, 41.3, 74.0, 90.2)),
    "yolo11n": ("int8", (20.6, 34.0, 60.0, 77.9)),
    "yolo11s": ("int8", (10.2, 16.7, 33.0, 38.2)),
    "yolo11m": ("int8", (4.6, 6.5, 12.7, 14.6)),
    "yolox_s": ("int8", (15.2, 18.3, 37.1, 41.5)),
    "yolox_m": ("int8", (6.6, 8.2, 16.0, 17.6)),
    "yolov8n-pose": ("int8", (22.6, 31.0, 55.9, 66.8)),
    "deeplab-v3-plus-mobilenet-v2": ("int8", (10.9, 21.4, 34.0, 39.4)),
    "yolov5n-seg": ("int8", (32.2, 38.5, 69.3, 88.3)),
    "yolov5s-seg": ("int8", (15.0, 18.1, 36.8, 41.6)),
    "yolov5m-seg": ("int8", (6.8, 8.4, 16.4, 18.0)),
    "yolov8n-seg": ("int8", (27.8, 33.0, 60.8, 71.1)),
    "yolov8s-seg": ("int8", (11.7, 14.1, 28.9, 30.8)),
    "yolov8m-seg": ("int8", (5.2, 6.4, 12.6, 12.7)),
    "RetinaFace_mobile320": ("int8", (156.4, 300.8, 227.2, 470.5)),
    "RetinaFace_resnet50_320": ("int8", (18.7, 26.9, 49.2, 56.6)),
    "lprnet": ("fp16", (143.2, 420.6, 586.4, 647.8)),
    "ppocrv4_det": ("int8", (22.1, 28.0, 50.7, 64.3)),
    "ppocrv4_rec": ("fp16", (19.5, 54.3, 73.9, 96.8)),
}
COLUMNS = ("rk3568", "rk3562", "rk3588", "rk3576")  # the RK3566/RK3568 column is costed as rk3568
# Models of the table the bench does not build (yet), with the reason it prints.
SKIPPED = {
    "yolov6n/s/m, yolov10n/s, ppyoloe_s/m, yolov7, yolo_world_v2s, ppseg_lite": "not written yet in zoo_models.py",
    "clip_images, clip_text, mobilesam encoder/decoder, lite-transformer encoder/decoder":
        "transformer blocks not written yet in zoo_models.py (their LayerNorm / GELU / Erf just landed)",
    "wav2vec2, whisper, zipformer, yamnet, mms_tts": "published as real-time factors of whole audio pipelines",
}
OCR_FILES = {"ppocrv4_det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 480, 480]),
             "ppocrv4_rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320])}
LIMIT_SHARE, LIMIT_MEDIAN = 0.85, 0.15
CLASSES = ("dense", "depthwise", "eltwise")


def onnx_of(name: str):
    """The ONNX ModelProto of a zoo model (torch export, or the wheel's PP-OCRv4 file); None + reason if absent."""
    if name in OCR_FILES:
        try:
            import rapidocr_onnxruntime
        except ImportError:
            return None, "rapidocr_onnxruntime is not installed (pip install -e '.[dev]')"
        file, shape = OCR_FILES[name]
        path = Path(rapidocr_onnxruntime.__file__).parent / "models" / file
        return load_onnx(path, input_size_list=[shape]), ""
    import torch
    from zoo_models import build_zoo_model
    model, shape = build_zoo_model(name)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(*shape), buf, opset_version=13, dynamo=False)
    import onnx
    return onnx.load_from_string(buf.getvalue()), ""


def build_model(name: str, dtype: str) -> fmt.SimModel:
    """rknnlink build in the table's dtype; int8 with fixed activation ranges (values do not change latency)."""
    model, why = onnx_of(name)
    if model is None:
        raise RuntimeError(why)
    cfg = BuildConfig(target_platform="rk3588", progress=False)
    if dtype == "fp16":
        return build(model, cfg, do_quantization=False).sim_model
    pg = prepare(model, fold_batchnorm=True)
    ranges = {n: (-4.0, 4.0) for n in activation_names(pg, lower(pg, fuse=True))}
    return build(model, cfg, do_quantization=True, ranges=ranges).sim_model


@dataclasses.dataclass
class Measured:
    """One model on one platform: the simulator's PERF_DETAIL total and the layer work behind it."""

    total_us: int
    rows_sum_us: int
    layers: list
    io_bytes: int


def measure(lib: RuntimeLibrary, sim: fmt.SimModel, platform: str, run: bool) -> Measured:
    data = fmt.write_model(dataclasses.replace(sim, target_platform=platform))
    ios = [sim.tensors[io_.tensor] for io_ in list(sim.inputs) + list(sim.outputs)]
    with lib.init(data, abi.RKNN_FLAG_COLLECT_PERF_MASK) as ctx:
        if run:  # one inference: the model really executes (the estimate does not depend on it)
            ctx.infer([np.zeros(sim.tensors[io_.tensor].shape, np.float32) for io_ in sim.inputs])
        text = ctx.perf_detail()
        layers = ctx.layer_infos()
    rows, total = parse_perf_detail(text)
    rows_sum = int(sum(r["time_us"] for r in rows))
    io_bytes = sum(int(np.prod(t.shape)) * _DSIZE.get(int(t.dtype), 4) for t in ios)
    return Measured(total, rows_sum, layers, io_bytes)


_DSIZE = {abi.RKNN_TENSOR_INT8: 1, abi.RKNN_TENSOR_UINT8: 1, abi.RKNN_TENSOR_FLOAT16: 2}


# ------------------------------------------------------------------------------------------------ fitting

# The MAC array's blocks (runtime_c/src/cost.c, charged_work): output channels of a dense convolution in blocks
# of 32, depthwise channels in blocks of 64, at least 128 MAC slots per output element of a dense convolution.
DENSE_COUT_BLOCK, DEPTHWISE_BLOCK, OUTPUT_STAGE_MACS = 32, 64, 128


def charged_work(layer) -> float:
    """The MAC slots a layer occupies, as cost.c charges them (its `macs` unless it is a convolution)."""
    dims = layer.dims
    if layer.onnx_type not in ("Conv", "ConvTranspose") or len(dims) < 3 or dims[1] <= 0:
        return float(layer.macs)
    block = DEPTHWISE_BLOCK if layer.cost_class == "depthwise" else DENSE_COUT_BLOCK
    pad = -(-dims[1] // block) * block / dims[1]
    work = layer.macs * pad
    if layer.cost_class == "dense":
        work = max(work, float(np.prod(dims)) * pad * OUTPUT_STAGE_MACS)
    return work


def features(layers: Sequence, pf: Platform) -> np.ndarray:
    """Work per term of the cost model (docs/cost-model.md), in the units its constants divide:
    [layers, then for int8 layers and for float layers: dense, depthwise, element-wise, activation cycles at
    rate 1/cycle, then bytes]; a FLOAT32 layer counts twice in the float columns (half the fp16 rate)."""
    f = np.zeros(10)
    for layer in layers:
        fp = layer.dtype not in (abi.RKNN_TENSOR_INT8, abi.RKNN_TENSOR_UINT8)
        weight = 2.0 if layer.dtype == abi.RKNN_TENSOR_FLOAT32 else 1.0
        base = 5 if fp else 1
        f[0] += 1
        if layer.cost_class in CLASSES:
            f[base + CLASSES.index(layer.cost_class)] += weight * charged_work(layer) / pf.npu_hz
        f[base + 3] += weight * layer.act_elems / pf.npu_hz
        f[9] += layer.bytes_rw
    return f


def theta_of(pf: Platform) -> np.ndarray:
    """The platform's constants as the coefficients of ``features`` (seconds per unit, us for the overhead)."""
    int8 = np.array([1 / pf.dense_macs_per_cycle, 1 / pf.depthwise_macs_per_cycle, 1 / pf.eltwise_per_cycle,
                     1 / pf.activation_per_cycle])
    return np.concatenate([[pf.layer_overhead_us * 1e-6], int8, int8 / pf.fp16_ratio, [1 / pf.ddr_bytes_per_s]])


def fit_rows(results: dict, models: Sequence[str], pf: Platform) -> list:
    """(features, I/O seconds, published seconds) of `models` on platform `pf`."""
    idx = COLUMNS.index(pf.name)
    return [(features(results[n][pf.name].layers, pf), results[n][pf.name].io_bytes / pf.io_bytes_per_s,
             1.0 / PUBLISHED[n][1][idx]) for n in models]


# The table cannot tell depthwise and element-wise work apart from dense work well (their share of most models
# is small): they are tied to the dense rate instead, at the vendor compiler's figures for rk3588. A depthwise
# MAC slot costs 16 dense ones (64 MAC/cycle on a 1024-MAC core); an element-wise operation goes through the
# output stage, 8 elements per cycle on a 1024-MAC core, so it costs OUTPUT_STAGE_MACS dense MAC slots.
DEPTHWISE_SLOWDOWN = 16.0
ELTWISE_SLOWDOWN = float(OUTPUT_STAGE_MACS)
# The fit's free constants per platform: layer overhead (us), ns per 1000 dense MAC slots, ns per activation
# element, s per 1e10 bytes, 1 / fp16 ratio; the dense rate at most the int8 peak and the bandwidth at most
# the DDR peak. A weak prior (weight PRIOR_WEIGHT per unit of log) pulls each
# towards the published figure (dense rate = the int8 peak, bandwidth = 70 % of the DDR peak, fp16 at a
# quarter of int8) or a neutral value (25 us per layer, 0.3 ns per activation element): the half-table fits
# of the held-out check have 14 models for 5 constants, and without it two constants can trade off wildly.
PRIOR_WEIGHT = 0.1


def prior(pf: Platform) -> np.ndarray:
    return np.log([25.0, 1000.0 / pf.peak_int8_macs_per_cycle, 0.3, 1e10 / (0.7 * pf.io_bytes_per_s), 4.0])


def estimate(z: np.ndarray, f: np.ndarray, io_s: np.ndarray) -> np.ndarray:
    """Seconds per model (rows of ``features``) for the fit's log-constants z."""
    o, d, a, bw, r = np.exp(z)
    ties = np.array([1.0, DEPTHWISE_SLOWDOWN, ELTWISE_SLOWDOWN])
    dense = f[:, 1:4] @ ties + r * (f[:, 5:8] @ ties)
    act = f[:, 4] + r * f[:, 8]
    return o * 1e-6 * f[:, 0] + d * 1e-3 * dense + a * act + bw * f[:, 9] / 1e10 + io_s


def theta_from(z: np.ndarray) -> np.ndarray:
    """theta (the coefficients of ``features``) from the fit's log-constants."""
    o, d, a, bw, r = np.exp(z)
    int8 = np.array([d * 1e-3, d * 1e-3 * DEPTHWISE_SLOWDOWN, d * 1e-3 * ELTWISE_SLOWDOWN, a])
    return np.concatenate([[o * 1e-6], int8, int8 * r, [bw / 1e10]])


def fit(rows: Sequence[Tuple[np.ndarray, float, float]], pf: Platform) -> np.ndarray:
    """Least squares of log(estimate / published) over rows of (features, fixed I/O seconds, published s),
    plus the weak prior, in the five free constants of a platform, the dense rate at most the published peak;
    returns theta for ``features``."""
    from scipy.optimize import least_squares
    f = np.array([r[0] for r in rows])
    io_s = np.array([r[1] for r in rows])
    pub = np.array([r[2] for r in rows])
    z0 = prior(pf)

    def residual(z: np.ndarray) -> np.ndarray:
        return np.concatenate([np.log(estimate(z, f, io_s)) - np.log(pub), PRIOR_WEIGHT * (z - z0)])
    lower = np.full(5, -np.inf)
    lower[1] = z0[1]  # no faster than the published int8 peak: the padded MAC slots are what the array runs
    lower[3] = np.log(1e10 / pf.io_bytes_per_s)  # and no more bandwidth than the DDR peak
    return theta_from(least_squares(residual, z0 + 1e-9, bounds=(lower, np.inf)).x)


# Architecture families: the held-out halves split every family, so that neither half holds all of one
# backbone (a fit never sees a MobileNet, a ResNet or a float model otherwise).
FAMILY_PREFIXES = {"mobilenet": ("mobilenetv2", "deeplab", "RetinaFace_mobile"),
                   "resnet": ("resnet50", "RetinaFace_resnet"), "float": ("lprnet", "ppocrv4_rec"),
                   "ppocr": ("ppocrv4_det",), "yolov5": ("yolov5",), "yolov7": ("yolov7",),
                   "yolov8": ("yolov8",), "yolo11": ("yolo11",), "yolox": ("yolox",)}


def family(name: str) -> str:
    return next((f for f, prefixes in FAMILY_PREFIXES.items() if name.startswith(prefixes)), name)


def halves_of(results: dict) -> Tuple[List[str], List[str]]:
    """Two halves stratified by architecture family: within each family, models ordered by published rk3588
    time go alternately to either half (a family's first model to the half that is smaller so far)."""
    ordered = sorted(results, key=lambda n: 1.0 / PUBLISHED[n][1][COLUMNS.index("rk3588")])
    halves: Tuple[List[str], List[str]] = ([], [])
    for fam in sorted({family(n) for n in ordered}):
        members = [n for n in ordered if family(n) == fam]
        first = 0 if len(halves[0]) <= len(halves[1]) else 1
        for i, n in enumerate(members):
            halves[(first + i) % 2].append(n)
    return halves


# Platforms without published latencies take the fitted constants of the nearest NPU generation, rates scaled
# by the published int8 peak per core and bandwidth by the theoretical DDR peak (both from the table's facts);
# the layer overhead is kept.
DERIVED_FROM = {"rk3566": "rk3568", "rv1103": "rk3568", "rv1103b": "rk3568", "rv1106": "rk3568",
                "rv1106b": "rk3568", "rk2118": "rk3568", "rv1126b": "rk3576"}


def derive(pf: Platform, src: Platform, theta: np.ndarray) -> np.ndarray:
    peak = pf.peak_int8_macs_per_cycle * pf.npu_hz / (src.peak_int8_macs_per_cycle * src.npu_hz)
    ddr = pf.io_bytes_per_s / src.io_bytes_per_s
    return np.concatenate([[theta[0]], theta[1:9] / peak, [theta[9] / ddr]])


def c_row(name: str, pf: Platform, theta: np.ndarray) -> str:
    def inv(v: float) -> str:
        return f"{1 / v:.3g}" if v > 0 else "1e12"
    fp16_ratio = theta[1] / theta[5]
    return (f'    {{"{name}", {pf.cores}, {int(pf.perf_detail)}, {pf.npu_hz:.2g}, {pf.peak_int8_macs_per_cycle:.1f}, '
            f'{fp16_ratio:.3g}, {inv(theta[1])}, {inv(theta[2])}, {inv(theta[3])}, {inv(theta[4])}, '
            f'{inv(theta[9])}, {theta[0] * 1e6:.3g}, {pf.io_bytes_per_s:.3g}}},')


def summary(ratios: Sequence[float]) -> Tuple[float, float, float]:
    errs = [abs(r - 1) for r in ratios]
    return statistics.median(ratios), statistics.median(errs), sum(e <= 0.25 for e in errs) / len(errs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated subset of the published models")
    ap.add_argument("--fit", action="store_true", help="print constants fitted on all models as C rows")
    ap.add_argument("--no-run", action="store_true", help="skip the one inference per model")
    ap.add_argument("--check", action="store_true", help="exit 1 if the acceptance bounds are missed")
    ap.add_argument("--save", type=Path, help="pickle the measured layers to this file (for refitting)")
    ap.add_argument("--load", type=Path, help="refit from a --save file instead of building the models")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.models.split(",") if args.models else list(PUBLISHED)
    lib = RuntimeLibrary.load(backend="sim")
    platforms = {p: find_platform(p) for p in COLUMNS}
    results: Dict[str, Dict[str, Measured]] = {}
    for reason_key, reason in SKIPPED.items():
        print(f"skip {reason_key}: {reason}")
    if args.load:  # our own file from --save of an earlier run
        results = {n: m for n, m in pickle.loads(args.load.read_bytes()).items() if n in names}
        names = []
    for name in names:
        dtype = PUBLISHED[name][0]
        try:
            sim = build_model(name, dtype)
        except Exception as exc:  # a model the simulator cannot build yet is skipped with its reason
            print(f"skip {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        results[name] = {p: measure(lib, sim, p, run=(not args.no_run and i == 0)) for i, p in enumerate(COLUMNS)}
    if args.save:
        args.save.write_bytes(pickle.dumps(results))
    print(f"\n{'model':30s} {'dtype':5s} {'platform':8s} {'layers':>6s} {'estimate ms':>11s} "
          f"{'published ms':>12s} {'ratio':>6s}")
    ratios, bad_sum = [], 0
    for name, per in results.items():
        dtype, fps = PUBLISHED[name]
        for p, pub_fps in zip(COLUMNS, fps):
            m = per[p]
            pub_ms, est_ms = 1000.0 / pub_fps, m.total_us / 1000.0
            ratios.append(est_ms / pub_ms)
            bad_sum += m.rows_sum_us != m.total_us
            print(f"{name:30s} {dtype:5s} {p:8s} {len(m.layers):6d} {est_ms:11.2f} {pub_ms:12.2f} "
                  f"{est_ms / pub_ms:6.2f}")
    if not ratios:
        print("no model could be built")
        return 1
    med, err, share = summary(ratios)
    print(f"\nsummary over {len(ratios)} model-platform pairs ({len(results)} models x {len(COLUMNS)} platforms): "
          f"median ratio {med:.3f}, median |error| {100 * err:.1f} %, within +-25 %: {100 * share:.1f} % "
          f"(acceptance >= {100 * LIMIT_SHARE:.0f} %, <= {100 * LIMIT_MEDIAN:.0f} %)")
    print(f"PERF_DETAIL rows adding up to the total line: {len(ratios) - bad_sum} of {len(ratios)}")

    # the formula the fit uses must be the simulator's own
    worst = 0.0
    for per in results.values():
        for p in COLUMNS:
            m = per[p]
            est = features(m.layers, platforms[p]) @ theta_of(platforms[p]) * 1e6 + \
                m.io_bytes / platforms[p].io_bytes_per_s * 1e6
            worst = max(worst, abs(est - m.total_us) / m.total_us)
    print(f"fit formula vs the simulator's totals: worst relative difference {100 * worst:.2f} % (rounding)")

    ordered = sorted(results)
    halves = halves_of(results)
    held, misses = [], []
    fitted_all = {}
    for p in COLUMNS:
        for train, test in (halves, halves[::-1]):
            theta = fit(fit_rows(results, train, platforms[p]), platforms[p])
            ratios_test = [(f @ theta + io_s) / pub for f, io_s, pub in fit_rows(results, test, platforms[p])]
            held += ratios_test
            misses += [f"{n} {p} {r:.2f}" for n, r in zip(test, ratios_test) if abs(r - 1) > 0.25]
        fitted_all[p] = fit(fit_rows(results, ordered, platforms[p]), platforms[p])
    rmed, rerr, rshare = summary([(f @ fitted_all[p] + io_s) / pub for p in COLUMNS
                                  for f, io_s, pub in fit_rows(results, ordered, platforms[p])])
    print(f"constants fitted on all models now (what --fit prints): median ratio {rmed:.3f}, median |error| "
          f"{100 * rerr:.1f} %, within +-25 %: {100 * rshare:.1f} %")
    hmed, herr, hshare = summary(held)
    print(f"\nheld-out halves, stratified by family ({', '.join(halves[0])} | {', '.join(halves[1])})")
    print(f"held-out (fit on one half of the models, error on the other, both ways; {len(held)} pairs): "
          f"median ratio {hmed:.3f}, median |error| {100 * herr:.1f} %, within +-25 %: {100 * hshare:.1f} %")
    print("held-out misses:", "; ".join(misses) or "none")
    if args.fit:
        print("\nconstants fitted on all models (runtime_c/src/platforms.c rows):")
        from rknnlink.runtime.platforms import platform_table
        for pf in platform_table():
            if pf.name in fitted_all:
                theta = fitted_all[pf.name]
            else:
                src = find_platform(DERIVED_FROM[pf.name])
                theta = derive(pf, src, fitted_all[src.name])
            print(c_row(pf.name, pf, theta))
    ok = share >= LIMIT_SHARE and err <= LIMIT_MEDIAN and hshare >= LIMIT_SHARE and herr <= LIMIT_MEDIAN
    print("acceptance:", "met" if ok else "NOT met")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
