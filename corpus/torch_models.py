"""Standard architectures written in torch (torchvision's compiled ops do not load against the CPU torch
these machines carry), small enough for a 2-core machine, with every operator family the paper versions
use: residual blocks, HardSwish/HardSigmoid squeeze-excite, SiLU MBConv, ConvNeXt's LayerNorm/GELU/dw7x7,
ViT attention, a DETR-style decoder, a U-Net with ConvTranspose/Resize/Concat, and a CRNN with an LSTM.

Each ``make_*`` takes ``small`` (a reduced copy for CI) and returns an ``nn.Module`` with seeded weights;
:func:`recalibrate_batchnorm` then re-estimates BatchNorm statistics on real images so that random
weights still give sane activations (as the toolkit measurement did).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------ ResNet18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + idt)


class ResNet18(nn.Module):
    def __init__(self, widths: tuple = (64, 128, 256, 512), blocks: tuple = (2, 2, 2, 2), classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if j == 0 and i > 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_resnet18(small: bool = False) -> nn.Module:
    return ResNet18((16, 32, 64, 128), (1, 1, 1, 1), 100) if small else ResNet18()


# -------------------------------------------------------------------------------------- MobileNetV3


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, gate: type = nn.Hardsigmoid, act: type = nn.ReLU) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3's bneck / EfficientNet's MBConv: expand 1x1, depthwise kxk, SE, project 1x1."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, s: int, se: bool, act: type,
                 gate: type = nn.Hardsigmoid, se_act: type = nn.ReLU, se_div: int = 4) -> None:
        super().__init__()
        layers = [conv_bn(cin, exp, 1, act=act)] if exp != cin else []
        layers.append(conv_bn(exp, exp, k, s, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, max(8, exp // se_div), gate, se_act))
        layers.append(conv_bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


_MNV3_SMALL = [  # k, exp, out, se, act, stride (MobileNetV3-Small)
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


class MobileNetV3(nn.Module):
    def __init__(self, cfg: list, last: int = 1024, classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)], 16
        for k, exp, out, se, act, s in cfg:
            layers.append(InvertedResidual(cin, exp, out, k, s, se, nn.Hardswish if act == "HS" else nn.ReLU))
            cin = out
        layers.append(conv_bn(cin, cin * 6, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin * 6, last), nn.Hardswish(), nn.Linear(last, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def make_mobilenetv3(small: bool = False) -> nn.Module:
    return MobileNetV3(_MNV3_SMALL[:4], 128, 100) if small else MobileNetV3(_MNV3_SMALL)


# ------------------------------------------------------------------------------------ EfficientNet


_EFFNET_B0 = [  # expand, k, stride, out, repeats
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class EfficientNet(nn.Module):
    def __init__(self, cfg: list, classes: int = 1000) -> None:
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2, act=nn.SiLU)], 32
        for e, k, s, out, n in cfg:
            for j in range(n):
                layers.append(InvertedResidual(cin, cin * e, out, k, s if j == 0 else 1, True, nn.SiLU,
                                               nn.Sigmoid, nn.SiLU, se_div=4 * e))
                cin = out
        layers.append(conv_bn(cin, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def make_efficientnet(small: bool = False) -> nn.Module:
    return EfficientNet(_EFFNET_B0[:3], 100) if small else EfficientNet(_EFFNET_B0)


# --------------------------------------------------------------------------------------- ConvNeXt


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's channels-first LayerNorm: permute to NHWC, normalise over C, permute back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.act = nn.GELU()
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims: tuple, depths: tuple, classes: int = 1000) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [ConvNeXtBlock(d) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.norm, self.fc = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.features(x).mean((2, 3))))


def make_convnext(small: bool = False) -> nn.Module:
    return ConvNeXt((16, 32, 64), (1, 1, 1), 100) if small else ConvNeXt((48, 96, 192, 384), (2, 2, 4, 2))


# -------------------------------------------------------------------------------------------- ViT


class Attention(nn.Module):
    """Multi-head attention written out (MatMul/Softmax), as most exports look."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        mem = x if mem is None else mem
        b, n, d = x.shape
        m = mem.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k = self.k(mem).reshape(b, m, h, d // h).transpose(1, 2)
        v = self.v(mem).reshape(b, m, h, d // h).transpose(1, 2)
        a = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, gelu: str = "none", cross: bool = False) -> None:
        super().__init__()
        self.n1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.n2, self.xattn = (nn.LayerNorm(dim), Attention(dim, heads)) if cross else (None, None)
        self.n3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate=gelu), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        if self.xattn is not None:
            x = x + self.xattn(self.n2(x), mem)
        return x + self.mlp(self.n3(x))


class ViT(nn.Module):
    def __init__(self, size: int, patch: int, dim: int, depth: int, heads: int, classes: int,
                 gelu: str = "none") -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, gelu) for _ in range(depth)])
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        return self.fc(self.norm(self.blocks(t))[:, 0])


def make_vit(small: bool = False, size: int = 224, gelu: str = "none") -> nn.Module:
    if small:
        return ViT(size, 16, 64, 1, 2, 100, gelu)
    return ViT(size, 16, 192, 4, 3, 1000, gelu)


# --------------------------------------------------------------------------------------- DETR-like


class DETRLike(nn.Module):
    """Conv backbone, transformer encoder over the feature map, decoder with learned object queries
    (cross-attention), class logits and sigmoid boxes per query."""

    def __init__(self, size: int, dim: int, queries: int, classes: int, enc: int, dec: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 32, 3, 2), conv_bn(32, 64, 3, 2), conv_bn(64, 64, 3, 2),
                                      conv_bn(64, dim, 3, 2), conv_bn(dim, dim, 3, 2))
        self.pos = nn.Parameter(torch.randn(1, (size // 32) ** 2, dim) * 0.1)
        self.query = nn.Parameter(torch.randn(1, queries, dim))
        self.enc = nn.Sequential(*[TransformerBlock(dim, 4) for _ in range(enc)])
        self.dec = nn.ModuleList([TransformerBlock(dim, 4, cross=True) for _ in range(dec)])
        self.cls, self.box = nn.Linear(dim, classes + 1), nn.Sequential(nn.Linear(dim, dim), nn.ReLU(),
                                                                         nn.Linear(dim, 4))

    def forward(self, x: torch.Tensor) -> tuple:
        mem = self.enc(self.backbone(x).flatten(2).transpose(1, 2) + self.pos)
        q = self.query.expand(x.shape[0], -1, -1)
        for blk in self.dec:
            q = blk(q, mem)
        return self.cls(q), torch.sigmoid(self.box(q))


def make_detr(small: bool = False) -> nn.Module:
    return DETRLike(64, 32, 8, 10, 1, 1) if small else DETRLike(256, 128, 20, 80, 2, 2)


# ------------------------------------------------------------------------------------------ U-Net


class UNet(nn.Module):
    def __init__(self, widths: tuple, classes: int) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(nn.Sequential(conv_bn(cin, w), conv_bn(w, w)))
            cin = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i, w in enumerate(reversed(widths[:-1])):
            # alternate the two upsampling styles U-Nets use: learned (ConvTranspose) and Resize + conv
            self.up.append(nn.ConvTranspose2d(cin, w, 2, 2) if i % 2 == 0 else
                           nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, w, 1)))
            self.dec.append(nn.Sequential(conv_bn(2 * w, w), conv_bn(w, w)))
            cin = w
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


def make_unet(small: bool = False) -> nn.Module:
    return UNet((8, 16, 32), 3) if small else UNet((16, 32, 64, 128), 6)


# ------------------------------------------------------------------------------------------- CRNN


class CRNN(nn.Module):
    """Conv feature extractor over a text line (height collapsed to 1), bidirectional LSTM, per-step
    class scores for CTC decoding."""

    def __init__(self, height: int, hidden: int, classes: int, rnn: str = "lstm") -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 32), nn.MaxPool2d(2), conv_bn(32, 64), nn.MaxPool2d(2),
                                      conv_bn(64, 96), nn.MaxPool2d((2, 1)), conv_bn(96, 128))
        self.collapse = nn.Conv2d(128, 128, (height // 8, 1))
        cell = nn.LSTM if rnn == "lstm" else nn.GRU
        self.rnn = cell(128, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.collapse(self.features(x)).squeeze(2).transpose(1, 2)
        return self.fc(self.rnn(f)[0])


def make_crnn(small: bool = False) -> nn.Module:
    return CRNN(32, 32, 40) if small else CRNN(32, 96, 97)


# ---------------------------------------------------------------------------------------- helpers


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 4) -> None:
    """Re-estimate every BatchNorm's running mean/var on ``images`` (cumulative average), so that random
    weights give activations of sane size in every layer, then switch to eval mode.

    On one thread: with several, the batch statistics' float sums are split across threads in an order
    that varies from run to run, so two builds of one model differed in their last bits (every BatchNorm
    model of the corpus, 2026-12-04) and a toolkit column measured on one build was compared with
    rknnlink on another; their near-tied images flipped between builds."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(images[i:i + batch])
    finally:
        torch.set_num_threads(threads)
    model.eval()


def seeded(fn, seed: int, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return fn(**kwargs).eval()
