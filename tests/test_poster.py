"""mmgenre.poster: posters come out upright, RGB and bounded, whatever their size on disk.

(The hostile corpus of tests/hostile.py runs through load_poster in test_hostile_inputs.py.)
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import hostile as H
from mmgenre import data as D
from mmgenre import poster as P
from mmgenre.errors import InputError
from mmgenre.poster import MAX_POSTER_SIDE, bounded_size, load_poster, poster_label


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _halves(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue (in ``mode``)."""
    img = Image.new("RGB", size, (220, 20, 20))
    img.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    return img.convert(mode)


def test_data_module_still_exports_the_poster_loader():
    assert D.load_poster is load_poster and D.MAX_IMAGE_PIXELS == P.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("size, bound, want", [
    ((300, 450), 768, (300, 450)), ((6000, 6000), 768, (768, 768)), ((8000, 6000), 768, (768, 576)),
    ((400, 8000), 768, (38, 768)), ((5000, 3000), None, (5000, 3000))])
def test_bounded_size(size, bound, want):
    assert bounded_size(size, bound) == want


def test_36mpx_one_bit_png_is_decoded_small():
    raw = H.png_one_bit(6000)
    assert len(raw) < 20_000
    img = load_poster(raw)
    assert img.mode == "RGB" and img.size == (MAX_POSTER_SIDE, MAX_POSTER_SIDE)
    H._check_bounded_block(img)


def test_big_posters_of_every_format_are_bounded_once_and_keep_their_content():
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"):
        img = load_poster(_bytes(_halves((3000, 1800)), fmt))
        assert img.size == (768, 461) and img.mode == "RGB", fmt
        left, right = np.asarray(img)[230, 100].astype(int), np.asarray(img)[230, 660].astype(int)
        assert left[0] > 150 > left[2] and right[2] > 150 > right[0], (fmt, left, right)


def test_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    """The pixel budget counts what the decoder produces: a 12-Mpx JPEG decodes at 1/4 scale
    (0.75 Mpx), the same picture as a PNG would decode in full."""
    monkeypatch.setattr(P, "MAX_IMAGE_PIXELS", 1_000_000)
    picture = _halves((4000, 3000))
    assert load_poster(_bytes(picture, "JPEG", quality=90)).size == (768, 576)
    with pytest.raises(InputError, match="big.png: image too large"):
        load_poster(_bytes(picture, "PNG"), name="big.png")


def test_full_size_on_request_and_small_posters_untouched():
    raw = _bytes(_halves((1200, 900)), "PNG")
    assert load_poster(raw, max_side=None).size == (1200, 900)
    assert load_poster(raw, max_side=300).size == (300, 225)
    assert load_poster(_bytes(_halves((300, 450)), "JPEG")).size == (300, 450)


def test_modes_that_pil_resizes_badly_are_converted_before_the_downscale():
    # 16-bit: still rescaled to 8 bit after the downscale
    arr = np.zeros((1600, 1600), dtype=np.uint16)
    arr[:, 800:] = 65535
    out = np.asarray(load_poster(_bytes(Image.fromarray(arr), "PNG")))
    assert out.shape == (768, 768, 3) and out[10, 700].min() == 255 and out[10, 10].max() == 0
    # palette with a transparent index: composited on white, not on the palette colour
    pal = Image.new("P", (1600, 1600), 0)
    pal.putpalette([10, 20, 30] * 256)
    out = np.asarray(load_poster(_bytes(pal, "PNG", transparency=0)))
    assert out.shape == (768, 768, 3) and out.min() == 255
    # 1-bit: filtered (grey at an edge), not nearest-neighbour
    bits = Image.new("1", (1601, 1600), 1)
    bits.paste(0, (0, 0, 800, 1600))
    out = np.asarray(load_poster(bits))[:, :, 0]
    assert out[0, 0] == 0 and out[0, -1] == 255 and ((out > 0) & (out < 255)).any()


def test_exif_rotation_with_a_downscale():
    stored = _halves((2000, 1200)).transpose(Image.Transpose.ROTATE_90)   # 1200 x 2000 on disk
    exif = Image.Exif()
    exif[0x0112] = 6                                                       # "rotate 90 CW to display"
    img = load_poster(_bytes(stored, "JPEG", exif=exif.tobytes(), quality=90))
    assert img.size == (768, 461)
    assert np.asarray(img)[230, 100, 0] > 150 and np.asarray(img)[230, 660, 2] > 150


def test_labels_never_invent_markup():
    assert poster_label(b"x") == "the poster" and poster_label(Image.new("RGB", (20, 20))) == "the poster"
    assert poster_label(b"x", "mine.jpg") == "mine.jpg"
    with pytest.raises(InputError, match="^the poster: zero-byte file, not an image$"):
        load_poster(b"")
