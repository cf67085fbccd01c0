"""rknn_model_zoo architectures in torch, at the input shapes of its published benchmark table.

Written from the published architecture descriptions (layer counts, widths, kernel sizes), with seeded random
weights: weights do not change NPU latency. BatchNorm is left out wherever the toolkit folds it into the
preceding convolution anyway, so every ``conv()`` below is a biased convolution plus its activation. Detector
heads are cut where the zoo's export scripts cut them: YOLO decoding (grid, anchors, DFL, NMS) runs on the CPU,
so the graphs end at the per-level head convolutions (plus the sigmoid / score-sum outputs the zoo keeps).

``ZOO`` maps a model name of ../shared/reference/zoo-benchmark.md to (constructor, input shape).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

SiLU, ReLU, LReLU = nn.SiLU, nn.ReLU, (lambda: nn.LeakyReLU(0.1))


def conv(c1: int, c2: int, k=1, s=1, p=None, g=1, d=1, act: Callable | None = SiLU) -> nn.Module:
    """Convolution (BatchNorm folded) + activation; ``act=None`` for a linear one."""
    if p is None:
        p = (k // 2) * d if isinstance(k, int) else tuple(x // 2 for x in k)
    layers: List[nn.Module] = [nn.Conv2d(c1, c2, k, s, p, dilation=d, groups=g)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut=True, e=1.0, k=(1, 3), act=SiLU, g=1) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2 = conv(c1, c_, k[0], act=act), conv(c_, c2, k[1], g=g, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block of YOLOv5 / YOLOX (CSPLayer): two 1x1 branches, n bottlenecks on one, 1x1 merge."""

    def __init__(self, c1: int, c2: int, n=1, shortcut=True, e=0.5, act=SiLU, k=(1, 3)) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1, self.cv2, self.cv3 = conv(c1, c_, act=act), conv(c1, c_, act=act), conv(2 * c_, c2, act=act)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, 1.0, k, act) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C2f(nn.Module):
    """YOLOv8's CSP block (and YOLO11's C3k2 when ``c3k``): split, chained bottlenecks, concat all."""

    def __init__(self, c1: int, c2: int, n=1, shortcut=False, e=0.5, c3k=False) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1, self.cv2 = conv(c1, 2 * self.c), conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(C3(self.c, self.c, 2, shortcut, k=(3, 3)) if c3k else
                               Bottleneck(self.c, self.c, shortcut, 1.0, (3, 3)) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPP(nn.Module):
    """SPPF (chained 5x5 max pools, ``ks=(5,)*3, chain=True``) or SPP (parallel 5/9/13 pools)."""

    def __init__(self, c1: int, c2: int, ks=(5, 5, 5), chain=True, act=SiLU) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = conv(c1, c_, act=act), conv(c_ * (len(ks) + 1), c2, act=act)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in ks)
        self.chain = chain

    def forward(self, x):
        y = [self.cv1(x)]
        for p in self.pools:
            y.append(p(y[-1] if self.chain else y[0]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """YOLO11 PSA attention: 1x1 qkv, softmax(q^T k) per head, v @ attn^T, depthwise 3x3 position term."""

    def __init__(self, dim: int, heads: int, ratio=0.5) -> None:
        super().__init__()
        self.h, self.hd = heads, dim // heads
        self.kd = int(self.hd * ratio)
        self.qkv = conv(dim, dim + 2 * self.kd * heads, act=None)
        self.proj, self.pe = conv(dim, dim, act=None), conv(dim, dim, 3, g=dim, act=None)

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(x).view(b, self.h, 2 * self.kd + self.hd, hh * ww).split([self.kd, self.kd, self.hd], 2)
        attn = ((q.transpose(-2, -1) @ k) * self.kd ** -0.5).softmax(-1)
        y = (v @ attn.transpose(-2, -1)).view(b, c, hh, ww) + self.pe(v.reshape(b, c, hh, ww))
        return self.proj(y)


class C2PSA(nn.Module):
    def __init__(self, c: int, n=1) -> None:
        super().__init__()
        self.c = c // 2
        self.cv1, self.cv2 = conv(c, c), conv(c, c)
        self.attn = nn.ModuleList(Attention(self.c, max(self.c // 64, 1)) for _ in range(n))
        self.ffn = nn.ModuleList(nn.Sequential(conv(self.c, 2 * self.c), conv(2 * self.c, self.c, act=None))
                                 for _ in range(n))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), 1)
        for attn, ffn in zip(self.attn, self.ffn):
            b = b + attn(b)
            b = b + ffn(b)
        return self.cv2(torch.cat((a, b), 1))


def _up(x):
    return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


class PAN(nn.Module):
    """The YOLOv5/v8/11/X neck: top-down upsample+concat, bottom-up stride-2 conv+concat, one block per merge.

    ``block(c_in, c_out, shortcut)`` builds each merge block; ``lateral`` puts YOLOv5's 1x1 convs before the
    upsamples (YOLOv8/11 concatenate directly).
    """

    def __init__(self, ch: Sequence[int], block: Callable, lateral: bool, act=SiLU, p3_in: int = 0) -> None:
        super().__init__()
        c3, c4, c5 = ch
        self.lateral = lateral
        if lateral:
            self.l5, self.l4 = conv(c5, c4, act=act), conv(c4, c3, act=act)
            self.b4, self.b3 = block(2 * c4, c4), block(2 * c3, c3)
            self.d3, self.n4 = conv(c3, c3, 3, 2, act=act), block(2 * c3, c4)
            self.d4, self.n5 = conv(c4, c4, 3, 2, act=act), block(2 * c4, c5)
        else:
            self.b4, self.b3 = block(c5 + c4, c4), block(c4 + (p3_in or c3), c3)
            self.d3, self.n4 = conv(c3, c3, 3, 2, act=act), block(c3 + c4, c4)
            self.d4, self.n5 = conv(c4, c4, 3, 2, act=act), block(c4 + c5, c5)

    def forward(self, p3, p4, p5):
        if self.lateral:
            t5 = self.l5(p5)
            t4 = self.l4(self.b4(torch.cat((_up(t5), p4), 1)))
            o3 = self.b3(torch.cat((_up(t4), p3), 1))
            o4 = self.n4(torch.cat((self.d3(o3), t4), 1))
            return o3, o4, self.n5(torch.cat((self.d4(o4), t5), 1))
        t4 = self.b4(torch.cat((_up(p5), p4), 1))
        o3 = self.b3(torch.cat((_up(t4), p3), 1))
        o4 = self.n4(torch.cat((self.d3(o3), t4), 1))
        return o3, o4, self.n5(torch.cat((self.d4(o4), p5), 1))


def _d(n: int, depth: float) -> int:
    return max(round(n * depth), 1)


class YoloV5(nn.Module):
    """YOLOv5 v6+ (6x6 stem, C3, SPPF); the zoo exports the three raw Detect convs (optionally with the
    -seg Proto head)."""

    def __init__(self, depth: float, width: float, act=SiLU, seg=False) -> None:
        super().__init__()
        w = [int(c * width) for c in (64, 128, 256, 512, 1024)]
        self.stem = conv(3, w[0], 6, 2, 2, act=act)
        self.stages = nn.ModuleList(nn.Sequential(conv(w[i], w[i + 1], 3, 2, act=act),
                                                  C3(w[i + 1], w[i + 1], _d(n, depth), act=act))
                                    for i, n in enumerate((3, 6, 9, 3)))
        self.sppf = SPP(w[4], w[4], act=act)
        self.neck = PAN(w[2:], lambda a, b: C3(a, b, _d(3, depth), False, act=act), True, act)
        no = 3 * (85 + (32 if seg else 0))
        self.heads = nn.ModuleList(nn.Conv2d(c, no, 1) for c in w[2:])
        npr = int(256 * width)
        self.proto = nn.Sequential(conv(w[2], npr, 3, act=act), nn.Upsample(scale_factor=2.0),
                                   conv(npr, npr, 3, act=act), conv(npr, 32, act=act)) if seg else None

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i, st in enumerate(self.stages):
            x = st(x)
            feats.append(self.sppf(x) if i == 3 else x)
        ps = self.neck(*feats[1:])
        out = [h(p) for h, p in zip(self.heads, ps)]
        return (*out, self.proto(ps[0])) if self.proto is not None else tuple(out)


class YoloV8(nn.Module):
    """YOLOv8 / YOLO11 (``v11``: C3k2, C2PSA, depthwise class branch). Heads as the zoo exports them: per
    level the box-distribution conv (DFL on the CPU), sigmoid class scores and their clipped sum; optional
    mask coefficients + Proto (seg), keypoints (pose) or angle (obb)."""

    def __init__(self, depth: float, width: float, max_ch: int, v11=False, task="detect", nc=80) -> None:
        super().__init__()
        w = [int(min(c, max_ch) * width) for c in (64, 128, 256, 512, 1024)]
        n = _d(2 if v11 else 3, depth)
        if v11:  # C3k2 blocks (C3k inner blocks on the m scale), wider P3 output than YOLOv8
            big = width >= 1.0
            convs = ((w[0], w[1]), (w[2], w[2]), (w[3], w[3]), (w[3], w[4]))
            blocks = [C2f(w[1], w[2], n, True, 0.25, big), C2f(w[2], w[3], n, True, 0.25, big),
                      C2f(w[3], w[3], n, True, 0.5, True), C2f(w[4], w[4], n, True, 0.5, True)]
        else:
            convs = tuple((w[i], w[i + 1]) for i in range(4))
            blocks = [C2f(w[i + 1], w[i + 1], _d(r, depth), True) for i, r in enumerate((3, 6, 6, 3))]
        self.stem = conv(3, w[0], 3, 2)
        self.stages = nn.ModuleList(nn.Sequential(conv(a, b, 3, 2), blk) for (a, b), blk in zip(convs, blocks))
        self.sppf = nn.Sequential(SPP(w[4], w[4]), *([C2PSA(w[4], n)] if v11 else []))
        if v11:
            def neck_blk(a, b):
                return C2f(a, b, n, True, 0.5, width >= 1.0)
        else:
            def neck_blk(a, b):
                return C2f(a, b, n, False)
        self.neck = PAN(w[2:], neck_blk, False, p3_in=w[3] if v11 else w[2])
        ch = w[2:]
        reg, cls = max(16, ch[0] // 4, 64), max(ch[0], min(nc, 100))

        def cls_branch(c):
            if v11:
                return nn.Sequential(conv(c, c, 3, g=c), conv(c, cls), conv(cls, cls, 3, g=cls), conv(cls, cls),
                                     nn.Conv2d(cls, nc, 1))
            return nn.Sequential(conv(c, cls, 3), conv(cls, cls, 3), nn.Conv2d(cls, nc, 1))

        self.box = nn.ModuleList(nn.Sequential(conv(c, reg, 3), conv(reg, reg, 3), nn.Conv2d(reg, 64, 1)) for c in ch)
        self.cls = nn.ModuleList(cls_branch(c) for c in ch)
        extra = {"seg": 32, "pose": 51, "obb": 1}.get(task, 0)
        c4 = max(ch[0] // 4, extra)
        self.extra = nn.ModuleList(nn.Sequential(conv(c, c4, 3), conv(c4, c4, 3), nn.Conv2d(c4, extra, 1))
                                   for c in ch) if extra else None
        npr = int(256 * width)
        self.proto = nn.Sequential(conv(ch[0], npr, 3), nn.ConvTranspose2d(npr, npr, 2, 2), conv(npr, npr, 3),
                                   conv(npr, 32)) if task == "seg" else None

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for i, st in enumerate(self.stages):
            x = st(x)
            feats.append(self.sppf(x) if i == 3 else x)
        ps = self.neck(*feats[1:])
        out = []
        for i, p in enumerate(ps):
            score = torch.sigmoid(self.cls[i](p))
            out += [self.box[i](p), score, torch.clamp(score.sum(1, keepdim=True), 0, 1)]
            if self.extra is not None:
                out.append(self.extra[i](p))
        if self.proto is not None:
            out.append(self.proto(ps[0]))
        return tuple(out)


class YoloX(nn.Module):
    """YOLOX: CSPDarknet (SPP 5/9/13), PAFPN with CSP layers, decoupled head with sigmoid obj/cls outputs."""

    def __init__(self, depth: float, width: float) -> None:
        super().__init__()
        w = [int(c * width) for c in (64, 128, 256, 512, 1024)]
        self.stem = conv(3, w[0], 6, 2, 2)  # Focus: space-to-depth + 3x3 conv, the same MACs
        self.stages = nn.ModuleList(
            nn.Sequential(conv(w[i], w[i + 1], 3, 2), *([SPP(w[4], w[4], (5, 9, 13), False)] if i == 3 else []),
                          C3(w[i + 1], w[i + 1], _d((3, 9, 9, 3)[i], depth), i != 3))
            for i in range(4))
        self.neck = PAN(w[2:], lambda a, b: C3(a, b, _d(3, depth), False), True)
        hc = int(256 * width)
        self.stems = nn.ModuleList(conv(c, hc) for c in w[2:])
        self.cls = nn.ModuleList(nn.Sequential(conv(hc, hc, 3), conv(hc, hc, 3), nn.Conv2d(hc, 80, 1))
                                 for _ in range(3))
        self.reg = nn.ModuleList(nn.Sequential(conv(hc, hc, 3), conv(hc, hc, 3)) for _ in range(3))
        self.reg_pred = nn.ModuleList(nn.Conv2d(hc, 4, 1) for _ in range(3))
        self.obj_pred = nn.ModuleList(nn.Conv2d(hc, 1, 1) for _ in range(3))

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        out = []
        for i, p in enumerate(self.neck(*feats[1:])):
            s = self.stems[i](p)
            r = self.reg[i](s)
            out.append(torch.cat((self.reg_pred[i](r), torch.sigmoid(self.obj_pred[i](r)),
                                  torch.sigmoid(self.cls[i](s))), 1))
        return tuple(out)


class YoloV7Tiny(nn.Module):
    """YOLOv7-tiny: ELAN-tiny blocks with LeakyReLU(0.1), SPPCSPC-tiny, PAN, 3x3 convs then Detect."""

    @staticmethod
    def elan(c1: int, c: int, c2: int) -> nn.Module:
        class Elan(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.a, self.b = conv(c1, c, act=LReLU), conv(c1, c, act=LReLU)
                self.c, self.d = conv(c, c, 3, act=LReLU), conv(c, c, 3, act=LReLU)
                self.o = conv(4 * c, c2, act=LReLU)

            def forward(self, x):
                b = self.b(x)
                c = self.c(b)
                return self.o(torch.cat((self.d(c), c, b, self.a(x)), 1))
        return Elan()

    def __init__(self) -> None:
        super().__init__()
        e, mp = self.elan, nn.MaxPool2d(2, 2)
        self.s3 = nn.Sequential(conv(3, 32, 3, 2, act=LReLU), conv(32, 64, 3, 2, act=LReLU), e(64, 32, 64), mp,
                                e(64, 64, 128))
        self.s4 = nn.Sequential(mp, e(128, 128, 256))
        self.s5 = nn.Sequential(mp, e(256, 256, 512))
        self.spp_a, self.spp_b = conv(512, 256, act=LReLU), conv(512, 256, act=LReLU)
        self.spp = SPP(512, 256, (5, 9, 13), False, LReLU)
        self.spp_o = conv(512, 256, act=LReLU)
        self.t5, self.l4, self.b4 = conv(256, 128, act=LReLU), conv(256, 128, act=LReLU), e(256, 64, 128)
        self.t4, self.l3, self.b3 = conv(128, 64, act=LReLU), conv(128, 64, act=LReLU), e(128, 32, 64)
        self.d3, self.n4 = conv(64, 128, 3, 2, act=LReLU), e(256, 64, 128)
        self.d4, self.n5 = conv(128, 256, 3, 2, act=LReLU), e(512, 128, 256)
        self.outs = nn.ModuleList(nn.Sequential(conv(c, 2 * c, 3, act=LReLU), nn.Conv2d(2 * c, 255, 1))
                                  for c in (64, 128, 256))

    def forward(self, x):
        p3 = self.s3(x)
        p4 = self.s4(p3)
        p5 = self.s5(p4)
        s = self.spp_o(torch.cat((self.spp(p5), self.spp_a(p5)), 1))
        h4 = self.b4(torch.cat((_up(self.t5(s)), self.l4(p4)), 1))
        o3 = self.b3(torch.cat((_up(self.t4(h4)), self.l3(p3)), 1))
        o4 = self.n4(torch.cat((self.d3(o3), h4), 1))
        o5 = self.n5(torch.cat((self.d4(o4), s), 1))
        return tuple(h(o) for h, o in zip(self.outs, (o3, o4, o5)))


def inverted_residual(c1: int, c2: int, s: int, t: int, d=1) -> nn.Module:
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise 3x3, 1x1 project, residual when shapes match."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h = c1 * t
            layers = ([conv(c1, h, act=nn.ReLU6)] if t != 1 else []) + [
                conv(h, h, 3, s, g=h, d=d, act=nn.ReLU6), conv(h, c2, act=None)]
            self.m, self.res = nn.Sequential(*layers), s == 1 and c1 == c2

        def forward(self, x):
            return x + self.m(x) if self.res else self.m(x)
    return Block()


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 (ImageNet classifier), or the DeepLabV3+ backbone (output stride 8, dilated)."""

    CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))

    def __init__(self, deeplab=False) -> None:
        super().__init__()
        layers, c, stride, dil = [conv(3, 32, 3, 2, act=nn.ReLU6)], 32, 2, 1
        for t, co, n, s in self.CFG:
            for i in range(n):
                st = s if i == 0 else 1
                if deeplab and stride >= 8 and st == 2:
                    st, dil = 1, dil * 2
                stride *= st
                layers.append(inverted_residual(c, co, st, t, dil))
                c = co
        self.features = nn.Sequential(*layers)
        self.deeplab = deeplab
        if deeplab:
            self.aspp, self.pool_conv = conv(320, 256, act=ReLU), conv(320, 256, act=ReLU)
            self.project, self.logits = conv(512, 256, act=ReLU), nn.Conv2d(256, 21, 1)
        else:
            self.head, self.fc = conv(320, 1280, act=nn.ReLU6), nn.Linear(1280, 1000)

    def forward(self, x):
        x = self.features(x)
        if self.deeplab:
            pooled = nn.functional.interpolate(self.pool_conv(nn.functional.adaptive_avg_pool2d(x, 1)),
                                               size=x.shape[2:], mode="nearest")
            return self.logits(self.project(torch.cat((self.aspp(x), pooled), 1)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.head(x), 1), 1))


class ResNet50(nn.Module):
    """ResNet-50: v1 (post-activation, BN folded; RetinaFace's backbone) or v2 (pre-activation: the BN+ReLU
    before each conv cannot fold into it and stays an element-wise layer, as in resnet50-v2-7)."""

    def __init__(self, v2=False, classifier=True) -> None:
        super().__init__()
        self.v2, self.classifier = v2, classifier
        self.stem = nn.Sequential(conv(3, 64, 7, 2, act=None if v2 else ReLU), nn.MaxPool2d(3, 2, 1))
        blocks, c = [], 64
        for i, (n, w) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512))):
            stage = []
            for j in range(n):
                stage.append(self._block(c, w, 2 if j == 0 and i > 0 else 1))
                c = w * 4
            blocks.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(blocks)
        self.post = nn.Sequential(nn.BatchNorm2d(2048), nn.ReLU()) if v2 else nn.Identity()
        self.fc = nn.Linear(2048, 1000)

    def _block(self, c1: int, w: int, s: int) -> nn.Module:
        v2 = self.v2

        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                a = None if v2 else ReLU
                self.pre = nn.Sequential(nn.BatchNorm2d(c1), nn.ReLU()) if v2 else nn.Identity()
                self.m = nn.Sequential(conv(c1, w, act=ReLU), conv(w, w, 3, s, act=ReLU), conv(w, 4 * w, act=a))
                self.down = conv(c1, 4 * w, 1, s, act=None) if s != 1 or c1 != 4 * w else None

            def forward(self, x):
                p = self.pre(x)
                y = self.m(p) + (self.down(p) if self.down is not None else x)
                return y if v2 else torch.relu(y)
        return Block()

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        if not self.classifier:
            return feats[1:]
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.post(x), 1), 1))


class RetinaFace(nn.Module):
    """RetinaFace: MobileNet-0.25 (LeakyReLU 0.1) or ResNet-50 backbone, 3-level FPN, SSH context modules,
    1x1 class/box/landmark heads reshaped and concatenated, softmax on the class scores."""

    def __init__(self, resnet=False) -> None:
        super().__init__()
        act = ReLU if resnet else LReLU
        if resnet:
            self.body, ch, out = ResNet50(classifier=False), (512, 1024, 2048), 256
        else:
            def dw(a, b, s):
                return nn.Sequential(conv(a, a, 3, s, g=a, act=LReLU), conv(a, b, act=LReLU))
            self.s1 = nn.Sequential(conv(3, 8, 3, 2, act=LReLU), dw(8, 16, 1), dw(16, 32, 2), dw(32, 32, 1),
                                    dw(32, 64, 2), dw(64, 64, 1))
            self.s2 = nn.Sequential(dw(64, 128, 2), *(dw(128, 128, 1) for _ in range(5)))
            self.s3 = nn.Sequential(dw(128, 256, 2), dw(256, 256, 1))
            self.body, ch, out = None, (64, 128, 256), 64
        self.lat = nn.ModuleList(conv(c, out, act=act) for c in ch)
        self.merge = nn.ModuleList(conv(out, out, 3, act=act) for _ in range(2))
        self.ssh = nn.ModuleList(self._ssh(out, act) for _ in range(3))
        self.heads = nn.ModuleList(nn.ModuleList(nn.Conv2d(out, 2 * k, 1) for _ in range(3)) for k in (2, 4, 10))

    @staticmethod
    def _ssh(c: int, act) -> nn.Module:
        class SSH(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.c3 = conv(c, c // 2, 3, act=None)
                self.c5a, self.c5b = conv(c, c // 4, 3, act=act), conv(c // 4, c // 4, 3, act=None)
                self.c7a, self.c7b = conv(c // 4, c // 4, 3, act=act), conv(c // 4, c // 4, 3, act=None)

            def forward(self, x):
                a = self.c5a(x)
                return torch.relu(torch.cat((self.c3(x), self.c5b(a), self.c7b(self.c7a(a))), 1))
        return SSH()

    def forward(self, x):
        if self.body is not None:
            feats = self.body(x)
        else:
            f1 = self.s1(x)
            f2 = self.s2(f1)
            feats = [f1, f2, self.s3(f2)]
        o = [lat(f) for lat, f in zip(self.lat, feats)]
        o[1] = self.merge[1](o[1] + nn.functional.interpolate(o[2], size=o[1].shape[2:], mode="nearest"))
        o[0] = self.merge[0](o[0] + nn.functional.interpolate(o[1], size=o[0].shape[2:], mode="nearest"))
        o = [s(f) for s, f in zip(self.ssh, o)]
        res = []
        for k, heads in zip((2, 4, 10), self.heads):
            res.append(torch.cat([h(f).permute(0, 2, 3, 1).reshape(1, -1, k) for h, f in zip(heads, o)], 1))
        return res[1], res[0].softmax(-1), res[2]


class LPRNet(nn.Module):
    """LPRNet (licence plates, 24x94): small basic blocks, channel-strided max pools, global context concat."""

    @staticmethod
    def _sbb(c1: int, c2: int) -> nn.Module:
        q = c2 // 4
        return nn.Sequential(conv(c1, q, act=ReLU), conv(q, q, (3, 1), act=ReLU), conv(q, q, (1, 3), act=ReLU),
                             conv(q, c2, act=ReLU))

    def __init__(self, classes=68) -> None:
        super().__init__()
        self.b1 = nn.Sequential(conv(3, 64, 3, p=0, act=ReLU), nn.MaxPool2d(3, 1))
        self.b2 = nn.Sequential(self._sbb(64, 128), nn.MaxPool2d(3, (1, 2)))
        self.b3 = nn.Sequential(self._sbb(64, 256), self._sbb(256, 256), nn.MaxPool2d(3, (1, 2)))
        self.b4 = nn.Sequential(conv(64, 256, (1, 4), p=0, act=ReLU), conv(256, classes, (13, 1), p=0, act=ReLU))
        self.container = nn.Conv2d(64 + 128 + 256 + classes, classes, 1)

    def forward(self, x):
        f1 = self.b1(x)
        g2 = self.b2(f1)
        g3 = self.b3(g2[:, ::2])  # MaxPool3d strides 2 and 4 over channels
        f4 = self.b4(g3[:, ::4])
        ctx = []
        for f, k in ((f1, (5, 5)), (g2, (5, 5)), (g3, (4, 10)), (f4, None)):
            if k is not None:
                f = nn.functional.avg_pool2d(f, k, k)
            f = nn.functional.interpolate(f, size=f4.shape[2:], mode="nearest") if f.shape[2:] != f4.shape[2:] else f
            ctx.append(f / torch.mean(f * f))
        return torch.mean(self.container(torch.cat(ctx, 1)), 2)


def _v5(d, w, **kw):
    return lambda: YoloV5(d, w, **kw)


def _v8(d, w, mc, **kw):
    return lambda: YoloV8(d, w, mc, **kw)


S640 = (1, 3, 640, 640)
ZOO: Dict[str, Tuple[Callable[[], nn.Module], Tuple[int, ...]]] = {
    "mobilenetv2-12": (MobileNetV2, (1, 3, 224, 224)),
    "resnet50-v2-7": (lambda: ResNet50(v2=True), (1, 3, 224, 224)),
    "yolov5s_relu": (_v5(0.33, 0.5, act=ReLU), S640),
    "yolov5n": (_v5(0.33, 0.25), S640),
    "yolov5s": (_v5(0.33, 0.5), S640),
    "yolov5m": (_v5(0.67, 0.75), S640),
    "yolov7-tiny": (YoloV7Tiny, S640),
    "yolov8n": (_v8(0.33, 0.25, 1024), S640),
    "yolov8s": (_v8(0.33, 0.5, 1024), S640),
    "yolov8m": (_v8(0.67, 0.75, 768), S640),
    "yolov8n-obb": (_v8(0.33, 0.25, 1024, task="obb", nc=15), S640),
    "yolo11n": (_v8(0.5, 0.25, 1024, v11=True), S640),
    "yolo11s": (_v8(0.5, 0.5, 1024, v11=True), S640),
    "yolo11m": (_v8(0.5, 1.0, 512, v11=True), S640),
    "yolox_s": (lambda: YoloX(0.33, 0.5), S640),
    "yolox_m": (lambda: YoloX(0.67, 0.75), S640),
    "yolov8n-pose": (_v8(0.33, 0.25, 1024, task="pose", nc=1), S640),
    "deeplab-v3-plus-mobilenet-v2": (lambda: MobileNetV2(deeplab=True), (1, 3, 513, 513)),
    "yolov5n-seg": (_v5(0.33, 0.25, seg=True), S640),
    "yolov5s-seg": (_v5(0.33, 0.5, seg=True), S640),
    "yolov5m-seg": (_v5(0.67, 0.75, seg=True), S640),
    "yolov8n-seg": (_v8(0.33, 0.25, 1024, task="seg"), S640),
    "yolov8s-seg": (_v8(0.33, 0.5, 1024, task="seg"), S640),
    "yolov8m-seg": (_v8(0.67, 0.75, 768, task="seg"), S640),
    "RetinaFace_mobile320": (RetinaFace, (1, 3, 320, 320)),
    "RetinaFace_resnet50_320": (lambda: RetinaFace(resnet=True), (1, 3, 320, 320)),
    "lprnet": (LPRNet, (1, 3, 24, 94)),
}


def build_zoo_model(name: str, seed: int = 0) -> Tuple[nn.Module, Tuple[int, ...]]:
    """The named architecture in eval mode with seeded He-style weights, and its input shape."""
    ctor, shape = ZOO[name]
    torch.manual_seed(seed)
    model = ctor().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
    return model, shape
