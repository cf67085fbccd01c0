"""LSTM and GRU gate projections on AVX-512 (runtime_c/src/ops/rnn.c) give the same bytes as the AVX2 and C
path (vmath.c sim_matvec_rows): the same rounded product and rounded sum per term, in the same order.

The kernel choice is made once per process (RKNNLINK_SIM_ISA=avx2 turns AVX-512 off), so each side runs in a
child process. The shapes cover every block of the AVX-512 form: 4-row groups and single rows of the input
projection (T * B = 7), 128- and 64-column blocks, 16-column blocks and a scalar tail (G * H = 160, 120, 84).
On a CPU without AVX-512 both children take the same path and the test checks only the agreement with
onnxruntime.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_ops_vs_onnxruntime import FP32_TOL, Case, _rng_w, make_inputs, make_model, rel_error, run_ort

from rknnlink.model.builder import BuildConfig, build

_CHILD = r"""
import sys
import numpy as np
from rknnlink.runtime import RuntimeLibrary
folder = sys.argv[1]
xs = [np.load(f"{folder}/x0.npy")]
with RuntimeLibrary.load(backend="sim").init(open(f"{folder}/model.rknn", "rb").read()) as ctx:
    outs = ctx.infer(xs, formats=[None])
for i, y in enumerate(outs):
    np.save(f"{folder}/{sys.argv[2]}_y{i}.npy", np.asarray(y))
"""


def _case(op: str, hidden: int, direction: str, lbr: int) -> Case:
    g = 4 if op == "LSTM" else 3
    d = 2 if direction == "bidirectional" else 1
    return Case(f"{op}_{hidden}_{direction}", op, [[7, 1, 37]],
                {1: _rng_w((d, g * hidden, 37), 1, 0.2), 2: _rng_w((d, g * hidden, hidden), 2, 0.2),
                 3: _rng_w((d, 2 * g * hidden), 3, 0.1)},
                dict(hidden_size=hidden, direction=direction, **({"linear_before_reset": lbr} if op == "GRU" else {})),
                n_out=3 if op == "LSTM" else 2)


CASES = [_case("LSTM", 40, "bidirectional", 0), _case("LSTM", 21, "forward", 0), _case("GRU", 40, "reverse", 1),
         _case("GRU", 28, "bidirectional", 0)]


def _run(folder: Path, tag: str, isa: str | None) -> list:
    env = dict(os.environ, RKNNLINK_SIM_THREADS="1")
    env.pop("RKNNLINK_SIM_ISA", None)
    if isa:
        env["RKNNLINK_SIM_ISA"] = isa
    done = subprocess.run([sys.executable, "-c", _CHILD, str(folder), tag], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return [np.load(p) for p in sorted(folder.glob(f"{tag}_y*.npy"))]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rnn_wide_path_is_bit_identical_to_avx2(case: Case, tmp_path: Path):
    model = make_model(case)
    xs = make_inputs(case, 1)
    np.save(tmp_path / "x0.npy", xs[0])
    built = build(model, BuildConfig(progress=False, float_dtype="float32"), False, None)
    (tmp_path / "model.rknn").write_bytes(built.data)
    wide, narrow = _run(tmp_path, "wide", None), _run(tmp_path, "avx2", "avx2")
    assert len(wide) == len(narrow) == case.n_out
    for a, b in zip(wide, narrow):
        assert a.tobytes() == b.tobytes(), f"{case.name}: AVX-512 and AVX2 outputs differ"
    for got, ref in zip(wide, run_ort(model, xs)):
        err = rel_error(np.asarray(got).reshape(ref.shape), ref)
        assert err <= FP32_TOL, f"{case.name} error {err:.2e}"
