"""`make demo`: the whole connected-board flow against a simulated RK3588 board daemon, in one run.

It writes a small CNN as ONNX, builds an int8 model with a calibration set, starts `rknnlink serve` on
loopback (a simulated board), then runs the toolkit-style script: init_runtime(target='rk3588') reaching the
board through RKNNLINK_DEVICE, inference, eval_perf, eval_memory and get_sdk_version. Each step has a heading;
the run ends with what to do next.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_demo_onnx(path: Path, seed: int = 0) -> None:
    """A small classifier: conv-relu, depthwise conv-relu6, pointwise conv, global pool, fully connected."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32),
                                       name)

    inits = [weight("w1", 16, 3, 3, 3), numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
             weight("w2", 16, 1, 3, 3), weight("w3", 32, 16, 1, 1), weight("fc_w", 10, 32),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fc_b"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4,
                         strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="dwconv", kernel_shape=[3, 3], pads=[1] * 4, group=16),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="pwconv", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["gap"], name="pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "rknnlink_demo",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_calibration_set(folder: Path, count: int = 8, seed: int = 1) -> Path:
    """Random uint8-range images saved as NHWC .npy files, listed in dataset.txt."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        name = f"calib_{i}.npy"
        np.save(folder / name, rng.integers(0, 256, (64, 64, 3)).astype(np.float32))
        lines.append(name)
    dataset = folder / "dataset.txt"
    dataset.write_text("\n".join(lines) + "\n")
    return dataset


NEXT_STEPS = """
Next: run your own RKNN-Toolkit2 script unchanged, with only its import changed:

    from rknnlink.api import RKNN          # was: from rknn.api import RKNN

    RKNNLINK_DEVICE=sim python your_script.py   # connected-board calls on a simulated board
    python your_script.py                      # init_runtime() without a target: the simulated NPU here

The toolkit's examples read images with OpenCV: pip install 'rknnlink[examples]' (opencv-python).
With a board on USB (adb), `rknnlink deploy` installs the daemon and scripts use it as they are.
Docs: docs/toolkit-compatibility.md (every difference from the toolkit), README.md.
"""


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def main() -> int:
    """The demo, with a heading per step; the connected-board part goes through the default-device setting
    (RKNNLINK_DEVICE) as an unchanged toolkit script would."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    from rknnlink.api import RKNN
    from rknnlink.client.local import start_local_daemon

    total = 5
    with tempfile.TemporaryDirectory(prefix="rknnlink-demo-") as tmp:
        work = Path(tmp)
        _step(1, total, "Writing a small CNN (ONNX) and 8 calibration images")
        make_demo_onnx(work / "demo.onnx")
        dataset = make_calibration_set(work)
        _step(2, total, "Building an int8 model for rk3588 (config, load_onnx, build, export_rknn)")
        rknn = RKNN()
        rknn.config(mean_values=[[127.5, 127.5, 127.5]], std_values=[[127.5, 127.5, 127.5]],
                    target_platform="rk3588")
        rknn.load_onnx(str(work / "demo.onnx"))
        rknn.build(do_quantization=True, dataset=str(dataset))
        rknn.export_rknn(str(work / "demo.rknn"))
        print(f"    exported {work / 'demo.rknn'}")
        _step(3, total, "Starting a simulated rk3588 board (the `rknnlink serve` daemon, on loopback)")
        daemon = start_local_daemon(platform="rk3588", backend="sim")
        previous = os.environ.get("RKNNLINK_DEVICE")
        os.environ["RKNNLINK_DEVICE"] = f"tcp:{daemon.address}"
        try:
            print(f"    listening on {daemon.address}; RKNNLINK_DEVICE=tcp:{daemon.address}")
            _step(4, total, "Connected-board run: init_runtime(target='rk3588') and inference")
            rknn.init_runtime(target="rk3588", perf_debug=True, eval_mem=True)
            image = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
            outputs = rknn.inference(inputs=[image], data_format="nhwc")
            print(f"    inference: output shape {outputs[0].shape}, top-1 class {int(np.argmax(outputs[0]))}")
            _step(5, total, "Profiling on the board: eval_perf, eval_memory, get_sdk_version")
            rknn.eval_perf()
            rknn.eval_memory()
            print(rknn.get_sdk_version(), end="")
            rknn.release()
        finally:
            daemon.stop()
            if previous is None:
                os.environ.pop("RKNNLINK_DEVICE", None)
            else:
                os.environ["RKNNLINK_DEVICE"] = previous
    print(NEXT_STEPS, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
