"""The corpus half of bench_sim_vs_ort.py: the simulator against onnxruntime fp32 (one thread) on every
real-model corpus model, and the per-layer profile of one model (run through bench_sim_vs_ort.py)."""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_sim_vs_ort import LIMIT, cosine, init_with_threads, interleaved_ms, sim_threads  # noqa: E402

from corpus import run as corpus_run  # noqa: E402
from corpus.build import build_all  # noqa: E402
from corpus.manifest import BY_NAME  # noqa: E402
from rknnlink.model.builder import BuildConfig, build  # noqa: E402
from rknnlink.model.prepare import _name_nodes, load_onnx  # noqa: E402  (the builder's naming, kept in step)
from rknnlink.runtime import RuntimeLibrary  # noqa: E402

MODES = (("fp16", False), ("int8", True))


def _ort_session(path: Path | onnx.ModelProto, profile_prefix: str = "",
                 optimised: Path | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if profile_prefix:
        # the same optimised graph the table times (unoptimised, onnxruntime is about 2x slower on MobileNetV3,
        # which made the per-layer ratios look twice as good as the wall-clock ones); _model_node maps its
        # fused nodes back to the model's
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimised is not None:
        # the optimised graph onnxruntime runs, written out: its nodes' output tensors name the model nodes
        # a fusion with a generated name stands for
        so.optimized_model_filepath = str(optimised)
        so.log_severity_level = 3  # its warning that NCHWc graphs are host-specific is known: only read here
    src = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def named_like_simulator(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes carry the names the simulator's layers get (the builder's node naming).

    paddle2onnx leaves Constant nodes unnamed and other exporters repeat names; onnxruntime's profiler reports
    a node by its name, so unnamed or repeated nodes all land on one key ('' or the repeated name) that no
    layer can be matched with. Node names do not change what onnxruntime computes or how fast."""
    named = copy.deepcopy(model)
    _name_nodes(named)
    return named


def _inputs(folder: Path) -> tuple:
    """(name, onnxruntime feed: normalised NCHW float32, simulator feed: the raw NHWC uint8 image)."""
    meta = corpus_run.meta(folder)
    raw = corpus_run.test_inputs(folder)[0]
    feed = ((raw[0].astype(np.float32) - np.float32(meta["mean"])) / np.float32(meta["std"])).transpose(2, 0, 1)
    raw_model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    init = {i.name for i in raw_model.graph.initializer}
    name = [i.name for i in raw_model.graph.input if i.name not in init][0]
    # the shape the corpus feeds (as load_onnx(input_size_list=...) fixes it for a dynamic-shape model)
    model = load_onnx(str(folder / "model.onnx"), input_size_list=[[1, 3, meta["height"], meta["width"]]])
    return model, name, np.ascontiguousarray(feed[None]), raw


def _build(model: onnx.ModelProto, folder: Path, quant: bool):
    meta = corpus_run.meta(folder)
    cfg = BuildConfig(mean_values=[meta["mean"]], std_values=[meta["std"]], progress=False)
    return build(model, cfg, quant, folder / "calib" / "dataset.txt" if quant else None)


def corpus_table(names: list, runs: int, rounds: int, check: bool) -> int:
    """One row per corpus model and mode: latencies and ratios over onnxruntime fp32 on one thread."""
    names = names or list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown corpus models {unknown}; known: {list(BY_NAME)}")
        return 2
    folders = build_all(names)
    threads = sim_threads()
    lib = RuntimeLibrary.load(backend="sim")
    print(f"simulator threads {threads} (RKNNLINK_SIM_THREADS) and 1; onnxruntime fp32 intra_op_num_threads=1; "
          f"{rounds} rounds of {runs} interleaved runs, ratios are the median of the rounds (limit {LIMIT}); "
          f"'1-thr cpu': the one-thread ratio of thread CPU times, which a loaded host does not inflate")
    head = (f"{'model':18s} {'mode':5s} {'ort ms':>8s} {'sim ms':>8s} {'ratio':>6s} {'1-thr ms':>8s} "
            f"{'1-thr':>6s} {'1-thr cpu':>9s} {'cosine':>8s}")
    print(head)
    print("-" * len(head))
    ok = True
    for name in names:
        folder = folders[name]
        if isinstance(folder, str):
            print(f"{name:18s} {folder}")
            continue
        model, in_name, feed, raw = _inputs(folder)
        sess = _ort_session(folder / "model.onnx")
        ref = sess.run(None, {in_name: feed})
        for mode, quant in MODES:
            try:
                built = _build(model, folder, quant)
            except Exception as exc:  # the builder names the operator it cannot lower
                print(f"{name:18s} {mode:5s} skipped: {' '.join(str(exc).split())[:240]}", flush=True)
                continue
            variants = [threads] + ([1] if threads > 1 else [])
            ctxs = {n: init_with_threads(lib, built.data, n) for n in variants}
            try:
                runners = {"ort": lambda s=sess, f={in_name: feed}: s.run(None, f)}
                for n, ctx in ctxs.items():
                    runners[n] = lambda c=ctx, x=raw: c.infer([x], formats=["nhwc"])
                try:
                    cpu = [{} for _ in range(max(1, rounds))]
                    res = [interleaved_ms(runners, runs, c) for c in cpu]
                    got = ctxs[threads].infer([raw], formats=["nhwc"])
                except Exception as exc:  # a run the simulator refuses is a result too, not the end of the table
                    print(f"{name:18s} {mode:5s} run failed: {' '.join(str(exc).split())[:200]}", flush=True)
                    ok = False
                    continue
                cos = min(cosine(g, r) for g, r in zip(got, ref))
            finally:
                for ctx in ctxs.values():
                    ctx.close()
            t_ort = statistics.median(r["ort"] for r in res)
            cells = []
            for n in variants:
                ratio = statistics.median(r[n] / r["ort"] for r in res)
                cells.append((statistics.median(r[n] for r in res), ratio))
                if n == threads:
                    ok = ok and ratio <= LIMIT
            if len(cells) == 1:
                cells.append(cells[0])
            cpu_ratio = statistics.median(c[1] / c["ort"] for c in cpu)
            print(f"{name:18s} {mode:5s} {t_ort:8.2f} {cells[0][0]:8.2f} {cells[0][1]:6.2f} {cells[1][0]:8.2f} "
                  f"{cells[1][1]:6.2f} {cpu_ratio:9.2f} {cos:8.5f}", flush=True)
    return 0 if ok or not check else 1


def _ort_node_us(sess: ort.InferenceSession) -> dict:
    """Shortest kernel time per ONNX node name over the profiled runs (see profile: the wall time a node
    spent descheduled on a busy host is not the node's)."""
    path = sess.end_profiling()
    times = defaultdict(list)
    for ev in json.loads(Path(path).read_text()):
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            times[ev["name"][: -len("_kernel_time")]].append(float(ev["dur"]))
    Path(path).unlink()
    return {k: min(v) for k, v in times.items()}


def _model_node(ort_name: str, producer: dict) -> str | None:
    """The model node an optimised-graph node stands for: onnxruntime keeps the node's name, appends its
    fusion ('<node>/MatMulAddFusion', '<node>/LayerNormFusion/') or names it after the tensor it writes
    ('<output>_nchwc', '<output>_new_reshape'); layout reorders and gemm reshapes it adds are no node's.
    A name without '/' (paddle2onnx's 'p2o.Conv.0', tensors like 'batch_norm_67.tmp_2') is looked up whole."""
    nodes = set(producer.values())
    name = ort_name.removesuffix("_nchwc").removesuffix("_new_reshape")
    parts = name.rstrip("/").split("/")
    for cut in range(len(parts), 0, -1):
        prefix = "/".join(parts[:cut])
        if prefix in nodes:
            return prefix
        if prefix in producer:
            return producer[prefix]
    return None


LAYOUT_OPS = ("ReorderInput", "ReorderOutput")  # onnxruntime's NCHWc layout conversions: no model node's


@dataclass
class Attribution:
    """onnxruntime's kernel times charged to simulator layers, and what could not be charged."""

    layer_us: dict            # layer index -> onnxruntime microseconds of its source nodes
    layer_nodes: dict         # layer index -> number of onnxruntime nodes charged to it
    ort_nodes: int            # onnxruntime profiled nodes
    added: list               # onnxruntime nodes that are no model node's (layout reorders, gemm reshapes)
    added_us: float
    orphan_us: float          # time of model nodes before the first layer (charged to no layer)
    builder_made: list        # layers of no model node (the builder's '::2d' reshapes): no onnxruntime node
    fused_by_ort: list        # layers whose nodes onnxruntime fused into a node charged to another layer
    without: list             # other layers with no onnxruntime time (nodes onnxruntime removed)


def attribute(model: onnx.ModelProto, ort_us: dict, layers: dict, ort_graph: dict | None = None) -> Attribution:
    """Charges each onnxruntime node's time to the simulator layer its model node became.

    ``model`` is the graph the simulator was built from, named as the builder names it
    (named_like_simulator), ``ort_us`` maps onnxruntime's profiled node names to microseconds, ``layers``
    maps layer index -> LayerInfo and ``ort_graph`` maps onnxruntime's optimised-graph node names to
    (op type, output tensors, number of inputs). An onnxruntime node is matched by its name (_model_node),
    else by the model node that writes one of its outputs (fusions that get a generated name: 'Gelu_token_3').
    A layer carries its first source node's name; the nodes fused into it (Conv -> BatchNormalization -> HardSwish's
    Add/Clip/Mul/Div, or folded) are charged to the last layer named before them in the model's node order,
    so a fused layer gets the sum of its source nodes."""
    ort_graph = ort_graph or {}
    producer = {out: node.name for node in model.graph.node for out in node.output if out}
    node_us: dict = defaultdict(float)
    node_hits: dict = defaultdict(int)
    ort_written = set()  # model tensors some onnxruntime node writes
    added, added_us = [], 0.0
    summed = set()
    for ort_name, us in ort_us.items():
        op_type, outputs, n_inputs = ort_graph.get(ort_name, ("", (), 0))
        ort_written.update(o.removesuffix("_nchwc") for o in outputs)
        key = None if op_type in LAYOUT_OPS else _model_node(ort_name, producer)
        if key is None and op_type not in LAYOUT_OPS:
            key = next((producer[o] for o in outputs if o in producer), None)
        if key is None:
            added.append(ort_name)
            added_us += us
        else:
            node_us[key] += us
            node_hits[key] += 1
            if op_type == "Conv" and n_inputs >= 4:
                # an NCHWc Conv with a 'Sum' input: the residual Add after the model's Conv runs inside it
                summed.add(key)
    by_name = {info.name: i for i, info in layers.items()}
    layer_us: dict = defaultdict(float)
    layer_nodes: dict = defaultdict(int)
    layer_outputs: dict = defaultdict(set)
    orphan_us, current = 0.0, None
    for node in model.graph.node:
        current = by_name.get(node.name, current)
        if current is not None:
            layer_outputs[current].update(node.output)
        if node.name not in node_us:
            continue
        if current is None:
            orphan_us += node_us[node.name]
        else:
            layer_us[current] += node_us[node.name]
            layer_nodes[current] += node_hits[node.name]
    model_nodes = {node.name for node in model.graph.node}
    summed_out = {o for node in model.graph.node if node.name in summed for o in node.output}
    ort_written.update(o for node in model.graph.node if node.op_type == "Add" and summed_out & set(node.input)
                       for o in node.output)
    missing = [i for i in layers if not layer_nodes.get(i)]
    builder_made = [i for i in missing if layers[i].name not in model_nodes]
    fused = [i for i in missing if i not in builder_made and layer_outputs[i] & ort_written]
    other = [i for i in missing if i not in builder_made and i not in fused]
    return Attribution(dict(layer_us), dict(layer_nodes), len(ort_us), added, added_us, orphan_us,
                       builder_made, fused, other)


def ort_profile_us(model: onnx.ModelProto, feeds: dict, runs: int) -> tuple:
    """(onnxruntime's shortest kernel time per profiled node over ``runs`` runs (one thread, optimised
    graph), {optimised-graph node name: (op type, output tensors)} for attribute)."""
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "optimised.onnx"
        sess = _ort_session(model, str(Path(tmp) / "ort"), opt)
        for _ in range(runs):
            sess.run(None, feeds)
        us = _ort_node_us(sess)
        graph = onnx.load(str(opt), load_external_data=False).graph
        return us, {n.name: (n.op_type, tuple(n.output), len(n.input)) for n in graph.node}


def profile(name: str, mode: str, runs: int, top: int) -> int:
    """Per layer: the simulator's measured time (one thread) beside onnxruntime's for the same node.

    Both are wall-clock times, and on a loaded host the scheduler takes the CPU away in whole time slices
    (4 ms at HZ=250): a 3 ms layer then reads 7, 11 or 15 ms in some runs, and the longest layers are hit
    most, so a median over a few runs blames them for the load. A layer's time here is its shortest run
    (the median is printed beside it), and the whole inference's thread CPU time is printed beside its
    wall time, so the gap between them is visible."""
    if name not in BY_NAME:
        print(f"unknown corpus model {name!r}; known: {list(BY_NAME)}")
        return 2
    folder = build_all([name])[name]
    if isinstance(folder, str):
        print(f"{name}: {folder}")
        return 1
    model, in_name, feed, raw = _inputs(folder)
    try:
        built = _build(model, folder, mode == "int8")
    except Exception as exc:
        print(f"{name} {mode} skipped: {' '.join(str(exc).split())[:240]}")
        return 1
    # onnxruntime runs the corpus file as the table does, its nodes named as the builder names the loaded graph
    # (the same order unless load_onnx upgraded the opset; then the mapping goes through the output tensors)
    original = onnx.load(str(folder / "model.onnx"))
    ort_us, ort_graph = ort_profile_us(named_like_simulator(original), {in_name: feed}, runs)
    model = named_like_simulator(model)
    lib = RuntimeLibrary.load(backend="sim")
    ctx = init_with_threads(lib, built.data, 1)
    try:
        samples = defaultdict(list)
        layers = {}
        wall, cpu = [], []
        ctx.infer([raw], formats=["nhwc"])
        for _ in range(runs):
            c0, w0 = time.thread_time(), time.perf_counter()
            ctx.infer([raw], formats=["nhwc"])
            wall.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
            for info in ctx.layer_infos():
                samples[info.index].append(info.measured_time_us)
                layers[info.index] = info
    finally:
        ctx.close()
    sim_us = {i: min(v) for i, v in samples.items()}
    sim_med = {i: statistics.median(v) for i, v in samples.items()}
    total_sim, total_ort = sum(sim_us.values()), sum(ort_us.values())
    att = attribute(model, ort_us, layers, ort_graph)
    ort_layer = att.layer_us
    print(f"{name} {mode}: simulator (1 thread) {total_sim / 1e3:.2f} ms over {len(layers)} layers, "
          f"onnxruntime (1 thread, optimised graph as timed by the table) {total_ort / 1e3:.2f} ms over "
          f"{att.ort_nodes} nodes (sums of each kernel's shortest time of {runs} runs; fused nodes counted "
          f"with the layer before them)")
    matched = len(layers) - len(att.builder_made) - len(att.fused_by_ort) - len(att.without)
    print(f"matched: {matched} of {len(layers)} layers have onnxruntime time, {len(att.builder_made)} are the "
          f"builder's (no model node), {len(att.fused_by_ort)} onnxruntime fused into a node charged to another "
          f"layer, {len(att.without)} have none; {att.ort_nodes - len(att.added)} of {att.ort_nodes} onnxruntime "
          f"nodes map to model nodes, {len(att.added)} ({att.added_us / 1e3:.2f} ms) are nodes it added "
          "(layout reorders, gemm reshapes)"
          + (f"; {att.orphan_us / 1e3:.2f} ms in nodes before the first layer" if att.orphan_us else ""))
    for label, idx in (("fused by onnxruntime", att.fused_by_ort), ("without onnxruntime time", att.without)):
        if idx:
            shown = ", ".join(f"{layers[i].name} ({layers[i].op_type})" for i in idx[:6])
            print(f"layers {label}: {shown}" + (f" and {len(idx) - 6} more" if len(idx) > 6 else ""))
    print(f"simulator inference: thread CPU time median {statistics.median(cpu) * 1e3:.2f} ms, wall time median "
          f"{statistics.median(wall) * 1e3:.2f} ms (the difference: time descheduled by other processes)")
    head = f"{'sim us':>9s} {'sim med':>9s} {'ort us':>9s} {'ratio':>6s} {'nodes':>5s}  {'type':16s} {'shape':22s} name"
    print(head)
    print("-" * len(head))
    for i in sorted(sim_us, key=lambda i: -sim_us[i])[:top]:
        info = layers[i]
        o = ort_layer.get(i)
        ratio = f"{sim_us[i] / o:6.2f}" if o else "     -"
        print(f"{sim_us[i]:9.1f} {sim_med[i]:9.1f} {o if o is not None else float('nan'):9.1f} {ratio} "
              f"{att.layer_nodes.get(i, 0):5d}  {info.op_type:16s} "
              f"{'x'.join(map(str, info.dims)):22s} {info.name}")
    by_type = defaultdict(lambda: [0.0, 0.0, 0])
    for i, us in sim_us.items():
        t = by_type[layers[i].op_type]
        t[0] += us
        t[1] += ort_layer.get(i, 0.0)
        t[2] += 1
    print("\nby simulator layer type:")
    for t, (s, o, n) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
        print(f"  {t:20s} {n:4d} layers  sim {s / 1e3:8.2f} ms  ort {o / 1e3:8.2f} ms  "
              f"{(s / o if o else float('nan')):6.2f}x")
    return 0
