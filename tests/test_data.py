"""mmgenre.data: loading the official layout, bad-input handling, posters and plot cleaning."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgenre import data as D
from mmgenre.data import (MAX_PLOT_CHARS, MMIMDb, Movie, clean_plot, load_poster,
                          read_movie_json, resolve_data_dir)
from mmgenre.errors import InputError
from mmgenre.genres import GENRES, N_GENRES


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def tiny(tmp_path: Path, tiny_data: Path) -> Path:
    """A private, writable copy of the session's tiny dataset."""
    return Path(shutil.copytree(tiny_data, tmp_path / "tiny"))


def split_ids(root: Path) -> dict[str, list[str]]:
    return json.loads((root / "split.json").read_text())


def first_with_poster(root: Path, split: str = "train") -> str:
    return next(i for i in split_ids(root)[split] if (root / "dataset" / f"{i}.jpeg").exists())


def edit_json(root: Path, movie_id: str, **changes) -> Path:
    path = root / "dataset" / f"{movie_id}.json"
    rec = json.loads(path.read_text())
    for k, v in changes.items():
        if v is _DELETE:
            rec.pop(k, None)
        else:
            rec[k] = v
    path.write_text(json.dumps(rec))
    return path


_DELETE = object()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def image_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- tiny dataset
def test_tiny_dataset_loads_with_counts_and_labels(tiny_data: Path):
    ds = MMIMDb.load(tiny_data, check_images=True)
    ids = split_ids(tiny_data)
    assert ds.report.per_split == {"train": 24, "dev": 12, "test": 12}
    assert len(ds) == ds.report.n_movies == 48
    assert list(ds.movies) == ids["train"] + ids["dev"] + ids["test"]
    assert [m.imdb_id for m in ds.split("dev")] == ids["dev"]
    assert all(m.split == "test" for m in ds.split("test"))
    # movie i lacks a poster when i % 5 == 4; an empty plot when i % 7 == 6 (never both)
    assert len(ds.report.missing_posters) == 9
    assert len(ds.report.empty_plots) == 5
    assert not set(ds.report.missing_posters) & set(ds.report.empty_plots)
    assert {m.imdb_id for m in ds if not m.has_poster} == set(ds.report.missing_posters)
    assert ds.report.bad_files == [] and ds.report.skipped_ids == []

    y = ds.labels(ids["train"])
    assert y.shape == (24, N_GENRES) and y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    assert (y.sum(1) >= 1).all() and (y.sum(1) <= 3).all()
    assert (y.sum(0) >= 1).all(), "every genre occurs in train"
    some = ds[ids["dev"][0]]
    raw = json.loads((tiny_data / "dataset" / f"{some.imdb_id}.json").read_text())
    assert isinstance(some, Movie) and some.genres == tuple(raw["genres"])
    assert some.plot == clean_plot(raw["plot"]) and some.title == raw["title"]
    assert some.year == raw["year"]
    np.testing.assert_array_equal(some.labels, [g in raw["genres"] for g in GENRES])
    assert ds.labels([]).shape == (0, N_GENRES)
    with pytest.raises(InputError, match="unknown imdb ids"):
        ds.labels(["nope"])
    with pytest.raises(InputError, match="unknown split"):
        ds.split("validation")


def test_report_serialises_and_summarises(tiny_data: Path):
    rep = MMIMDb.load(tiny_data).report
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["n_movies"] == 48 and d["per_split"]["dev"] == 12
    assert len(d["missing_posters"]) == 9
    text = rep.summary()
    assert "48 movies" in text and "9 missing" in text and "5 empty" in text


def test_fingerprint_stable_across_copies_and_mtimes(tiny: Path, tmp_path: Path):
    fp = MMIMDb.load(tiny).fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    clone = Path(shutil.copytree(tiny, tmp_path / "clone"))
    for f in (clone / "dataset").iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    assert MMIMDb.load(clone).fingerprint() == fp
    # content changes do change it: a plot, a genre, a poster's bytes
    mid = split_ids(clone)["train"][0]
    edit_json(clone, mid, plot=["something else entirely"])
    fp_plot = MMIMDb.load(clone).fingerprint()
    assert fp_plot != fp
    poster = clone / "dataset" / f"{first_with_poster(clone)}.jpeg"
    poster.write_bytes(poster.read_bytes() + b"\0")
    assert MMIMDb.load(clone).fingerprint() != fp_plot


# --------------------------------------------------------------------------- bad inputs
def _corrupt_json(root):
    mid = split_ids(root)["train"][3]
    path = root / "dataset" / f"{mid}.json"
    path.write_text('{"title": "x", "genres": ["Drama"], "plot": ["unterminated')
    return path, mid, "corrupt JSON"


def _id_without_json(root):
    mid = split_ids(root)["dev"][1]
    path = root / "dataset" / f"{mid}.json"
    path.unlink()
    return path, mid, "does not exist"


def _missing_genres(root):
    mid = split_ids(root)["test"][0]
    return edit_json(root, mid, genres=_DELETE), mid, "missing field 'genres'"


def _plot_wrong_type(root):
    mid = split_ids(root)["train"][5]
    return edit_json(root, mid, plot=42), mid, "'plot' must be"


def _genres_not_strings(root):
    mid = split_ids(root)["train"][6]
    return edit_json(root, mid, genres=["Drama", 7]), mid, "'genres' must be"


def _json_not_object(root):
    mid = split_ids(root)["dev"][2]
    path = root / "dataset" / f"{mid}.json"
    path.write_text('["Drama"]')
    return path, mid, "expected a JSON object"


def _empty_json_file(root):
    mid = split_ids(root)["dev"][3]
    path = root / "dataset" / f"{mid}.json"
    path.write_bytes(b"")
    return path, mid, "empty file"


def _id_mismatch(root):
    mid = split_ids(root)["train"][7]
    return edit_json(root, mid, imdb_id="0000001"), mid, "does not match"


def _truncated_jpeg(root):
    mid = first_with_poster(root)
    path = root / "dataset" / f"{mid}.jpeg"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path, mid, "truncated"


def _zero_byte_jpeg(root):
    mid = first_with_poster(root, "dev")
    path = root / "dataset" / f"{mid}.jpeg"
    path.write_bytes(b"")
    return path, mid, "zero-byte"


def _text_named_jpeg(root):
    mid = first_with_poster(root, "test")
    path = root / "dataset" / f"{mid}.jpeg"
    path.write_text("this is not a poster\n")
    return path, mid, "not a readable image"


def _one_pixel_jpeg(root):
    mid = first_with_poster(root)
    path = root / "dataset" / f"{mid}.jpeg"
    Image.new("RGB", (1, 1), "red").save(path, format="JPEG")
    return path, mid, "absurd size"


def _bomb_header(root):
    mid = first_with_poster(root, "dev")
    path = root / "dataset" / f"{mid}.jpeg"
    path.write_bytes(png_header(9000, 9000))      # 81 M pixels > MAX_IMAGE_PIXELS, ~100 bytes
    return path, mid, "too large"


JSON_CASES = [_corrupt_json, _id_without_json, _missing_genres, _plot_wrong_type,
              _genres_not_strings, _json_not_object, _empty_json_file, _id_mismatch]
IMAGE_CASES = [_truncated_jpeg, _zero_byte_jpeg, _text_named_jpeg, _one_pixel_jpeg, _bomb_header]


@pytest.mark.parametrize("case", JSON_CASES + IMAGE_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_raises_naming_the_file(tiny: Path, case):
    path, _, reason = case(tiny)
    check = case in IMAGE_CASES
    with pytest.raises(InputError) as exc:
        MMIMDb.load(tiny, check_images=check)
    assert str(path) in str(exc.value) and reason in str(exc.value)


@pytest.mark.parametrize("case", JSON_CASES + IMAGE_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_skipped_and_recorded(tiny: Path, case):
    path, mid, reason = case(tiny)
    ds = MMIMDb.load(tiny, skip_bad=True, check_images=case in IMAGE_CASES)
    assert ds.report.skipped_ids == [mid]
    assert len(ds.report.bad_files) == 1
    bad_path, bad_reason = ds.report.bad_files[0]
    assert bad_path == str(path) and reason in bad_reason
    assert mid not in ds and len(ds) == 47 and sum(ds.report.per_split.values()) == 47
    assert all(mid not in ids for ids in ds.splits.values())
    assert "1 bad files" in ds.report.summary()


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_posters_not_decoded_without_check_images(tiny: Path, case):
    _, mid, _ = case(tiny)
    ds = MMIMDb.load(tiny)            # check_images=False: posters are only listed
    assert ds[mid].has_poster and ds.report.bad_files == []
    with pytest.raises(InputError, match=mid):
        load_poster(ds[mid].poster_path)


@pytest.mark.parametrize("bad_id", [None, 1.5, "../../etc/passwd", ""])
def test_invalid_split_entry(tiny: Path, bad_id):
    ids = split_ids(tiny)
    ids["dev"].append(bad_id)
    (tiny / "split.json").write_text(json.dumps(ids))
    with pytest.raises(InputError, match="split.json.*invalid id"):
        MMIMDb.load(tiny)
    ds = MMIMDb.load(tiny, skip_bad=True)
    assert len(ds) == 48 and ds.report.skipped_ids == [str(bad_id)]


@pytest.mark.parametrize("content", ["{oops", '["train"]', '{"train": "0000001"}'])
def test_bad_split_file(tiny: Path, content):
    (tiny / "split.json").write_text(content)
    for skip in (False, True):
        with pytest.raises(InputError, match="split.json"):
            MMIMDb.load(tiny, skip_bad=skip)


# --------------------------------------------------------------------------- recorded, not errors
@pytest.mark.parametrize("skip_bad", [False, True])
def test_duplicate_ids_keep_first(tiny: Path, skip_bad: bool):
    ids = split_ids(tiny)
    within, across = ids["train"][0], ids["train"][1]
    ids["train"].append(within)
    ids["test"].append(across)
    (tiny / "split.json").write_text(json.dumps(ids))
    ds = MMIMDb.load(tiny, skip_bad=skip_bad)
    assert ds.report.duplicate_ids == [within, across]
    assert len(ds) == 48 and ds.report.per_split == {"train": 24, "dev": 12, "test": 12}
    assert ds[across].split == "train" and ds.splits["test"].count(across) == 0
    assert ds.splits["train"].count(within) == 1


@pytest.mark.parametrize("skip_bad", [False, True])
def test_unknown_and_dropped_genres_counted(tiny: Path, skip_bad: bool):
    a, b, c = split_ids(tiny)["train"][:3]
    edit_json(tiny, a, genres=["Drama", "News", "Klingon Opera", "sci fi"])
    edit_json(tiny, b, genres=["Talk-Show", "News"])
    edit_json(tiny, c, genres=[])
    ds = MMIMDb.load(tiny, skip_bad=skip_bad)
    assert ds[a].genres == ("Drama", "Sci-Fi")
    assert ds.report.dropped_genres == {"News": 2, "Klingon Opera": 1, "Talk-Show": 1}
    assert ds.report.movies_without_genres == [b, c]
    assert ds[b].labels.sum() == 0 and len(ds) == 48
    assert "News x2" in ds.report.summary()


@pytest.mark.parametrize("skip_bad", [False, True])
def test_plot_edge_cases(tiny: Path, skip_bad: bool):
    a, b, c, d_, e = split_ids(tiny)["dev"][:5]
    edit_json(tiny, a, plot=["word " * 40_000])          # 200,000 chars
    edit_json(tiny, b, plot=["  \n\t ", " "])
    edit_json(tiny, c, plot=_DELETE)
    edit_json(tiny, d_, plot="A single\x00 string\x07 plot.")
    path = tiny / "dataset" / f"{e}.json"                # raw Latin-1 byte inside a UTF-8 file
    path.write_bytes(json.dumps({"title": "Caf", "genres": ["Drama"], "plot": ["Caf@ noir"]})
                     .encode().replace(b"@", b"\xe9"))
    ds = MMIMDb.load(tiny, skip_bad=skip_bad)
    assert MAX_PLOT_CHARS - 5 <= len(ds[a].plot) <= MAX_PLOT_CHARS
    assert ds[a].plot.endswith("word") and ds.report.truncated_plots == [a]
    assert ds[b].plot == "" and ds[c].plot == "" and not ds[b].has_plot
    assert {b, c} <= set(ds.report.empty_plots)
    assert ds[d_].plot == "A single string plot."
    assert ds[e].plot == "Caf\ufffd noir" and ds.report.bad_files == []


def test_missing_poster_and_int_ids(tmp_path: Path):
    root = tmp_path / "mm"
    (root / "dataset").mkdir(parents=True)
    (root / "split.json").write_text(json.dumps({"train": [192, "0000417"], "dev": [], "test": []}))
    for mid, year in (("0000192", "1898"), ("0000417", 1902.0)):
        (root / "dataset" / f"{mid}.json").write_text(json.dumps(
            {"title": 1984, "year": year, "plot": ["Plot."], "genres": ["Short"]}))
    Image.new("RGB", (40, 60), "blue").save(root / "dataset" / "0000417.jpeg")
    ds = MMIMDb.load(root, check_images=True)
    assert list(ds.movies) == ["0000192", "0000417"]
    assert ds["0000192"].poster_path is None and ds.report.missing_posters == ["0000192"]
    assert ds["0000417"].poster_path == (root / "dataset" / "0000417.jpeg").resolve()
    assert ds["0000192"].year == 1898 and ds["0000417"].year == 1902
    assert ds["0000192"].title == "1984"


# --------------------------------------------------------------------------- data dir
def test_resolve_data_dir(tiny: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MMGENRE_DATA", raising=False)
    with pytest.raises(InputError, match="MMGENRE_DATA.*archive.org"):
        resolve_data_dir()
    monkeypatch.setenv("MMGENRE_DATA", str(tiny))
    assert resolve_data_dir() == tiny.resolve()
    assert len(MMIMDb.load()) == 48
    # the tarball extracts to mmimdb/: its parent is accepted too
    parent = tmp_path / "download"
    shutil.copytree(tiny, parent / "mmimdb")
    assert resolve_data_dir(parent) == (parent / "mmimdb").resolve()
    with pytest.raises(InputError, match="does not exist"):
        resolve_data_dir(tmp_path / "nowhere")
    shutil.rmtree(tiny / "dataset")
    with pytest.raises(InputError, match="missing dataset/"):
        MMIMDb.load(tiny)
    (tiny / "split.json").unlink()
    with pytest.raises(InputError, match="missing split.json and dataset/"):
        resolve_data_dir(tiny)


# --------------------------------------------------------------------------- posters
def _pixel(img: Image.Image, xy) -> np.ndarray:
    return np.asarray(img, dtype=np.int64)[xy[1], xy[0]]


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path):
    upright = Image.new("RGB", (40, 80), (220, 20, 20))           # portrait, red top half
    upright.paste((20, 20, 220), (0, 40, 40, 80))                 # blue bottom half
    stored = upright.transpose(Image.Transpose.ROTATE_90)         # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6                                              # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpeg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.size == (80, 40)
    img = load_poster(path)
    assert img.size == (40, 80) and img.mode == "RGB"
    assert _pixel(img, (20, 10))[0] > 180 and _pixel(img, (20, 70))[2] > 180


def test_alpha_composited_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))             # fully transparent
    img.paste((255, 0, 0, 255), (0, 0, 16, 32))                   # opaque red left half
    out = load_poster(image_bytes(img, "PNG"))
    assert out.mode == "RGB"
    assert tuple(_pixel(out, (4, 4))) == (255, 0, 0)
    assert tuple(_pixel(out, (28, 4))) == (255, 255, 255)
    la = Image.new("LA", (32, 32), (0, 128))
    assert abs(int(_pixel(load_poster(la), (5, 5))[0]) - 127) <= 2  # half black on white


def test_palette_images():
    pal = Image.new("RGB", (32, 32), (0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = load_poster(image_bytes(pal, "PNG"))
    assert out.mode == "RGB" and abs(int(_pixel(out, (3, 3))[1]) - 200) <= 4
    transparent = Image.new("P", (32, 32), 0)
    transparent.putpalette([10, 20, 30] * 256)
    out = load_poster(image_bytes(transparent, "PNG", transparency=0))
    assert tuple(_pixel(out, (3, 3))) == (255, 255, 255)
    gif = load_poster(image_bytes(transparent, "GIF"))
    assert tuple(_pixel(gif, (3, 3))) == (10, 20, 30)


def test_16bit_greyscale_rescaled(tmp_path: Path):
    arr = np.zeros((32, 32), dtype=np.uint16)
    arr[:, 16:] = 65535
    arr[:8, :8] = 32768
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = load_poster(path)
    assert out.mode == "RGB"
    assert tuple(_pixel(out, (20, 20))) == (255, 255, 255)
    assert tuple(_pixel(out, (12, 20))) == (0, 0, 0)
    assert abs(int(_pixel(out, (2, 2))[0]) - 128) <= 1


def test_cmyk_and_greyscale():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))          # pure red in CMYK
    out = load_poster(image_bytes(cmyk, "JPEG", quality=95))
    r, g, b = _pixel(out, (16, 16))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60
    grey = load_poster(image_bytes(Image.new("L", (32, 32), 90), "JPEG"))
    assert grey.mode == "RGB" and tuple(_pixel(grey, (5, 5))) == (90, 90, 90)
    bw = load_poster(Image.new("1", (32, 32), 1))
    assert tuple(_pixel(bw, (5, 5))) == (255, 255, 255)


def test_poster_sources_and_full_decode(tmp_path: Path):
    src = Image.new("RGB", (48, 64), (1, 2, 3))
    path = tmp_path / "p.jpeg"
    src.save(path, quality=100)
    img = load_poster(str(path))
    path.unlink()                                   # fully decoded: the file is no longer needed
    assert np.asarray(img).shape == (64, 48, 3)
    assert load_poster(image_bytes(src, "PNG")).size == (48, 64)
    out = load_poster(src)
    assert out is not src and out.size == (48, 64)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p, "cannot read image"),                                           # missing file
    (lambda p: (p.write_bytes(b""), p)[1], "zero-byte"),
    (lambda p: (p.write_bytes(b"GIF89a garbage"), p)[1], "not a readable image"),
    (lambda p: (p.write_bytes(png_header(100_000, 100_000)), p)[1], "too large"),  # > PIL's own limit
    (lambda p: (p.write_bytes(png_header(10_000, 16)), p)[1], "absurd size"),
])
def test_load_poster_errors_name_the_file(tmp_path: Path, make, reason):
    path = make(tmp_path / "poster_x.jpeg")
    with pytest.raises(InputError, match=reason) as exc:
        load_poster(path)
    assert "poster_x.jpeg" in str(exc.value)


def test_limits_are_read_at_call_time(monkeypatch):
    from mmgenre import poster as P   # the limits live where load_poster does
    img_bytes = image_bytes(Image.new("RGB", (100, 100), "white"), "PNG")
    monkeypatch.setattr(P, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(InputError, match="upload.png: image too large"):
        load_poster(img_bytes, name="upload.png")
    monkeypatch.setattr(P, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(InputError, match="over"):
        load_poster(img_bytes)
    with pytest.raises(InputError, match="expected a path, bytes or a PIL image"):
        load_poster(12345)


# --------------------------------------------------------------------------- plots and json
def test_clean_plot():
    assert clean_plot(["First part.", "  Second\tpart. "]) == "First part. Second part."
    assert clean_plot(None) == "" and clean_plot(" \n\t ") == "" and clean_plot([]) == ""
    assert clean_plot(b"Caf\xe9 au lait") == "Caf\ufffd au lait"
    assert clean_plot("a\x00b\x1bc  d\r\n\r\n\r\n\ne") == "abc d\n\ne"
    assert clean_plot("bad \ud800 surrogate") == "bad \ufffd surrogate"
    long = clean_plot("x" * 200_000)
    assert len(long) == MAX_PLOT_CHARS == 20_000
    with pytest.raises(InputError, match=r"plot\[1\]"):
        clean_plot(["ok", 3])
    with pytest.raises(InputError, match="plot"):
        clean_plot(12)


def test_read_movie_json(tmp_path: Path):
    path = tmp_path / "0000001.json"
    path.write_text(json.dumps({"plot": ["p"], "genres": ["Drama"], "year": 2001}))
    assert read_movie_json(path)["genres"] == ["Drama"]
    path.write_text(json.dumps({"plot": ["p"], "genres": "Drama"}))
    with pytest.raises(InputError, match="0000001.json: field 'genres'"):
        read_movie_json(path)
    with pytest.raises(InputError, match="cannot read"):
        read_movie_json(tmp_path / "missing.json")


# --------------------------------------------------------------------------- real data (optional)
def _is_lite(root: Path) -> bool:
    readme = root / "README.md"
    return readme.is_file() and readme.read_text(errors="replace").startswith("# mmimdb-lite")


def test_lite_data_counts_and_fingerprint(lite_data: Path):
    ds = MMIMDb.load(lite_data)
    rep = ds.report
    assert rep.bad_files == [] and rep.skipped_ids == [] and rep.duplicate_ids == []
    assert not rep.dropped_genres and rep.movies_without_genres == []
    assert all(m.genres and set(m.genres) <= set(GENRES) for m in ds)
    if _is_lite(lite_data):
        assert rep.per_split == {"train": 926, "dev": 2608, "test": 464}
        assert len(ds) - len(rep.missing_posters) == 1805
        assert rep.empty_plots == []
    assert MMIMDb.load(lite_data).fingerprint() == ds.fingerprint()
    # a sample of real posters decodes through the same path the models use
    for m in [m for m in ds if m.has_poster][::150]:
        img = load_poster(m.poster_path)
        assert img.mode == "RGB" and min(img.size) >= D.MIN_IMAGE_SIDE
