"""Runs one job inside the RKNN-Toolkit2 environment (executed there by path; never imported by rknnlink).

It may use only the standard library, numpy and the toolkit (`rknn.api`), because that environment has
nothing of rknnlink's. Usage: `python toolkit_runner.py SPEC.json` or `python toolkit_runner.py --probe`.

The spec (written by rknnlink.vendor.jobs):
    {"model": {"type": "onnx", "path": ..., "inputs": ..., "outputs": ..., "input_size_list": ...},
     "config": {RKNN.config keyword arguments},
     "build": {"do_quantization": bool, "dataset": path or null, "rknn_batch_size": int or null},
     "outputs": {"rknn": path, "log": path, "result": path},
     "inference": null or {"inputs": [.npy paths], "data_format": [...], "outputs_dir": dir}}
The result (JSON at outputs.result, and as the last line on stdout):
    {"ok": true, "rknn": path, "size": bytes, "toolkit_version": ..., "outputs": [.npy paths], "seconds": {...}}
    {"ok": false, "stage": "config|load|build|export|inference", "error": text}
"""

import importlib
import json
import sys
import time
import traceback


def _versions():
    import importlib.metadata as metadata

    found = {"python": sys.version.split()[0]}
    for name in ("rknn-toolkit2", "torch", "numpy", "onnx", "onnxruntime", "protobuf", "setuptools"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def probe():
    """Import the toolkit as a job would; report versions (and whether torch is a CUDA build)."""
    try:
        from rknn.api import RKNN  # noqa: F401 - the import itself is the check (first: it fails fast)

        torch = importlib.import_module("torch")  # already imported by the toolkit
    except Exception as exc:  # noqa: BLE001 - reported to rknnlink as text
        return {"error": f"{type(exc).__name__}: {exc}"}
    found = _versions()
    found["torch_cuda"] = getattr(torch.version, "cuda", None)
    return found


class _JobFailedError(Exception):
    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def _call(stage, fn, *args, **kwargs):
    """The toolkit returns -1 for some failures and raises ValueError for others: both become _JobFailedError."""
    try:
        ret = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).strip().splitlines()
        raise _JobFailedError(stage, f"{type(exc).__name__}: {text[-1] if text else ''}") from exc
    if isinstance(ret, int) and ret != 0:
        raise _JobFailedError(stage, f"RKNN.{fn.__name__} returned {ret} (see the toolkit log)")
    return ret


def _load(rknn, model):
    kind = model.get("type", "onnx")
    if kind != "onnx":
        raise _JobFailedError("load", f"model type {kind!r} is not supported by the bridge (use onnx)")
    kwargs = {k: model[k] for k in ("inputs", "outputs", "input_size_list") if model.get(k) is not None}
    _call("load", rknn.load_onnx, model=model["path"], **kwargs)


def _infer(rknn, spec, result):
    import numpy as np

    arrays = [np.load(p) for p in spec["inputs"]]
    _call("inference", rknn.init_runtime)
    outputs = _call("inference", rknn.inference, inputs=arrays, data_format=spec.get("data_format"))
    if outputs is None:
        raise _JobFailedError("inference", "RKNN.inference returned None (see the toolkit log)")
    paths = []
    for i, value in enumerate(outputs):
        path = f"{spec['outputs_dir']}/output{i}.npy"
        np.save(path, np.asarray(value))
        paths.append(path)
    result["outputs"] = paths


def run(spec):
    from rknn.api import RKNN

    out = spec["outputs"]
    seconds = {}
    result = {"ok": True, "toolkit_version": _versions().get("rknn-toolkit2")}
    rknn = RKNN(verbose=True, verbose_file=out["log"])
    try:
        t0 = time.monotonic()
        _call("config", rknn.config, **spec.get("config", {}))
        _load(rknn, spec["model"])
        seconds["load"] = time.monotonic() - t0
        build = spec.get("build", {})
        t0 = time.monotonic()
        _call("build", rknn.build, do_quantization=bool(build.get("do_quantization")),
              dataset=build.get("dataset"), rknn_batch_size=build.get("rknn_batch_size"))
        seconds["build"] = time.monotonic() - t0
        _call("export", rknn.export_rknn, out["rknn"])
        with open(out["rknn"], "rb") as f:
            result["size"] = len(f.read())
        result["rknn"] = out["rknn"]
        if spec.get("inference"):
            t0 = time.monotonic()
            _infer(rknn, spec["inference"], result)
            seconds["inference"] = time.monotonic() - t0
    finally:
        rknn.release()
    result["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return result


def main(argv):
    if argv[1:] == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) != 2:
        print(json.dumps({"ok": False, "stage": "spec", "error": "usage: toolkit_runner.py SPEC.json | --probe"}))
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    try:
        result = run(spec)
    except _JobFailedError as exc:
        result = {"ok": False, "stage": exc.stage, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - anything else is reported, with where it happened
        result = {"ok": False, "stage": "runner", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
    text = json.dumps(result)
    with open(spec["outputs"]["result"], "w") as f:
        f.write(text)
    print(text)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
