"""The NPU cost model (docs/cost-model.md) and the one platform table (runtime_c/src/platforms.c).

Each mechanism must move the estimate the right way: a SiLU layer costs more than a Relu one, depthwise MACs
cost more than dense ones, more layers cost more overhead, a big convolution runs faster on several cores;
every platform the facade accepts has its own row, and the facade, builder and board daemon read that table.
PERF_DETAIL rows must add up to its total line and to RKNN_QUERY_PERF_RUN. No timing: estimates only.
"""

import numpy as np
import pytest

from rknnlink.model import format as fmt
from rknnlink.runtime import RuntimeLibrary, abi
from rknnlink.runtime.perf import parse_perf_detail

F16 = "float16"


def conv_chain(n_layers: int = 1, act: str = "", group_dw: bool = False, channels: int = 32, size: int = 32,
               k: int = 3, target: str = "rk3588") -> bytes:
    """n_layers same-shape 3x3 convolutions (fp16, random weights), dense or depthwise, with `act` fused."""
    rng = np.random.default_rng(0)
    t = [fmt.SimTensor("x", F16, (1, channels, size, size), fmt.KIND_INPUT)]
    ops = []
    cur = 0
    for i in range(n_layers):
        cin = 1 if group_dw else channels
        w = rng.normal(0, 0.1, (channels, cin, k, k)).astype(np.float16)
        t.append(fmt.SimTensor(f"w{i}", F16, w.shape, fmt.KIND_CONSTANT, data=w))
        t.append(fmt.SimTensor(f"b{i}", F16, (channels,), fmt.KIND_CONSTANT, data=np.zeros(channels, np.float16)))
        last = i == n_layers - 1
        t.append(fmt.SimTensor(f"y{i}", F16, (1, channels, size, size), fmt.KIND_OUTPUT if last else
                               fmt.KIND_INTERMEDIATE))
        out = len(t) - 1
        ops.append(fmt.SimOp("Conv", f"conv{i}", [cur, out - 2, out - 1], [out],
                             {"kernel_shape": [k, k], "strides": [1, 1], "pads": [k // 2] * 4, "dilations": [1, 1],
                              "group": channels if group_dw else 1}, act=act or None))
        cur = out
    model = fmt.SimModel(target_platform=target, name="chain", build_mode="fp16", tensors=t, ops=ops,
                         inputs=[fmt.IoSpec(0)], outputs=[fmt.IoSpec(cur)])
    return fmt.write_model(model)


@pytest.fixture(scope="module")
def lib(c_build) -> RuntimeLibrary:
    return RuntimeLibrary.load(path=str(c_build / "librknnrt_sim.so"))


def layers(lib: RuntimeLibrary, model: bytes):
    with lib.init(model) as ctx:
        return ctx.layer_infos()


def total_us(lib: RuntimeLibrary, model: bytes, core_mask: int = 0) -> int:
    with lib.init(model, abi.RKNN_FLAG_COLLECT_PERF_MASK) as ctx:
        if core_mask:
            ctx.set_core_mask(core_mask)
        text = ctx.perf_detail()
    return parse_perf_detail(text)[1]


def test_silu_and_sigmoid_cost_more_than_relu(lib):
    relu = layers(lib, conv_chain(act="Relu"))[0]
    for act in ("SiLU", "Sigmoid"):
        other = layers(lib, conv_chain(act=act))[0]
        assert other.act_elems == 32 * 32 * 32 and relu.act_elems == 0
        assert other.est_time_us > relu.est_time_us, act
    assert layers(lib, conv_chain(act="Relu"))[0].est_time_us == layers(lib, conv_chain())[0].est_time_us


def test_depthwise_costs_more_per_mac_than_dense(lib):
    dense = layers(lib, conv_chain())[0]
    dw = layers(lib, conv_chain(group_dw=True))[0]
    assert (dense.cost_class, dw.cost_class) == ("dense", "depthwise")
    assert dense.macs == 32 * dw.macs
    overhead = _row(lib, "rk3588").layer_overhead_us
    per_mac = [(L.est_time_us - overhead - L.bytes_rw / _row(lib, "rk3588").ddr_bytes_per_s * 1e6) / L.macs
               for L in (dense, dw)]
    assert per_mac[1] > 2 * per_mac[0]


def compute_us(lib: RuntimeLibrary, model: bytes, platform: str = "rk3588") -> float:
    """The first layer's estimate without its overhead and memory time: what its compute is charged."""
    row = _row(lib, platform)
    layer = layers(lib, model)[0]
    return layer.est_time_us - row.layer_overhead_us - layer.bytes_rw / row.ddr_bytes_per_s * 1e6


def test_convolutions_occupy_the_array_in_channel_blocks(lib):
    # output channels in blocks of 32 (and the output stage): per output channel, 8 cost 4x what 32 do
    thin, block = (compute_us(lib, conv_chain(channels=c, size=32, k=1)) / c for c in (8, 32))
    assert thin > 2 * block
    # depthwise channels in blocks of 64: 16 channels cost what 64 do
    dw16, dw64 = (compute_us(lib, conv_chain(channels=c, size=32, group_dw=True)) for c in (16, 64))
    assert dw16 == pytest.approx(dw64, rel=1e-6)


def test_a_thin_convolution_is_bounded_by_its_output(lib):
    # 1x1, 32 -> 32 channels: 32 MACs per output element, below the output stage's 128 MAC slots, so the
    # compute follows the output size and not the MACs: a 3x3 kernel (9x the MACs) costs only 288/128 as much
    one, three = (compute_us(lib, conv_chain(channels=32, size=32, k=k)) for k in (1, 3))
    assert three == pytest.approx(one * 288 / 128, rel=1e-6)


def test_fp16_ratio_is_per_platform(lib):
    # fitted: the RK3566/RK3568 NPU (RKNPU2-LITE) runs float layers relatively slower than RK3588's
    assert _row(lib, "rk3568").fp16_ratio < _row(lib, "rk3588").fp16_ratio
    rk3568, rk3588 = (compute_us(lib, conv_chain(channels=32, size=32, target=p), p) for p in ("rk3568", "rk3588"))
    assert rk3568 > rk3588 > 0


def test_more_layers_more_overhead(lib):
    one, four = (layers(lib, conv_chain(n_layers=n, channels=4, size=4)) for n in (1, 4))
    assert total_us(lib, conv_chain(n_layers=4, channels=4, size=4)) > total_us(lib, conv_chain(channels=4, size=4))
    for platform in ("rk3588", "rk3566", "rv1106"):
        row = _row(lib, platform)
        est = layers(lib, conv_chain(channels=4, size=4, target=platform))[0].est_time_us
        assert est >= row.layer_overhead_us > 0
    assert len(four) == 4 * len(one)


@pytest.mark.parametrize("platform,masks", [("rk3588", (1, 3, 7)), ("rk3576", (1, 3))])
def test_multi_core_masks_speed_up_big_convolutions(lib, platform, masks):
    model = conv_chain(n_layers=2, channels=128, size=64, target=platform)
    times = [total_us(lib, model, mask) for mask in masks]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]
    assert total_us(lib, model, 0) == times[0]  # AUTO: one core, as the vendor runs one context
    with lib.init(model, abi.RKNN_FLAG_COLLECT_PERF_MASK) as ctx:
        ctx.set_core_mask(masks[-1])
        text = ctx.perf_detail()
    share = f"{100 / len(masks) if platform == 'rk3576' else 100 / 3:.1f}%"
    assert share in text  # WorkLoad shows the split over the active cores


def test_perf_detail_rows_add_up_to_the_total_and_perf_run(lib):
    model = conv_chain(n_layers=3, act="SiLU", channels=16, size=16, target="rk3576")
    with lib.init(model, abi.RKNN_FLAG_COLLECT_PERF_MASK) as ctx:
        ctx.infer([np.zeros((1, 16, 16, 16), np.float32)])
        ctx.set_core_mask(3)
        text = ctx.perf_detail()
        run_us = ctx.perf_run_us()
    rows, total = parse_perf_detail(text)
    assert [r["op_type"] for r in rows] == ["InputOperator"] + ["ConvExSwish"] * 3 + ["OutputOperator"]
    assert sum(r["time_us"] for r in rows) == total == run_us > 0
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ID "))
    assert lines[header].split()[:9] == ["ID", "OpType", "DataType", "Target", "InputShape", "OutputShape",
                                         "Cycles(DDR/NPU/Total)", "Time(us)", "MacUsage(%)"]


def _row(lib: RuntimeLibrary, name: str):
    from rknnlink.runtime.platforms import find_platform
    return find_platform(name)


def test_every_accepted_platform_has_its_own_row(lib):
    from rknnlink.runtime.platforms import platform_table
    table = {p.name: p for p in platform_table()}
    toolkit = ("rv1103", "rv1103b", "rv1106", "rv1106b", "rv1126b", "rk2118", "rk3562", "rk3566", "rk3568",
               "rk3576", "rk3588")  # RKNN-Toolkit2 2.5.0 config(target_platform=...) docstring
    assert tuple(table) == toolkit
    for name, row in table.items():
        model = conv_chain(channels=8, size=8, target=name)
        with lib.init(model, abi.RKNN_FLAG_COLLECT_PERF_MASK) as ctx:
            text = ctx.perf_detail()
            layer = ctx.layer_infos()[0]
        # the layer is costed with this row's constants, not another platform's: 8 output channels occupy a
        # block of 32, and 512 outputs x 4 x 128 MAC slots (the output stage) exceed the padded MACs
        work = max(layer.macs * 4, 8 * 8 * 8 * 4 * 128)
        expected = row.layer_overhead_us + (work / (row.dense_macs_per_cycle * row.fp16_ratio * row.npu_hz)
                                            + layer.bytes_rw / row.ddr_bytes_per_s) * 1e6
        assert layer.est_time_us == pytest.approx(expected, rel=1e-9), name
        workload = parse_perf_detail(text)[0][1]["workload"]  # the conv row
        assert workload.count("/") == row.cores - 1, name
    assert table["rk3576"].dense_macs_per_cycle < table["rk3588"].dense_macs_per_cycle * \
        table["rk3576"].peak_int8_macs_per_cycle / table["rk3588"].peak_int8_macs_per_cycle
    assert len({(p.layer_overhead_us, p.dense_macs_per_cycle, p.ddr_bytes_per_s) for p in table.values()}) >= 6


def test_facade_builder_and_daemon_read_the_one_table():
    from rknnlink.api import platforms as facade
    from rknnlink.model import builder
    from rknnlink.runtime.platforms import platform_table
    from rknnlink_server import device
    table = platform_table()
    names = tuple(p.name for p in table)
    assert facade.SUPPORTED_PLATFORMS == names == builder.TARGET_PLATFORMS
    assert sorted(device.KNOWN_PLATFORMS) == sorted(names)
    for p in table:
        assert facade.traits(p.name).cores == device.npu_cores(p.name) == p.cores
        assert facade.traits(p.name).perf_detail == p.perf_detail
    assert {p.name for p in table if p.cores > 1} == {"rk3588", "rk3576"}
    assert {p.name for p in table if not p.perf_detail} == {"rv1103", "rv1103b", "rv1106", "rv1106b"}


def test_board_detects_b_variants_before_their_prefix(tmp_path):
    from rknnlink_server.device import detect_platform
    for soc in ("rv1106b", "rv1103b", "rk3588"):
        compatible = tmp_path / soc
        compatible.write_bytes(f"vendor,board\0rockchip,{soc}\0".encode())
        assert detect_platform(compatible) == soc


def test_every_row_is_physically_plausible_and_keeps_the_ties(lib):
    from rknnlink.runtime.platforms import platform_table
    for row in platform_table():
        # the fit bounds the dense rate by the published int8 peak and the bandwidth by the DDR peak (3 digits)
        assert row.dense_macs_per_cycle <= row.peak_int8_macs_per_cycle * 1.005, row.name
        assert row.ddr_bytes_per_s <= row.io_bytes_per_s * 1.005, row.name
        # depthwise at a 16th of the dense rate, element-wise at the output stage's 128th (docs/cost-model.md)
        assert row.depthwise_macs_per_cycle == pytest.approx(row.dense_macs_per_cycle / 16, rel=0.01), row.name
        assert row.eltwise_per_cycle == pytest.approx(row.dense_macs_per_cycle / 128, rel=0.01), row.name
        assert 0 < row.fp16_ratio < 1 and row.layer_overhead_us > 0, row.name
