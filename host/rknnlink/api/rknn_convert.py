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

`-i model.onnx` (or .pt) converts a model file directly with the toolkit's options: -mean, -std,
-do_Quant dataset.txt, -onnx_inputs "{'name': [shape]}", -onnx_outputs, -dynamic_input, -RGB2BGR,
-Quant_algorithm, -Quant_dtype, -compress_weight, -single_core_mode, -custom_hybrid "[['start', 'end']]"
(hybrid quantization steps 1 and 2 in the working directory); `-i model.rknn` loads a model for -e / -a.
-e evaluates performance and memory on the board (-d SERIAL, or the default device), -a "x.jpg ..." runs
accuracy_analysis (on the board with -d, else on the simulator).
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
                  verbose: bool = False, accuracy_analysis: Optional[str] = None, device_id=None) -> int:
    """Convert the model of a model_config.yml as rknn_convert does; returns 0 (raises ValueError with the
    reason otherwise)."""
    import yaml

    config_path = Path(config_path)
    if config_path.is_dir():
        config_path = config_path / "model_config.yml"
    if not config_path.is_file():
        raise ValueError(f"rknn_convert: model config {config_path} not exist!")
    base = config_path.resolve().parent
    document = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    model = document.get("models")
    if not isinstance(model, dict):
        raise ValueError(f"rknn_convert: {config_path} has no 'models:' mapping (see the docstring)")
    out_dir = Path(out_path) if out_path else base
    rknn = _rknn(verbose)
    try:
        rknn.config(**_config_from_yaml(model.get("configs") or {}, target_platform))
        _load(rknn, model, base)
        quantize = _bool(model.get("quantize", False))
        dataset = str(base / model["dataset"]) if quantize and model.get("dataset") else None
        rknn.build(do_quantization=quantize, dataset=dataset)
        _export_and_check(rknn, out_dir / f"{model.get('name') or config_path.stem}.rknn", target_platform,
                          eval_perf_memory, accuracy_analysis, device_id)
    finally:
        rknn.release()
    return 0


def convert_file(model_path, target_platform: str, out_path=None, configs: Optional[Dict[str, Any]] = None,
                 dataset: Optional[str] = None, inputs: Any = None, outputs: Optional[list] = None,
                 custom_hybrid: Optional[list] = None, eval_perf_memory: bool = False, verbose: bool = False,
                 accuracy_analysis: Optional[str] = None, device_id=None) -> int:
    """rknn_convert's direct mode: a .onnx (or .pt) converted with the command line's config, written as
    <out>/<model>.rknn; a .rknn is loaded as it is for -e / -a. `inputs` is the toolkit's
    {name: shape} (or a list of names); `custom_hybrid` runs hybrid quantization steps 1 and 2 in the
    working directory, as the toolkit does."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ValueError(f"rknn_convert: model {model_path} not exist!")
    suffix = model_path.suffix.lower()
    if suffix not in (".onnx", ".pt", ".rknn"):
        raise ValueError(f"rknn_convert: {model_path.name}: give a model_config.yml, a .onnx, .pt or .rknn file")
    if custom_hybrid and not dataset:
        raise ValueError("rknn_convert: -custom_hybrid needs -do_Quant dataset.txt (hybrid quantization is int8)")
    rknn = _rknn(verbose)
    try:
        if suffix == ".rknn":
            rknn.load_rknn(str(model_path))
            _export_and_check(rknn, None, target_platform, eval_perf_memory, accuracy_analysis, device_id)
            return 0
        rknn.config(target_platform=target_platform, **(configs or {}))
        names, sizes = (list(inputs), list(inputs.values())) if isinstance(inputs, dict) else (inputs, None)
        if suffix == ".pt":
            rknn.load_pytorch(model=str(model_path), input_size_list=sizes)
        else:
            rknn.load_onnx(model=str(model_path), inputs=names, outputs=outputs, input_size_list=sizes)
        if custom_hybrid:
            rknn.hybrid_quantization_step1(dataset=dataset, custom_hybrid=custom_hybrid)
            stem = model_path.stem
            rknn.hybrid_quantization_step2(model_input=f"{stem}.model", data_input=f"{stem}.data",
                                           model_quantization_cfg=f"{stem}.quantization.cfg")
        else:
            rknn.build(do_quantization=dataset is not None, dataset=dataset)
        out_dir = Path(out_path) if out_path else model_path.resolve().parent
        _export_and_check(rknn, out_dir / f"{model_path.stem}.rknn", target_platform, eval_perf_memory,
                          accuracy_analysis, device_id)
        _log_command(out_dir)
    finally:
        rknn.release()
    return 0


def _rknn(verbose: bool):
    from rknnlink.api import RKNN

    return RKNN(verbose=verbose)


def _export_and_check(rknn, export: Optional[Path], target_platform: str, eval_perf_memory: bool,
                      accuracy_analysis: Optional[str], device_id) -> None:
    if export is not None:
        export.parent.mkdir(parents=True, exist_ok=True)
        rknn.export_rknn(str(export))
        print(f"output rknn path: {export}")
    """Export, then -e (perf and memory on the board) and -a (accuracy_analysis: on the board when -d was
    given, `device_id` "" meaning the default device, else on the simulator)."""
    if eval_perf_memory:
        rknn.init_runtime(target=target_platform, device_id=device_id or None, perf_debug=False, eval_mem=True)
        rknn.eval_perf()
        rknn.eval_memory()
    if accuracy_analysis is not None:
        target = target_platform if device_id is not None else None
        rknn.accuracy_analysis(inputs=accuracy_analysis.split(), target=target, device_id=device_id or None)


def _log_command(out_dir: Path) -> None:
    """rknn_convert_log.txt in the output folder: the time and the command line, as the toolkit keeps it."""
    import datetime

    with open(out_dir / "rknn_convert_log.txt", "a", encoding="utf-8") as log_file:
        log_file.write(f"{datetime.datetime.now()}:\n{' '.join(sys.argv)}\n\n")


def _flag(parser: argparse.ArgumentParser, short: str, long: str, help: str) -> None:
    """A toolkit switch: given alone it is true (`-e`); an explicit value is read too (`-RGB2BGR false`)."""
    parser.add_argument(short, long, nargs="?", const=True, default=False, type=_bool, help=help)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rknnlink.api.rknn_convert",
                                     description="Convert a model as described by model_config.yml (or a model "
                                                 "file) to .rknn, as RKNN-Toolkit2's rknn_convert does.")
    parser.add_argument("-i", "--input", required=True,
                        help="model_config.yml (or its folder), or a model file: .onnx, .pt, .rknn")
    parser.add_argument("-o", "--output", help="output folder (default: the yml's or the model's folder)")
    parser.add_argument("-t", "--target_platform", required=True, help="e.g. rk3588, rk3566")
    _flag(parser, "-e", "--eval_perf_memory", "evaluate perf and memory on the board (-d, or the default device)")
    parser.add_argument("-a", "--accuracy_analysis", help='accuracy_analysis inputs, e.g. "xx1.jpg xx2.jpg"; '
                                                          "on the board with -d")
    _flag(parser, "-v", "--verbose", "detailed log")
    parser.add_argument("-d", "--device_id", nargs="?", const="", default=None,
                        help="the board: -d alone for the only/default device, -d SERIAL for one of several")
    parser.add_argument("-mean", "--mean", help='direct mode: mean values, e.g. "[0,0,0]" or "[[127],[127],[127]]"')
    parser.add_argument("-std", "--std", help='direct mode: std values, e.g. "[255,255,255]"')
    parser.add_argument("-do_Quant", "--do_Quant", help="direct mode: dataset.txt (int8); without it float16")
    parser.add_argument("-onnx_inputs", "--onnx_inputs",
                        help="direct mode: inputs and their shapes, e.g. \"{'images':[1,3,640,640]}\"")
    parser.add_argument("-onnx_outputs", "--onnx_outputs", help="direct mode: output names, e.g. \"['output0']\"")
    parser.add_argument("-dynamic_input", "--dynamic_input", help='direct mode: shape sets, e.g. '
                                                                  '"[[[1,3,256,256]],[[1,3,160,160]]]"')
    _flag(parser, "-RGB2BGR", "--quant_img_RGB2BGR", "direct mode: quant_img_RGB2BGR")
    parser.add_argument("-Quant_algorithm", "--quantized_algorithm", default="normal",
                        help="direct mode: normal, mmse or kl_divergence")
    parser.add_argument("-Quant_dtype", "--quantized_dtype", default="w8a8", help="direct mode: w8a8")
    _flag(parser, "-compress_weight", "--compress_weight", "direct mode: config(compress_weight=True)")
    _flag(parser, "-single_core_mode", "--single_core_mode", "direct mode: config(single_core_mode=True)")
    parser.add_argument("-custom_hybrid", "--custom_hybrid",
                        help="direct mode: sub-graphs kept out of int8, \"[['start_tensor','end_tensor']]\"")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname).1s %(name)s: %(message)s")
    try:
        if Path(args.input).suffix.lower() in (".onnx", ".pt", ".rknn"):
            configs: Dict[str, Any] = {"quantized_algorithm": args.quantized_algorithm,
                                       "quantized_dtype": args.quantized_dtype,
                                       "quant_img_RGB2BGR": args.quant_img_RGB2BGR,
                                       "compress_weight": args.compress_weight,
                                       "single_core_mode": args.single_core_mode}
            for key, value in (("mean_values", _literal(args.mean)), ("std_values", _literal(args.std)),
                               ("dynamic_input", _literal(args.dynamic_input))):
                if value is not None:
                    configs[key] = value
            dataset = str(Path(args.do_Quant).resolve()) if args.do_Quant else None
            return convert_file(args.input, args.target_platform, args.output, configs, dataset,
                                _literal(args.onnx_inputs), _literal(args.onnx_outputs), _literal(args.custom_hybrid),
                                args.eval_perf_memory, args.verbose, args.accuracy_analysis, args.device_id)
        return convert_model(args.input, args.target_platform, args.output, args.eval_perf_memory, args.verbose,
                             args.accuracy_analysis, args.device_id)
    except (ValueError, SyntaxError) as exc:
        print(f"rknn_convert: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
