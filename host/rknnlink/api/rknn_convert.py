"""`python -m rknnlink.api.rknn_convert -t rk3588 -i ./model_config.yml -o ./` (the toolkit's rknn_convert).

The model zoo and the toolkit's examples convert with a model_config.yml next to the model:

    models:
        name: resnet50v2               # output: <out>/<name>.rknn
        platform: onnx                 # onnx | pytorch | tflite | tensorflow | caffe | darknet
        model_file_path: ./resnet50v2.onnx
        quantize: true
        dataset: ./dataset.txt         # relative to the yml file
        configs: {mean_values: [...], std_values: [...], quant_img_RGB2BGR: false, quantized_algorithm: normal,
                  quantized_method: channel, ...}      # RKNN.config arguments
        subgraphs: {input_size_list: [[1,3,224,224]], inputs: [...], outputs: [...]}   # optional

`-i model.onnx` (or .pt) converts a model file directly; then -mean/-std/-do_Quant give the config.
-e evaluates performance and memory on the board (-d DEVICE, or the default device), -a IMAGE runs
accuracy_analysis on it.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional

log = logging.getLogger("rknnlink.api")

_CONFIG_KEYS = ("mean_values", "std_values", "quant_img_RGB2BGR", "quantized_algorithm", "quantized_method",
                "optimization_level", "quantized_hybrid_level", "model_pruning", "quantize_weight",
                "single_core_mode", "sparse_infer", "compress_weight", "inputs_yuv_fmt", "dynamic_input",
                "enable_flash_attention", "float_dtype", "custom_string")
# the yml's historical spelling of the quantised dtype
_DTYPES = {"asymmetric_quantized-8": "w8a8", "w8a8": "w8a8"}


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _literal(text: Optional[str]) -> Any:
    return None if text is None else ast.literal_eval(text)


def _config_from_yaml(configs: Dict[str, Any], target: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"target_platform": target}
    for key in _CONFIG_KEYS:
        if key in configs:
            value = configs[key]
            if key in ("quant_img_RGB2BGR", "model_pruning", "quantize_weight", "single_core_mode", "sparse_infer",
                       "compress_weight", "enable_flash_attention"):
                value = _bool(value)
            out[key] = value
    if "channel_mean_value" in configs:  # old form: "m0 m1 m2 scale"
        parts = [float(x) for x in str(configs["channel_mean_value"]).split()]
        out["mean_values"], out["std_values"] = [parts[:-1]], [[parts[-1]] * (len(parts) - 1)]
    if "quantized_dtype" in configs:
        dtype = str(configs["quantized_dtype"])
        if dtype not in _DTYPES:
            raise ValueError(f"rknn_convert: quantized_dtype {dtype!r} is not supported; use "
                             "asymmetric_quantized-8 (w8a8)")
        out["quantized_dtype"] = _DTYPES[dtype]
    return out


def _load(rknn, model: Dict[str, Any], base: Path) -> None:
    platform = str(model.get("platform", "onnx")).lower()
    sub = model.get("subgraphs") or {}
    size_list = sub.get("input_size_list", sub.get("input-size-list"))
    if isinstance(size_list, str):
        size_list = ast.literal_eval(size_list)
    path = lambda key: str(base / model[key])  # noqa: E731

    if platform == "onnx":
        rknn.load_onnx(model=path("model_file_path"), inputs=sub.get("inputs"), outputs=sub.get("outputs"),
                       input_size_list=size_list)
    elif platform == "pytorch":
        rknn.load_pytorch(model=path("pt_file_path" if "pt_file_path" in model else "model_file_path"),
                          input_size_list=size_list)
    elif platform == "tensorflow":
        rknn.load_tensorflow(tf_pb=path("model_file_path"), inputs=sub.get("inputs"), outputs=sub.get("outputs"),
                             input_size_list=size_list)
    elif platform == "tflite":
        rknn.load_tflite(model=path("model_file_path"))
    elif platform == "caffe":
        rknn.load_caffe(model=path("prototxt_file_path"), blobs=path("caffemodel_file_path"))
    elif platform == "darknet":
        rknn.load_darknet(model=path("darknet_cfg_path"), weight=path("darknet_weights_path"))
    else:
        raise ValueError(f"rknn_convert: platform {platform!r} is not supported; use onnx, pytorch, tflite, "
                         "tensorflow, caffe or darknet")


def convert_model(config_path, target_platform: str, out_path=None, eval_perf_memory: bool = False,
                  verbose: bool = False, accuracy_analysis: Optional[str] = None, device_id=None,
                  direct: Optional[Dict[str, Any]] = None) -> int:
    """Convert one model as rknn_convert does; returns 0 (raises ValueError with the reason otherwise)."""
    import yaml

    from rknnlink.api import RKNN

    config_path = Path(config_path)
    if config_path.is_dir():
        config_path = config_path / "model_config.yml"
    if not config_path.is_file():
        raise ValueError(f"rknn_convert: model config {config_path} not exist!")
    base = config_path.resolve().parent
    if direct is not None:
        model = {"name": config_path.stem, "platform": "pytorch" if config_path.suffix == ".pt" else "onnx",
                 "model_file_path": config_path.name, "quantize": direct.get("dataset") is not None,
                 "dataset": direct.get("dataset"), "configs": direct.get("configs", {}),
                 "subgraphs": direct.get("subgraphs", {})}
    else:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        model = document.get("models")
        if not isinstance(model, dict):
            raise ValueError(f"rknn_convert: {config_path} has no 'models:' mapping (see the docstring)")
    out_dir = Path(out_path) if out_path else base
    out_dir.mkdir(parents=True, exist_ok=True)
    rknn = RKNN(verbose=verbose)
    try:
        rknn.config(**_config_from_yaml(model.get("configs") or {}, target_platform))
        _load(rknn, model, base)
        quantize = _bool(model.get("quantize", False))
        dataset = str(base / model["dataset"]) if quantize and model.get("dataset") else None
        rknn.build(do_quantization=quantize, dataset=dataset)
        export = out_dir / f"{model.get('name') or config_path.stem}.rknn"
        rknn.export_rknn(str(export))
        print(f"output rknn path: {export}")
        if eval_perf_memory:
            rknn.init_runtime(target=target_platform, device_id=device_id, perf_debug=False, eval_mem=True)
            rknn.eval_perf()
            rknn.eval_memory()
        if accuracy_analysis is not None:
            target = target_platform if device_id is not None else None
            rknn.accuracy_analysis(inputs=[accuracy_analysis], target=target, device_id=device_id)
    finally:
        rknn.release()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rknnlink.api.rknn_convert",
                                     description="Convert a model as described by model_config.yml (or a model "
                                                 "file) to .rknn, as RKNN-Toolkit2's rknn_convert does.")
    parser.add_argument("-i", "--input", required=True, help="model_config.yml (or its folder), or a model file")
    parser.add_argument("-o", "--output", help="output folder (default: the yml's folder)")
    parser.add_argument("-t", "--target_platform", required=True, help="e.g. rk3588, rk3566")
    parser.add_argument("-e", "--eval_perf_memory", action="store_true", help="evaluate perf and memory")
    parser.add_argument("-a", "--accuracy_analysis", help="an image or .npy for accuracy_analysis")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-d", "--device_id", nargs="?", const=None, default=None, help="board device id")
    parser.add_argument("-mean", "--mean", help="direct mode: mean values, e.g. [[0,0,0]]")
    parser.add_argument("-std", "--std", help="direct mode: std values, e.g. [[255,255,255]]")
    parser.add_argument("-do_Quant", "--do_Quant", help="direct mode: dataset.txt (int8); without it float16")
    parser.add_argument("-onnx_inputs", "--onnx_inputs", help="direct mode: input names, e.g. ['images']")
    parser.add_argument("-onnx_outputs", "--onnx_outputs", help="direct mode: output names")
    parser.add_argument("-dynamic_input", "--dynamic_input", help="direct mode: shape sets")
    parser.add_argument("-RGB2BGR", "--quant_img_RGB2BGR", help="direct mode: true/false")
    parser.add_argument("-Quant_algorithm", "--quantized_algorithm", default="normal")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname).1s %(name)s: %(message)s")
    direct = None
    if Path(args.input).suffix.lower() in (".onnx", ".pt"):
        configs: Dict[str, Any] = {"quantized_algorithm": args.quantized_algorithm}
        for key, value in (("mean_values", _literal(args.mean)), ("std_values", _literal(args.std)),
                           ("dynamic_input", _literal(args.dynamic_input))):
            if value is not None:
                configs[key] = value
        if args.quant_img_RGB2BGR is not None:
            configs["quant_img_RGB2BGR"] = _bool(args.quant_img_RGB2BGR)
        dataset = str(Path(args.do_Quant).resolve()) if args.do_Quant else None
        direct = {"configs": configs, "dataset": dataset,
                  "subgraphs": {"inputs": _literal(args.onnx_inputs), "outputs": _literal(args.onnx_outputs)}}
    try:
        return convert_model(args.input, args.target_platform, args.output, args.eval_perf_memory, args.verbose,
                             args.accuracy_analysis, args.device_id, direct=direct)
    except ValueError as exc:
        print(f"rknn_convert: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
