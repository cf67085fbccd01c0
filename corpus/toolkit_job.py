"""Run one corpus model through RKNN-Toolkit2 (the reference), in the toolkit's own venv.

Standalone on purpose: it runs under the toolkit venv's python (``RKNNLINK_TOOLKIT2_PYTHON``), which has
``rknn`` but not rknnlink. Usage: ``python toolkit_job.py job.json``; the job names the ONNX file, mean/std,
input size, dataset.txt, the test .npy files (NHWC uint8), do_quantization and quantized_algorithm, and
``out`` (an .npz written with ``s{i}_o{k}`` outputs and ``build_s``). Exit code 0 on success; on failure
the toolkit's error is written to ``out + '.err'``.
"""

import json
import sys
import time
import traceback


def main(job_path: str) -> int:
    job = json.load(open(job_path))
    try:
        import numpy as np
        import onnx
        from rknn.api import RKNN
        model = onnx.load(job["onnx"])
        init = {i.name for i in model.graph.initializer}
        name = [i.name for i in model.graph.input if i.name not in init][0]
        rknn = RKNN(verbose=False)
        rknn.config(mean_values=[job["mean"]], std_values=[job["std"]], target_platform="rk3588",
                    quantized_algorithm=job.get("algorithm", "normal"),
                    quantized_method=job.get("method", "channel"))
        outputs = [o.name for o in model.graph.output]  # the toolkit wants outputs whenever inputs are given
        if rknn.load_onnx(job["onnx"], inputs=[name], input_size_list=[job["input_size"]], outputs=outputs) != 0:
            raise RuntimeError("load_onnx failed")
        t0 = time.perf_counter()
        if rknn.build(do_quantization=job["quantize"], dataset=job["dataset"]) != 0:
            raise RuntimeError("build failed")
        build_s = time.perf_counter() - t0
        if rknn.init_runtime() != 0:
            raise RuntimeError("init_runtime failed")
        arrays = {"build_s": np.float64(build_s)}
        for i, path in enumerate(job["tests"]):
            outs = rknn.inference(inputs=[np.load(path)], data_format=["nhwc"])
            if outs is None:
                raise RuntimeError("inference returned None")
            for k, o in enumerate(outs):
                arrays[f"s{i}_o{k}"] = np.asarray(o, np.float32)
        rknn.release()
        np.savez(job["out"], **arrays)
        return 0
    except Exception:
        with open(job["out"] + ".err", "w") as f:
            f.write(traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
