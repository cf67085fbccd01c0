"""Real inputs for the corpus: photos that scikit-image ships inside its wheel, and text rendered with
Pillow's built-in font (no system font needed). Everything is uint8 HWC RGB at the model's size, raw
pixels before mean/std (the runtime normalises, as on the board)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# skimage.data photos that ship in the wheel (no download); greyscale ones are stacked to RGB.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "cell",
          "horse", "clock", "immunohistochemistry", "hubble_deep_field", "retina", "motorcycle_left",
          "grass", "gravel", "brick", "colorwheel")
WORDS = ("rknn", "board", "Rockchip", "NPU 3588", "hello world", "int8 quant", "model zoo", "OCR test",
         "layer norm", "2026-12-01", "tensor", "QUANTIZE", "camera", "batch 16", "offline", "text line",
         "simulator", "fidelity", "detector", "PP-OCRv4")


def _photo(name: str) -> np.ndarray:
    from skimage import data
    img = getattr(data, name)()
    if isinstance(img, tuple):  # stereo pairs
        img = img[0]
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) - img.min()) / max(np.ptp(img), 1e-9)).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def available_photos() -> list:
    """The photos of PHOTOS this scikit-image install can load offline."""
    out = []
    for name in PHOTOS:
        try:
            out.append(_photo(name))
        except Exception:  # a photo that would need a download: skip it
            continue
    return out


def photo_crops(height: int, width: int, count: int, seed: int) -> list:
    """``count`` random crops (scale 0.4..1, random flips) of the shipped photos, resized to HxW."""
    rng = np.random.default_rng(seed)
    photos = available_photos()
    if not photos:
        raise RuntimeError("no sample photos: the corpus inputs come from scikit-image's bundled images; "
                           "pip install 'rknnlink[corpus]' (scikit-image)")
    out = []
    for i in range(count):
        img = photos[(i + seed) % len(photos)]
        h, w = img.shape[:2]
        s = rng.uniform(0.4, 1.0)
        ch, cw = max(8, int(h * s)), max(8, int(w * s))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize((width, height), Image.BILINEAR)
        arr = np.asarray(crop)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out.append(np.ascontiguousarray(arr))
    return out


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_line(text: str, height: int, width: int, seed: int) -> np.ndarray:
    """One line of dark text on a light, slightly noisy background, scaled to fill HxW like a detector's
    crop would be (left aligned, height-filling)."""
    rng = np.random.default_rng(seed)
    font = _font(64)
    x0, y0, x1, y1 = font.getbbox(text)
    tw, th = x1 - x0 + 16, y1 - y0 + 16
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 60, 3))
    img = Image.new("RGB", (tw, th), bg)
    ImageDraw.Draw(img).text((8 - x0, 8 - y0), text, fill=fg, font=font)
    new_w = min(width, max(1, round(tw * height / th)))
    canvas = Image.new("RGB", (width, height), bg)
    canvas.paste(img.resize((new_w, height), Image.BILINEAR), (0, 0))
    arr = np.asarray(canvas).astype(np.float32) + rng.normal(0, 4, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def text_lines(height: int, width: int, count: int, seed: int) -> tuple:
    """(images, strings): ``count`` rendered lines of the WORDS list."""
    texts = [WORDS[(seed + i) % len(WORDS)] for i in range(count)]
    return [text_line(t, height, width, seed + i) for i, t in enumerate(texts)], texts


def text_page(height: int, width: int, seed: int) -> np.ndarray:
    """A photo background with a few text lines on light boxes (what a text detector looks for)."""
    rng = np.random.default_rng(seed)
    page = Image.fromarray(photo_crops(height, width, 1, seed)[0])
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(4, max(5, height // 8)))
    while y < height - 24:
        size = int(rng.integers(max(10, height // 24), max(12, height // 10)))
        font = _font(size)
        text = " ".join(WORDS[int(k)] for k in rng.integers(0, len(WORDS), 2))
        x = int(rng.integers(2, max(3, width // 4)))
        x0, y0, x1, y1 = font.getbbox(text)
        draw.rectangle((x - 3, y - 3, x + x1 - x0 + 3, y + y1 - y0 + 3), fill=(235, 235, 230))
        draw.text((x - x0, y - y0), text, fill=(20, 20, 20), font=font)
        y += (y1 - y0) + int(rng.integers(12, 40))
    return np.asarray(page)
