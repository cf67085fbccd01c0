"""Transformer and modern-CNN blocks exported from torch build and match onnxruntime fp32 (fp16 cosine
>= 0.9999, int8 cosine >= 0.99, calibrated on 8 samples of the test distribution): a ViT encoder block at
opset 17 and 20 (both GELU approximations), a ConvNeXt block, CRNN heads with a bidirectional LSTM / GRU."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_ops_vs_onnxruntime import cosine

from rknnlink.model.builder import BuildConfig, build, load_onnx

torch = pytest.importorskip("torch")
nn = torch.nn
LOG = logging.getLogger(__name__)
FP16_COS, INT8_COS = 0.9999, 0.99


class VitBlock(nn.Module):
    """Pre-norm encoder block: LayerNorm, MatMul attention with Softmax, LayerNorm, MLP with GELU."""

    def __init__(self, dim: int = 32, heads: int = 4, approximate: str = "none") -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channels-last LayerNorm, pointwise MLP with GELU, layer scale, residual."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.act = nn.GELU()
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.fc2(self.act(self.fc1(self.ln(y))))
        return x + y.permute(0, 3, 1, 2)


class RecurrentHead(nn.Module):
    """CRNN-style head: a column conv, then a bidirectional LSTM or GRU over the width, then a classifier."""

    def __init__(self, cell: str = "LSTM", channels: int = 8, hidden: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, (4, 3), padding=(0, 1))
        self.rnn = getattr(nn, cell)(channels, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x).squeeze(2).permute(2, 0, 1)  # [W, N, C]
        return self.fc(self.rnn(f)[0])


def _export(module: nn.Module, shape: tuple, opset: int) -> onnx.ModelProto:
    torch.manual_seed(0)
    for p in module.parameters():  # trained-looking weights: not the default init's near-identity
        if p.ndim > 1:
            nn.init.normal_(p, 0.0, 0.2)
    f = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.randn(*shape),), f, opset_version=opset, dynamo=False,
                      input_names=["x"], output_names=["y"])
    return onnx.load_from_string(f.getvalue())


BLOCKS = {
    "vit_opset17": (lambda: VitBlock(), (1, 16, 32), 17),
    "vit_opset20_gelu": (lambda: VitBlock(), (1, 16, 32), 20),
    "vit_opset20_gelu_tanh": (lambda: VitBlock(approximate="tanh"), (1, 16, 32), 20),
    "convnext_opset17": (lambda: ConvNeXtBlock(), (1, 16, 14, 14), 17),
    "crnn_lstm_opset13": (lambda: RecurrentHead("LSTM"), (1, 3, 4, 20), 13),
    "crnn_gru_opset17": (lambda: RecurrentHead("GRU"), (1, 3, 4, 20), 17),
}


def _samples(shape: tuple, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, shape).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("mode", ["fp16", "int8"])
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_matches_onnxruntime(block: str, mode: str, sim_lib, tmp_path: Path):
    import onnxruntime as ort
    make, shape, opset = BLOCKS[block]
    model = _export(make(), shape, opset)
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops or "crnn" in block
    if opset >= 20:
        assert "Gelu" in ops
    x = _samples(shape, 1, 1)[0]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    dataset = None
    if mode == "int8":
        lines = []
        for i, s in enumerate(_samples(shape, 8, 100)):
            np.save(tmp_path / f"s{i}.npy", s)
            lines.append(f"s{i}.npy")
        dataset = tmp_path / "dataset.txt"
        dataset.write_text("\n".join(lines) + "\n")
    built = build(load_onnx(model), BuildConfig(progress=False), mode == "int8", dataset)
    with sim_lib.init(built.data) as ctx:
        got = np.asarray(ctx.infer([x], formats=["nchw" if len(shape) == 4 else None])[0]).reshape(ref.shape)
    c = cosine(got, ref)
    LOG.warning("%s %s cosine %.6f", block, mode, c)
    print(f"\n{block} {mode}: cosine {c:.7f}")
    assert c >= (FP16_COS if mode == "fp16" else INT8_COS), f"{block} {mode} cosine {c:.6f}"
