"""A corpus of hostile and broken inputs, generated in code (nothing is downloaded).

Each :class:`Case` is one bad or odd input with the outcome mmgenre owes it: ``error=None`` means
a sensible result (``check`` says what "sensible" is), otherwise an ``InputError`` whose message
contains ``error`` and names the offending file. Cases come in five kinds:

``poster``  the bytes of a ``<id>.jpeg`` file (or of an uploaded poster)
``plot``    the ``plot`` value of a movie JSON (and the plot a user types)
``title``   the ``title`` value of a movie JSON
``record``  a change to the whole movie JSON (missing keys, wrong types, not JSON ...)
``split``   a change to ``split.json`` (absent movies, duplicate and path-traversal ids ...)

:func:`install` puts one case into a dataset made by :func:`mmgenre.testing.make_tiny_mmimdb`;
:func:`build_case_dataset` makes a dataset holding one case, :func:`build_hostile_dataset` one
holding every case that can share a folder (``fatal`` ones break split.json itself).
``CHECKPOINT_CASES`` are crafted checkpoint folders (pickles, wrong configs, wrong shapes).
"""
from __future__ import annotations

import functools
import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmgenre.data import MAX_PLOT_CHARS, MAX_UPLOAD_BYTES, Movie, ValidationReport
from mmgenre.testing import make_tiny_mmimdb

KINDS = ("poster", "plot", "title", "record", "split")
SCRIPT = "<script>alert(1)</script>"
IMG_ONERROR = "<img src=x onerror=alert(1)>"
JS_LINK = "[click me](javascript:alert(1)) **bold** `code` # heading"


@dataclass(frozen=True)
class Raw:
    """Bytes placed verbatim into a JSON string value (e.g. invalid UTF-8)."""

    data: bytes


@dataclass(frozen=True)
class Case:
    """One hostile input and the outcome it must get.

    ``error``: None (must load / predict) or a substring of the InputError message.
    ``api_error``: for poster and plot cases, the outcome when it is the only input of
    ``Predictor.predict`` (None: a prediction).
    ``names``: the file the error message names: "poster", "json", "split", "absent" (the
    JSON file of a movie split.json lists but that does not exist) or "root" (the folder).
    ``fatal``: the split file itself is unusable, so ``skip_bad`` cannot skip it.
    ``check``: extra checks of a sensible result: posters get the RGB image, other kinds
    ``(movie or None, report)`` after a successful load.
    """

    name: str
    kind: str
    payload: Any
    error: str | None = None
    api_error: str | None = None
    names: str = "json"
    fatal: bool = False
    check: Callable | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def ok(self) -> bool:
        return self.error is None

    def poster_bytes(self) -> bytes:
        assert self.kind == "poster"
        return _cached_bytes(self.payload)

    def api_value(self) -> Any:
        """What a user would pass to Predictor.predict for a plot case (bytes stay bytes)."""
        assert self.kind == "plot"
        return self.payload.data if isinstance(self.payload, Raw) else self.payload

    def __repr__(self) -> str:
        return f"Case({self.name})"


@functools.lru_cache(maxsize=None)
def _cached_bytes(make: Callable[[], bytes]) -> bytes:
    return make()


# ------------------------------------------------------------------------------ image helpers
def _gradient(size: tuple[int, int] = (64, 96), mode: str = "RGB") -> Image.Image:
    """A deterministic poster-like image (width, height) with structure in both directions."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                    ((x + y) * 255 // max(w + h - 2, 1))], axis=-1).astype(np.uint8)
    img = Image.fromarray(arr)
    return img if mode == "RGB" else img.convert(mode)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, mode_byte: int = 2) -> bytes:
    """A ~100-byte PNG whose IHDR claims ``width`` x ``height`` (colour type ``mode_byte``)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def png_zero_bomb(side: int = 7000) -> bytes:
    """A real greyscale PNG of side x side zero pixels (49 MP, ~50 KB compressed)."""
    row = b"\x00" + b"\x00" * side            # filter byte + pixels
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def png_one_bit(side: int = 6000) -> bytes:
    """A real 1-bit side x side PNG (36 Mpx at 6000, ~11 KB): white with a black block in the
    middle third. Accepted (under the pixel limit), it must cost what a normal poster costs."""
    stride = (side + 7) // 8                                   # 8 pixels a byte
    third = stride // 3
    white, block = b"\xff" * stride, b"\xff" * third + b"\x00" * (stride - 2 * third) + b"\xff" * third
    same = b"\x02" + b"\x00" * stride                         # filter "Up": the row above again
    comp = zlib.compressobj(9)
    prev = None
    chunks = []
    for y in range(side):
        row = block if side // 3 <= y < 2 * side // 3 else white
        chunks.append(comp.compress(same if row is prev else b"\x00" + row))
        prev = row
    data = b"".join(chunks) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)      # bit depth 1, greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def _jpeg() -> bytes:
    return _encode(_gradient(), "JPEG", quality=90)


def _truncated_jpeg() -> bytes:
    raw = _encode(_gradient((256, 384)), "JPEG", quality=95)
    return raw[: len(raw) // 2]


def _jpeg_header_only() -> bytes:
    return _jpeg()[:200]


def _png_bad_crc() -> bytes:
    raw = bytearray(_encode(_gradient(), "PNG"))
    idat = raw.index(b"IDAT")
    raw[idat + 10] ^= 0xFF                      # flip a byte of the compressed data
    return bytes(raw)


def _png_rgba() -> bytes:
    img = _gradient().convert("RGBA")
    img.putalpha(0)                              # fully transparent: composited on white
    return _encode(img, "PNG")


def _png_palette() -> bytes:
    img = _gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(img, "PNG", transparency=0)


def _png_16bit() -> bytes:
    w, h = 64, 96
    arr = (np.arange(w * h, dtype=np.uint32).reshape(h, w) * 65535 // (w * h - 1)).astype(np.uint16)
    return _encode(Image.fromarray(arr), "PNG")       # mode I;16


def _png_la() -> bytes:
    return _encode(_gradient().convert("LA"), "PNG")


def _png_1bit() -> bytes:
    return _encode(_gradient().convert("1"), "PNG")


def _tiff_float() -> bytes:
    arr = np.linspace(0.0, 1.0, 64 * 96, dtype=np.float32).reshape(96, 64)
    return _encode(Image.fromarray(arr, mode="F"), "TIFF")


def _jpeg_cmyk() -> bytes:
    return _encode(_gradient().convert("CMYK"), "JPEG", quality=90)


def _jpeg_grey() -> bytes:
    return _encode(_gradient().convert("L"), "JPEG", quality=90)


def _jpeg_progressive() -> bytes:
    return _encode(_gradient(), "JPEG", quality=90, progressive=True)


def _jpeg_exif_rotated() -> bytes:
    """Stored landscape 96x64 with EXIF orientation 6: shown (and read) as a 64x96 portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_gradient((96, 64)), "JPEG", quality=90, exif=exif.tobytes())


def _jpeg_broken_exif() -> bytes:
    """A good JPEG with a garbage APP1 'Exif' segment right after SOI."""
    raw = _jpeg()
    body = b"Exif\x00\x00" + b"MM\x00\x2a\xff\xff\xff\xff" + b"\xde\xad" * 20
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return raw[:2] + app1 + raw[2:]


def _gif_animated() -> bytes:
    frames = [_gradient().convert("P"), _gradient().transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("P")]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _over_upload_limit() -> bytes:
    return _jpeg() + b"\x00" * (MAX_UPLOAD_BYTES + 1)


def _eps() -> bytes:
    # PIL's EPS plugin would run Ghostscript: it must never be reached from a poster.
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 96\n"
            b"(%pipe%touch /tmp/mmgenre-eps-pwned) (w) file\nshowpage\n%%EOF\n")


def _svg() -> bytes:
    return (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="96">'
            b"<script>alert(1)</script><rect width='64' height='96'/></svg>")


def _check_upright_portrait(img: Image.Image) -> None:
    assert img.size == (64, 96), f"EXIF rotation not applied: {img.size}"


def _check_bounded_block(img: Image.Image) -> None:
    from mmgenre.poster import MAX_POSTER_SIDE
    assert max(img.size) <= MAX_POSTER_SIDE, f"not downscaled at load: {img.size}"
    arr = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = arr.shape
    assert arr[h // 2, w // 2] < 30 and arr[5, 5] > 225, "the black block did not survive the downscale"


def _check_white(img: Image.Image) -> None:
    assert np.asarray(img).min() >= 250, "transparent pixels must be composited on white"


def _check_not_saturated(img: Image.Image) -> None:
    arr = np.asarray(img, dtype=np.float64)
    assert 60 < arr.mean() < 200 and arr.std() > 30, "16-bit levels were not rescaled to 8 bit"


def _check_grey(img: Image.Image) -> None:
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def _poster(name: str, make: Callable[[], bytes], error: str | None = None,
            check: Callable | None = None) -> Case:
    return Case(name, "poster", make, error=error, api_error=error, names="poster", check=check)


POSTER_CASES = [
    # not images at all, or broken ones, all named .jpeg
    _poster("zero_byte", lambda: b"", "zero-byte"),
    _poster("truncated_jpeg", _truncated_jpeg, "truncated"),
    _poster("jpeg_header_only", _jpeg_header_only, "not a readable image"),
    _poster("png_bad_crc", _png_bad_crc, "corrupt"),
    _poster("text_named_jpeg", lambda: b"this is not a poster\n" * 10, "not a readable image"),
    _poster("html_named_jpeg", lambda: f"<html><body>{SCRIPT}</body></html>".encode(), "not a readable image"),
    _poster("svg_with_script", _svg, "not a readable image"),
    _poster("eps_ghostscript", _eps, "not a readable image"),
    _poster("zip_named_jpeg", lambda: b"PK\x03\x04" + bytes(range(256)) * 4, "not a readable image"),
    _poster("random_bytes", lambda: np.random.default_rng(0).bytes(4096), "not a readable image"),
    # absurd geometry and decompression bombs
    _poster("one_pixel", lambda: _encode(Image.new("RGB", (1, 1), "red"), "PNG"), "absurd size"),
    _poster("one_by_10000", lambda: _encode(Image.new("RGB", (1, 10000), "red"), "PNG"), "absurd size"),
    _poster("strip_16x400", lambda: _encode(Image.new("RGB", (16, 400), "red"), "PNG"), "absurd size"),
    _poster("bomb_header_81mp", lambda: png_claiming(9000, 9000), "too large"),
    _poster("bomb_header_over_pil_limit", lambda: png_claiming(50_000, 50_000), "too large"),
    _poster("bomb_real_49mp_zeros", png_zero_bomb, "too large"),
    _poster("over_upload_limit", _over_upload_limit, "MiB"),
    # odd but valid: must load as an upright RGB poster
    _poster("plain_jpeg", _jpeg),
    _poster("png_alpha_transparent", _png_rgba, check=_check_white),
    _poster("png_palette_transparency", _png_palette),
    _poster("png_16bit_grey", _png_16bit, check=_check_not_saturated),
    _poster("png_grey_alpha", _png_la),
    _poster("png_1bit", _png_1bit),
    _poster("png_1bit_36mp", png_one_bit, check=_check_bounded_block),
    _poster("tiff_float", _tiff_float, check=_check_not_saturated),
    _poster("jpeg_cmyk", _jpeg_cmyk),
    _poster("jpeg_greyscale", _jpeg_grey, check=_check_grey),
    _poster("jpeg_progressive", _jpeg_progressive),
    _poster("jpeg_exif_rotated", _jpeg_exif_rotated, check=_check_upright_portrait),
    _poster("jpeg_broken_exif", _jpeg_broken_exif),
    _poster("gif_animated", _gif_animated),
    _poster("webp", lambda: _encode(_gradient(), "WEBP")),
    _poster("bmp", lambda: _encode(_gradient(), "BMP")),
    _poster("smallest_16x16", lambda: _encode(_gradient((16, 16)), "PNG")),
]


# ------------------------------------------------------------------------------ plots and titles
NOTHING = "nothing to predict from"
LONG_PLOT = ("A retired detective returns to the haunted city to solve one last murder. " * 3000)[:200_000]


def _movie_check(fn: Callable[[Movie], bool], what: str) -> Callable:
    def check(movie: Movie | None, report: ValidationReport) -> None:
        assert movie is not None and fn(movie), f"{what}: got {movie!r}"[:400]
    return check


def _truncated_check(movie: Movie | None, report: ValidationReport) -> None:
    assert movie is not None and 0 < len(movie.plot) <= MAX_PLOT_CHARS
    assert movie.imdb_id in report.truncated_plots


def _empty_check(movie: Movie | None, report: ValidationReport) -> None:
    assert movie is not None and movie.plot == "" and movie.imdb_id in report.empty_plots


def _plot(name: str, value: Any, error: str | None = None, api_error: str | None = None,
          check: Callable | None = None) -> Case:
    return Case(name, "plot", value, error=error, api_error=api_error, check=check)


PLOT_CASES = [
    _plot("plot_empty_string", "", api_error=NOTHING, check=_empty_check),
    _plot("plot_empty_list", [], api_error=NOTHING, check=_empty_check),
    _plot("plot_whitespace_only", "  \n\t \u00a0\u2003\r\n  ", api_error=NOTHING, check=_empty_check),
    _plot("plot_200k_chars", LONG_PLOT, check=_truncated_check),
    _plot("plot_20k_char_word", "x" * 20_000),
    _plot("plot_non_utf8_bytes", Raw(b"caf\xe9 \xff\xfe ghost \xc3\x28 haunted"),
          check=_movie_check(lambda m: "\ufffd" in m.plot and "ghost haunted" not in m.plot, "U+FFFD")),
    _plot("plot_lone_surrogate", "ghost \ud800 haunted",
          check=_movie_check(lambda m: "\ufffd" in m.plot, "surrogate replaced")),
    _plot("plot_control_chars", "ghost\x00\x07\x1b[31m haunted\x7f house",
          check=_movie_check(lambda m: not any(c in m.plot for c in "\x00\x07\x1b\x7f"), "controls removed")),
    _plot("plot_right_to_left", "\u202eمحقق يطارد قاتلا \u05d1\u05dc\u05e9 \u05e8\u05d5\u05d7",
          check=_movie_check(lambda m: "محقق" in m.plot and "\u202e" in m.plot, "RTL kept")),
    _plot("plot_emoji", "🎬 A zombie 🧟\u200d♂️ family 👩\u200d👩\u200d👧 on a haunted 🚀 spaceship",
          check=_movie_check(lambda m: "🧟\u200d♂️" in m.plot, "emoji kept")),
    _plot("plot_zero_width_only", "\u200b\u200c\u200d\ufeff"),
    _plot("plot_script", f"A ghost story. {SCRIPT} The end.",
          check=_movie_check(lambda m: SCRIPT in m.plot, "text kept verbatim")),
    _plot("plot_img_onerror", f"{IMG_ONERROR} haunted house murder",
          check=_movie_check(lambda m: IMG_ONERROR in m.plot, "text kept verbatim")),
    _plot("plot_markdown_js_link", JS_LINK),
    # a JSON file must hold strings only; a caller's None parts are dropped
    _plot("plot_list_with_null", ["A heist.", None, "Then a murder."], error="'plot' must be"),
    _plot("plot_number", 42, error="'plot' must be", api_error="plot: expected text"),
    _plot("plot_object", {"en": "a heist"}, error="'plot' must be", api_error="plot: expected text"),
    _plot("plot_list_with_number", ["a heist", 5], error="'plot' must be", api_error="plot[1]: expected text"),
]


def _title(name: str, value: Any, error: str | None = None, check: Callable | None = None) -> Case:
    return Case(name, "title", value, error=error, check=check)


TITLE_CASES = [
    _title("title_script", SCRIPT, check=_movie_check(lambda m: m.title == SCRIPT, "kept verbatim")),
    _title("title_img_onerror", IMG_ONERROR, check=_movie_check(lambda m: m.title == IMG_ONERROR, "kept")),
    _title("title_markdown_js_link", JS_LINK),
    _title("title_number", 1984, check=_movie_check(lambda m: m.title == "1984", "number as text")),
    _title("title_rtl_emoji", "\u202eفيلم 🎬 \u05e1\u05e8\u05d8"),
    _title("title_object", {"en": "Heat"}, error="'title' must be a string"),
]


# ------------------------------------------------------------------------------ whole records
def _drop(key: str) -> Callable[[dict], dict]:
    return lambda rec: {k: v for k, v in rec.items() if k != key}


def _set(**changes) -> Callable[[dict], dict]:
    return lambda rec: {**rec, **changes}


def _genres_dropped(movie: Movie | None, report: ValidationReport) -> None:
    assert movie is not None and movie.genres == () and movie.imdb_id in report.movies_without_genres
    assert report.dropped_genres["Space Opera"] >= 1


def _record(name: str, change: Callable[[dict], dict | bytes], error: str | None = None,
            check: Callable | None = None) -> Case:
    return Case(name, "record", change, error=error, check=check)


RECORD_CASES = [
    _record("json_missing_genres", _drop("genres"), "missing field 'genres'"),
    _record("json_genres_string", _set(genres="Drama"), "'genres' must be a list of strings"),
    _record("json_genres_null", _set(genres=None), "'genres' must be a list of strings"),
    _record("json_unknown_genres_only", _set(genres=["Space Opera", "Mumblecore"]), check=_genres_dropped),
    _record("json_genre_case_and_aliases", _set(genres=["drama", "SCI-FI", "Drama"]),
            check=_movie_check(lambda m: m.genres[:1] == ("Drama",) and "Sci-Fi" in m.genres, "canonical")),
    _record("json_missing_plot", _drop("plot"), check=_empty_check),
    _record("json_missing_title", _drop("title"), check=_movie_check(lambda m: m.title == "", "empty title")),
    _record("json_year_list", _set(year=[1999]), "'year' must be a number or a string"),
    _record("json_year_garbage", _set(year="once upon a time"),
            check=_movie_check(lambda m: m.year is None, "unparseable year -> None")),
    _record("json_id_mismatch", _set(imdb_id="0000001"), "does not match"),
    _record("json_array", lambda rec: b'["Drama", "Comedy"]', "expected a JSON object"),
    _record("json_string", lambda rec: b'"just a string"', "expected a JSON object"),
    _record("json_corrupt", lambda rec: json.dumps(rec).encode()[:-10], "corrupt JSON"),
    _record("json_empty_file", lambda rec: b"", "empty file"),
    _record("json_deeply_nested", lambda rec: b"[" * 100_000 + b"]" * 100_000, "corrupt JSON"),
    _record("json_huge_integer", lambda rec: json.dumps(rec).encode()[:-1] + b', "votes": ' + b"9" * 5000 + b"}",
            "corrupt JSON"),
    _record("json_utf8_bom", lambda rec: b"\xef\xbb\xbf" + json.dumps(rec).encode()),
    _record("json_duplicate_keys", lambda rec: json.dumps(rec).encode()[:-1] + b', "genres": 7}',
            "'genres' must be a list of strings"),
    _record("json_nan_year", lambda rec: json.dumps({**rec, "year": float("nan")}).encode(),
            check=_movie_check(lambda m: m.year is None, "NaN year -> None")),
]


# ------------------------------------------------------------------------------ split.json
def _split_add(value_of: Callable[[str], Any], split: str = "dev") -> Callable[[dict, str], dict]:
    """Append ``value_of(movie_id)`` to ``split``."""
    def change(splits: dict, movie_id: str) -> dict:
        return {**splits, split: [*splits[split], value_of(movie_id)]}
    return change


def _split_absent(splits: dict, movie_id: str) -> dict:
    return _split_add(lambda mid: "9999990")(splits, movie_id)


def _split_int_id(splits: dict, movie_id: str) -> dict:
    return {k: [int(i) if i == movie_id else i for i in ids] for k, ids in splits.items()}


def _dup_check(movie: Movie | None, report: ValidationReport) -> None:
    assert movie is not None and movie.imdb_id in report.duplicate_ids


def _split(name: str, change: Callable[[dict, str], dict | bytes], error: str | None = None,
           names: str = "split", fatal: bool = False, check: Callable | None = None) -> Case:
    return Case(name, "split", change, error=error, names=names, fatal=fatal, check=check)


SPLIT_CASES = [
    _split("split_names_absent_movie", _split_absent, "does not exist", names="absent"),
    _split("split_path_traversal", _split_add(lambda mid: "../../etc/passwd"), "invalid id"),
    _split("split_absolute_path", _split_add(lambda mid: "/etc/passwd"), "invalid id"),
    _split("split_nul_in_id", _split_add(lambda mid: mid + "\x00.json"), "invalid id"),
    _split("split_bool_id", _split_add(lambda mid: True), "invalid id"),
    _split("split_float_id", _split_add(lambda mid: 1.5), "invalid id"),
    _split("split_duplicate_id_across_splits", _split_add(lambda mid: mid, "test"), check=_dup_check),
    _split("split_int_id", _split_int_id,
           check=_movie_check(lambda m: m.imdb_id.isdigit(), "int ids are zero-padded")),
    _split("split_not_a_list", lambda s, mid: {**s, "dev": "0000001"}, "must be a list of ids", fatal=True),
    _split("split_json_array", lambda s, mid: b'["train", "dev"]', "expected an object", fatal=True),
    _split("split_json_empty_object", lambda s, mid: b"{}", "expected an object", fatal=True),
    _split("split_json_corrupt", lambda s, mid: b'{"train": ["00', "unreadable split file", fatal=True),
    _split("split_json_huge_integer", lambda s, mid: b'{"train": [' + b"7" * 5000 + b"]}",
           "unreadable split file", fatal=True),
    _split("split_json_missing", lambda s, mid: None, "missing split.json", names="root", fatal=True),
]

CASES: list[Case] = POSTER_CASES + PLOT_CASES + TITLE_CASES + RECORD_CASES + SPLIT_CASES
BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


def cases(*kinds: str, ok: bool | None = None, fatal: bool | None = None) -> list[Case]:
    """The corpus filtered by kind, by outcome (ok=True: must succeed) and by ``fatal``."""
    return [c for c in CASES if (not kinds or c.kind in kinds) and (ok is None or c.ok == ok)
            and (fatal is None or c.fatal == fatal)]


# ------------------------------------------------------------------------------ installing
@dataclass(frozen=True)
class Installed:
    case: Case
    root: Path
    movie_id: str       # the movie the case was put into
    path: Path          # the file an error message must name

    @property
    def skipped_id(self) -> str:
        """The id skip_bad lists in ``report.skipped_ids``."""
        if self.case.kind == "split" and self.case.names == "split":
            return str(_added_value(self.case, self.movie_id))
        return self.movie_id if self.case.names != "absent" else "9999990"


def _added_value(case: Case, movie_id: str) -> Any:
    """The entry a split case appends to split.json (None if it appends nothing)."""
    splits = case.payload({"train": [], "dev": [], "test": []}, movie_id)
    added = [ids[-1] for ids in splits.values() if ids] if isinstance(splits, dict) else []
    return added[0] if added else None


def _dump_json(value: dict, raw: dict[str, bytes]) -> bytes:
    """JSON bytes of ``value`` with the Raw placeholders replaced by their bytes."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for marker, data in raw.items():
        text = text.replace(marker.encode(), data)
    return text


def install(case: Case, root: Path, movie_id: str) -> Installed:
    """Put ``case`` into the dataset at ``root``, on ``movie_id``; returns where it went."""
    dataset = root / "dataset"
    json_path = dataset / f"{movie_id}.json"
    if case.kind == "poster":
        path = dataset / f"{movie_id}.jpeg"
        path.write_bytes(case.poster_bytes())
        return Installed(case, root, movie_id, path)
    if case.kind in ("plot", "title", "record"):
        rec = json.loads(json_path.read_text(encoding="utf-8"))
        raw: dict[str, bytes] = {}
        if case.kind == "record":
            new = case.payload(rec)
        else:
            value = case.payload
            if isinstance(value, Raw):
                marker = f"@@RAW-{case.name}@@"
                raw[marker] = value.data
                value = marker
            new = {**rec, case.kind: value}
        json_path.write_bytes(new if isinstance(new, bytes) else _dump_json(new, raw))
        return Installed(case, root, movie_id, json_path)
    split_path = root / "split.json"
    splits = json.loads(split_path.read_text(encoding="utf-8"))
    new = case.payload(splits, movie_id)
    if new is None:
        split_path.unlink()
    else:
        split_path.write_bytes(new if isinstance(new, bytes) else json.dumps(new).encode())
    if case.names == "absent":
        return Installed(case, root, movie_id, dataset / "9999990.json")
    if case.names == "root":
        return Installed(case, root, movie_id, root)
    return Installed(case, root, movie_id, split_path)


def _movie_ids(root: Path) -> list[str]:
    """Every id of split.json, interleaving the splits (train, dev, test, train, ...)."""
    splits = json.loads((root / "split.json").read_text(encoding="utf-8"))
    lists = list(splits.values())
    out = []
    for i in range(max(len(ids) for ids in lists)):
        out += [ids[i] for ids in lists if i < len(ids)]
    return out


def make_base(root: Path, n_movies: int = 24) -> Path:
    """A clean generated dataset of ``n_movies`` (half train, a quarter dev, a quarter test)."""
    n_dev = n_test = max(2, n_movies // 4)
    return make_tiny_mmimdb(root, n_train=n_movies - n_dev - n_test, n_dev=n_dev, n_test=n_test,
                            seed=7)


def build_case_dataset(case: Case, base: Path, root: Path) -> Installed:
    """A copy of ``base`` (from :func:`make_base`) holding ``case`` alone, on a dev movie that has
    a poster and a plot."""
    shutil.copytree(base, root)
    splits = json.loads((root / "split.json").read_text(encoding="utf-8"))
    movie_id = next(i for i in splits["dev"] if (root / "dataset" / f"{i}.jpeg").exists()
                    and json.loads((root / "dataset" / f"{i}.json").read_text())["plot"])
    return install(case, root, movie_id)


def build_hostile_dataset(root: Path, case_list: list[Case] | None = None,
                          normal_every: int = 2) -> dict[str, Installed]:
    """One dataset holding every non-fatal case (each on its own movie, with ``normal_every - 1``
    untouched movies between them so that training still has clean data)."""
    chosen = [c for c in (case_list if case_list is not None else CASES) if not c.fatal]
    make_base(root, n_movies=max(24, normal_every * len(chosen) + 8))
    ids = _movie_ids(root)
    out = {}
    for i, c in enumerate(chosen):
        if c.kind == "poster":   # the case name as title, so a UI can find the movie by title
            path = root / "dataset" / f"{ids[i * normal_every]}.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "title": c.name}))
        out[c.name] = install(c, root, ids[i * normal_every])
    return out


# ------------------------------------------------------------------------------ untrusted files
class PickleBomb:
    """Unpickling this creates ``marker`` (harmless proof that pickled code ran)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def torch_pickle_payload(marker: Path) -> bytes:
    """A ``torch.save`` file (zip + pickle) whose unpickling would create ``marker``."""
    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": PickleBomb(marker)}, buf)
    return buf.getvalue()


def plain_pickle_payload(marker: Path) -> bytes:
    import pickle

    return pickle.dumps({"state_dict": PickleBomb(marker)}, protocol=2)


def _edit_config(**changes) -> Callable[[Path], None]:
    def mutate(ckpt: Path) -> None:
        cfg = json.loads((ckpt / "config.json").read_text())
        for key, value in changes.items():
            target = cfg
            *parents, leaf = key.split("__")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
        (ckpt / "config.json").write_text(json.dumps(cfg))
    return mutate


def _edit_encoders(**changes) -> Callable[[Path], None]:
    """``changes`` applied to every encoder the config names."""
    def mutate(ckpt: Path) -> None:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["encoders"] = {k: {**v, **changes} for k, v in cfg.get("encoders", {}).items()}
        (ckpt / "config.json").write_text(json.dumps(cfg))
    return mutate


def _edit_dims(value: Any) -> Callable[[Path], None]:
    """Every entry of the head's ``dims`` set to ``value``."""
    def mutate(ckpt: Path) -> None:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["head"]["dims"] = {k: value for k in cfg["head"].get("dims", {"text": 0})}
        (ckpt / "config.json").write_text(json.dumps(cfg))
    return mutate


def _weights(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def mutate(ckpt: Path) -> None:
        from safetensors.numpy import load_file, save_file
        save_file(change(load_file(str(ckpt / "model.safetensors"))), str(ckpt / "model.safetensors"))
    return mutate


def _replace_weights_with(data: Callable[[Path], bytes]) -> Callable[[Path], None]:
    def mutate(ckpt: Path) -> None:
        (ckpt / "model.safetensors").write_bytes(data(ckpt))
    return mutate


def _pt_instead(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.pt").write_bytes(torch_pickle_payload(ckpt.parent / "PWNED"))


def _first_2d(weights: dict) -> str:
    return next(k for k, v in weights.items() if v.ndim == 2)


@dataclass(frozen=True)
class CheckpointCase:
    """A crafted checkpoint folder: ``mutate`` edits a copy of a good one; loading it must raise
    an InputError containing ``error`` (and never run code)."""

    name: str
    mutate: Callable[[Path], None]
    error: str
    neural_only: bool = False      # about a neural head's config (baselines have none)
    baseline_only: bool = False

    def applies_to(self, model: str) -> bool:
        from mmgenre.heads import HEADS  # the neural models are the registered heads
        return not (self.neural_only and model not in HEADS) and not (self.baseline_only and model in HEADS)

    def __repr__(self) -> str:
        return f"CheckpointCase({self.name})"


CHECKPOINT_CASES = [
    CheckpointCase("pickle_pt_instead_of_safetensors", _pt_instead, "pickled weights are not loaded"),
    CheckpointCase("pickle_named_safetensors", _replace_weights_with(lambda c: torch_pickle_payload(c.parent / "PWNED")),
                   "not a readable safetensors file"),
    CheckpointCase("plain_pickle_named_safetensors",
                   _replace_weights_with(lambda c: plain_pickle_payload(c.parent / "PWNED")),
                   "not a readable safetensors file"),
    CheckpointCase("safetensors_huge_header", _replace_weights_with(lambda c: struct.pack("<Q", 2**62) + b"{}"),
                   "not a readable safetensors file"),
    CheckpointCase("safetensors_truncated",
                   _replace_weights_with(lambda c: (c / "model.safetensors").read_bytes()[:300]),
                   "not a readable safetensors file"),
    CheckpointCase("safetensors_empty", _replace_weights_with(lambda c: b""), "not a readable safetensors file"),
    CheckpointCase("config_not_json", lambda c: (c / "config.json").write_text("{model: gmu"), "not valid JSON"),
    CheckpointCase("config_array", lambda c: (c / "config.json").write_text("[]"), "must hold a JSON object"),
    CheckpointCase("config_huge", lambda c: (c / "config.json").write_bytes(b" " * (3 * 2**20) + b"{}"),
                   "larger than"),
    CheckpointCase("config_unknown_model", _edit_config(model="../../evil_head"), "unknown model"),
    CheckpointCase("config_unknown_encoder", _edit_config(encoders__text={"name": "gpt-17"}), "unknown text encoder"),
    CheckpointCase("config_unknown_encoder_kind", _edit_config(encoders__audio={"name": "x"}),
                   "unknown encoder kind"),
    CheckpointCase("config_wrong_format_version", _edit_config(format_version=99), "format_version"),
    CheckpointCase("config_thresholds_short", _edit_config(thresholds=[0.5] * 5), "'thresholds'"),
    CheckpointCase("config_thresholds_nan", _edit_config(thresholds=[float("nan")] * 23), "'thresholds'"),
    CheckpointCase("config_genres_reordered", _edit_config(genres=["Comedy", "Drama"]), "genre list"),
    CheckpointCase("config_head_dims_negative", _edit_dims(-384), "dims", neural_only=True),
    CheckpointCase("config_head_dims_huge", _edit_dims(10**12), "do not match", neural_only=True),
    CheckpointCase("config_head_dims_string", _edit_dims("384"), "dims", neural_only=True),
    CheckpointCase("config_head_hidden_huge", _edit_config(head__hparams={"hidden": 10**9, "dropout": 0.1}),
                   "do not match", neural_only=True),
    CheckpointCase("config_head_hparam_unknown", _edit_config(head__hparams={"hidden": 32, "evil": 1}),
                   "unknown hyperparameter", neural_only=True),
    CheckpointCase("config_head_dropout_string", _edit_config(head__hparams={"hidden": 32, "dropout": "x"}),
                   "head config", neural_only=True),
    CheckpointCase("config_vocabulary_not_list", _edit_config(head__hparams={"vocabulary": "abc"}),
                   "vocabulary", baseline_only=True),
    CheckpointCase("config_head_missing", _edit_config(head="gmu"), "config"),
    CheckpointCase("config_encoder_weights_list", _edit_encoders(weights=["x"]), "'weights' must be a path",
                   neural_only=True),
    CheckpointCase("weights_shape_mismatch",
                   _weights(lambda w: {**w, _first_2d(w): np.zeros((3, 3), dtype=np.float32)}), "do not match"),
    CheckpointCase("weights_missing_tensor",
                   _weights(lambda w: {k: v for k, v in w.items() if k != _first_2d(w)}), "do not match"),
    CheckpointCase("weights_extra_tensor", _weights(lambda w: {**w, "evil": np.zeros(3, dtype=np.float32)}),
                   "do not match"),
]
