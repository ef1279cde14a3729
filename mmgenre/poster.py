"""Poster loading: read, check and decode a poster at a bounded size; returns an upright RGB image.

Everything downstream (encoders at 224 px, Grad-CAM overlays, deletion tests, detection) works
on the image this returns, so its size bounds the cost of a request: the longer side is at most
``MAX_POSTER_SIDE`` (screen size for overlays; the encoders see far less). A JPEG is decoded at
1/2, 1/4 or 1/8 scale when that still covers the bound (``Image.draft``); other formats are
decoded at full size, then downscaled once, before any colour conversion.

Pixel budget: ``MAX_IMAGE_PIXELS`` is what a decoder may produce (after a JPEG's draft scaling),
checked from the header before decoding. At 40 Mpx a full decode costs at most ~160 MB (4 bytes
a pixel) and well under a second, and Gradio runs two requests at a time, so two hostile uploads
stay within a few hundred MB; a real poster (a few Mpx) and a 48-Mpx phone photo of one (a JPEG,
decoded at 1/8 scale) both pass.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mmgenre.errors import InputError

MAX_IMAGE_PIXELS = 40_000_000    # decoded pixels (after a JPEG draft); checked from the header
MAX_POSTER_SIDE = 768            # longer side of the returned poster (None: no bound)
MIN_IMAGE_SIDE = 16              # 1x1 or 1x10000 "posters" are rejected
MAX_ASPECT_RATIO = 20.0          # a 16x4000 strip is not a poster either
MAX_UPLOAD_BYTES = 20 * 2**20    # posters are a few hundred KB; anything over 20 MiB is refused
# Raster formats a poster may come in; PIL's rarer decoders are not exposed to uploads.
ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
UNNAMED = "the poster"


def poster_label(src, name: str | None = None) -> str:
    """How messages name the poster: ``name``, else the path, else ``"the poster"``."""
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or UNNAMED
    return UNNAMED


def bounded_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` scaled down (aspect kept) so its longer side is at most ``max_side``."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _to_rgb(img: Image.Image, sixteen_bit: bool = False) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white; 16/32-bit is rescaled."""
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        if sixteen_bit or mode.startswith("I;16") or (mode == "I" and 255 < hi <= 65535 and arr.min() >= 0):
            arr = arr / 257.0                     # 16-bit full range -> 8-bit
        elif mode == "F" and arr.size and arr.min() >= 0 and hi <= 1.0:
            arr = arr * 255.0
        elif hi > 255 or (arr.size and arr.min() < 0):
            lo = arr.min()
            arr = (arr - lo) * (255.0 / max(hi - lo, 1e-12))
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    return img.convert("RGB")


def _resizable(img: Image.Image) -> tuple[Image.Image, bool]:
    """A mode PIL resizes with a real filter (it uses nearest for "1" and "P", and cannot reduce
    "I;16"), keeping what ``_to_rgb`` needs to know: (image, was 16-bit)."""
    mode = img.mode
    if mode in ("P", "PA") or (mode in ("L", "RGB") and "transparency" in img.info):
        return img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB"), False
    if mode == "1":
        return img.convert("L"), False
    if mode.startswith("I;16"):
        return img.convert("I"), True
    return img, False


def _read_bytes(src, label: str) -> bytes:
    if isinstance(src, (str, Path)):
        try:
            with open(src, "rb") as f:
                data = f.read(MAX_UPLOAD_BYTES + 1)
        except OSError as e:
            raise InputError(f"{label}: cannot read image ({e.strerror or e})") from e
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        raise InputError(f"{label}: expected a path, bytes or a PIL image, got {type(src).__name__}")
    if not data:
        raise InputError(f"{label}: zero-byte file, not an image")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{label}: file is over {MAX_UPLOAD_BYTES // 2**20} MiB")
    return data


def _open(data: bytes, label: str) -> Image.Image:
    Image.init()        # registers every plugin, so that formats= can name WEBP and TIFF
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise InputError(f"{label}: image too large (decompression bomb?): {e}") from e
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not an image"
        raise InputError(f"{label}: not a readable image (formats "
                         f"{', '.join(ALLOWED_IMAGE_FORMATS)})") from e


def load_poster(src: str | Path | bytes | Image.Image, *, name: str | None = None,
                max_side: int | None = MAX_POSTER_SIDE) -> Image.Image:
    """Open, check and decode a poster; returns an upright RGB image, longer side <= ``max_side``.

    ``src`` is a file path, the file's bytes (an upload) or a PIL image. Zero-byte, truncated
    or non-image data, decompression bombs (> ``MAX_IMAGE_PIXELS`` decoded pixels) and absurd
    sizes (a side under ``MIN_IMAGE_SIDE``, an aspect ratio over ``MAX_ASPECT_RATIO``) raise
    InputError naming the file (``name`` overrides the label: see :func:`poster_label`).
    """
    label = poster_label(src, name)
    img = src if isinstance(src, Image.Image) else _open(_read_bytes(src, label), label)

    w, h = img.size
    if min(w, h) < MIN_IMAGE_SIDE or max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise InputError(f"{label}: absurd size {w}x{h} for a poster (each side must be "
                         f">= {MIN_IMAGE_SIDE} px, aspect ratio <= {MAX_ASPECT_RATIO:g})")
    target = bounded_size((w, h), max_side)
    if img.format == "JPEG" and target != (w, h):
        img.draft(None, target)           # DCT scaling: decodes at the smallest scale >= target
    dw, dh = img.size
    if dw * dh > MAX_IMAGE_PIXELS:
        shown = f"{w}x{h}" if (dw, dh) == (w, h) else f"{w}x{h}, decoded at {dw}x{dh}"
        raise InputError(f"{label}: image too large ({shown} = {dw * dh:,} pixels > "
                         f"{MAX_IMAGE_PIXELS:,}; decompression bomb?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as e:
        raise InputError(f"{label}: image too large (decompression bomb?): {e}") from e
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, EOFError, struct.error, ...
        raise InputError(f"{label}: truncated or corrupt image data ({e})") from e
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:   # noqa: BLE001 - a broken EXIF block must not cost a good image
        pass
    try:
        img, sixteen_bit = _resizable(img)
        if max(img.size) > (max_side or max(img.size)):
            # Once, straight to the bound: reduce() by an integer box first, then Lanczos.
            img = img.resize(bounded_size(img.size, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        return _to_rgb(img, sixteen_bit)
    except Exception as e:  # noqa: BLE001 - e.g. LAB or unusual TIFF modes
        raise InputError(f"{label}: cannot convert colour mode {img.mode} to RGB ({e})") from e
