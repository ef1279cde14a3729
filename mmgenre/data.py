"""MM-IMDb reader: Movie records, official splits, multi-hot labels and input validation.

Official layout (Arevalo et al. 2017, ``mmimdb.tar.gz``)::

    root/split.json              {"train": [ids], "dev": [ids], "test": [ids]}
    root/dataset/<id>.json       {"title", "year", "plot": [str, ...], "genres": [str, ...], ...}
    root/dataset/<id>.jpeg       poster (may be missing: the movie is then text-only)

Every problem with a file is raised as :class:`~mmgenre.errors.InputError` naming the file, or,
with ``skip_bad=True``, the movie is skipped and the problem recorded in the
:class:`ValidationReport`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES, split_known, to_multi_hot

MAX_PLOT_CHARS = 20_000          # longer plots are truncated (and recorded), not rejected
MAX_IMAGE_PIXELS = 40_000_000    # decompression-bomb guard, checked from the header before decoding
MIN_IMAGE_SIDE = 16              # 1x1 or 1x10000 "posters" are rejected
MAX_ASPECT_RATIO = 20.0          # a 16x4000 strip is not a poster either
MAX_UPLOAD_BYTES = 20 * 2**20    # posters are a few hundred KB; anything over 20 MiB is refused
# Raster formats a poster may come in; PIL's rarer decoders are not exposed to uploads.
ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
POSTER_SUFFIXES = (".jpeg", ".jpg", ".png")   # official is .jpeg; the others are accepted too
DATA_ENV_VAR = "MMGENRE_DATA"
PROGRESS_MIN_FILES = 500

HOW_TO_GET_DATA = (
    "MM-IMDb (Arevalo et al. 2017) is not shipped with mmgenre. Download "
    "https://archive.org/download/mmimdb/mmimdb.tar.gz (8.1 GB; project page "
    "http://lisi1.unal.edu.co/mmimdb/), extract it with `tar -xzf mmimdb.tar.gz`, and pass the "
    f"folder that holds split.json and dataset/ as --data, or set {DATA_ENV_VAR}=<that folder>."
)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")   # ids become file names: no separators, no '..'
_HSPACE_RE = re.compile(r"[^\S\n]+")            # whitespace other than newline
_BLANK_LINES_RE = re.compile(r"\n{3,}")
# Control characters (Unicode Cc) that are not whitespace; \t \v \f \x1c-\x1f \x85 become spaces.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Movie:
    """One MM-IMDb movie. ``plot`` is cleaned text ("" when missing); ``genres`` are canonical."""

    imdb_id: str
    title: str
    year: int | None
    plot: str
    genres: tuple[str, ...]
    poster_path: Path | None
    split: str | None

    @property
    def labels(self) -> np.ndarray:
        """(23,) float32 multi-hot vector in ``GENRES`` order."""
        return to_multi_hot(self.genres)

    @property
    def has_poster(self) -> bool:
        return self.poster_path is not None

    @property
    def has_plot(self) -> bool:
        return bool(self.plot)


@dataclass
class ValidationReport:
    """What loading found: counts, and every file that was odd, repaired or skipped."""

    n_movies: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    missing_posters: list[str] = field(default_factory=list)
    empty_plots: list[str] = field(default_factory=list)
    truncated_plots: list[str] = field(default_factory=list)
    dropped_genres: Counter = field(default_factory=Counter)
    movies_without_genres: list[str] = field(default_factory=list)
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped_genres"] = dict(self.dropped_genres.most_common())
        d["bad_files"] = [[p, r] for p, r in self.bad_files]
        return d

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.per_split.items())
        n_posters = self.n_movies - len(self.missing_posters)
        dropped = ", ".join(f"{g} x{n}" for g, n in self.dropped_genres.most_common()) or "none"
        lines = [
            f"{self.n_movies} movies ({splits})",
            f"posters: {n_posters} present, {len(self.missing_posters)} missing",
            f"plots: {len(self.empty_plots)} empty, {len(self.truncated_plots)} truncated"
            f" to {MAX_PLOT_CHARS} chars",
            f"genres: {len(self.movies_without_genres)} movies without a known genre;"
            f" dropped labels: {dropped}",
            f"duplicate ids: {len(self.duplicate_ids)}",
            f"skipped: {len(self.skipped_ids)} movies, {len(self.bad_files)} bad files",
        ]
        lines += [f"  bad file {p}: {r}" for p, r in self.bad_files[:10]]
        if len(self.bad_files) > 10:
            lines.append(f"  ... and {len(self.bad_files) - 10} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------- text
def _clean_text(text: Any, what: str = "plot") -> tuple[str, bool]:
    """(cleaned text, was it truncated). See :func:`clean_plot`."""
    if text is None:
        return "", False
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        if not isinstance(text, Sequence):
            raise InputError(f"{what}: expected text or a list of text, got {type(text).__name__}")
        parts = []
        for i, part in enumerate(text):
            if part is None:
                continue
            if isinstance(part, (bytes, bytearray)):
                part = bytes(part).decode("utf-8", errors="replace")
            if not isinstance(part, str):
                raise InputError(f"{what}[{i}]: expected text, got {type(part).__name__}")
            parts.append(part)
        text = " ".join(parts)
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    # Drop control characters (keep newline; tab becomes a space below) and replace lone
    # surrogates, which JSON "\ud800" escapes can produce and which cannot be encoded to UTF-8.
    text = _SURROGATE_RE.sub("\ufffd", _CONTROL_RE.sub("", text))
    text = _HSPACE_RE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES_RE.sub("\n\n", text).strip()
    if len(text) > MAX_PLOT_CHARS:
        return text[:MAX_PLOT_CHARS].rstrip(), True
    return text, False


def clean_plot(text: str | Sequence[str] | bytes | None) -> str:
    """Normalise a plot: lists joined with " ", bytes decoded as UTF-8 (bad bytes -> U+FFFD),
    control characters removed, runs of spaces collapsed (at most one blank line kept),
    None or whitespace -> "", and cut to ``MAX_PLOT_CHARS``."""
    return _clean_text(text)[0]


# --------------------------------------------------------------------------- movie json
def read_movie_json(path: str | Path) -> dict:
    """Parse and type-check one ``dataset/<id>.json``; InputError names the file and the problem.

    ``plot`` may be missing/null (empty plot), a string or a list of strings; ``genres`` must be
    a list of strings. Non-UTF-8 bytes are replaced (U+FFFD) rather than rejected, so one bad
    byte in a long plot does not cost the movie.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read movie file ({e.strerror or e})") from e
    if not raw.strip():
        raise InputError(f"{path}: empty file, expected a JSON object")
    try:
        data = json.loads(raw.decode("utf-8-sig", errors="replace"))
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, or an int over 4300 digits
        raise InputError(f"{path}: corrupt JSON ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    plot = data.get("plot")
    if not (plot is None or isinstance(plot, str)
            or (isinstance(plot, list) and all(isinstance(p, str) for p in plot))):
        raise InputError(f"{path}: field 'plot' must be a string or a list of strings")
    if "genres" not in data:
        raise InputError(f"{path}: missing field 'genres'")
    genres = data["genres"]
    if not (isinstance(genres, list) and all(isinstance(g, str) for g in genres)):
        raise InputError(f"{path}: field 'genres' must be a list of strings")
    title = data.get("title")
    if title is not None and not isinstance(title, (str, int, float)):
        raise InputError(f"{path}: field 'title' must be a string")
    year = data.get("year")
    if year is not None and (isinstance(year, bool) or not isinstance(year, (str, int, float))):
        raise InputError(f"{path}: field 'year' must be a number or a string")
    return data


def _parse_year(value: Any) -> int | None:
    """1999, 1999.0, "1999", "1999-2004" -> 1999; anything else -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() and 1800 <= value <= 2200 else None
    m = re.match(r"\s*(\d{4})", str(value))
    return int(m.group(1)) if m else None


def _normalise_id(value: Any) -> str | None:
    """split.json id -> file stem: ints are zero-padded to 7 digits, strings kept; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return f"{value:07d}"
    if isinstance(value, str) and _ID_RE.match(value.strip()):
        return value.strip()
    return None


# --------------------------------------------------------------------------- images
def _format_name(src: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or "<PIL image>"
    return "<uploaded image>"


def _to_rgb(img: Image.Image) -> Image.Image:
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
        if mode.startswith("I;16") or (mode == "I" and 255 < hi <= 65535 and arr.min() >= 0):
            arr = arr / 257.0                     # 16-bit full range -> 8-bit
        elif mode == "F" and arr.size and arr.min() >= 0 and hi <= 1.0:
            arr = arr * 255.0
        elif hi > 255 or (arr.size and arr.min() < 0):
            lo = arr.min()
            arr = (arr - lo) * (255.0 / max(hi - lo, 1e-12))
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    return img.convert("RGB")


def load_poster(src: str | Path | bytes | Image.Image, *, name: str | None = None) -> Image.Image:
    """Open, fully decode and validate a poster; returns an upright RGB image.

    ``src`` is a file path, the file's bytes (an upload) or a PIL image. Zero-byte, truncated
    or non-image data, decompression bombs (> ``MAX_IMAGE_PIXELS``) and absurd sizes (a side
    under ``MIN_IMAGE_SIDE``) raise InputError naming the file (``name`` overrides the label).
    """
    label = _format_name(src, name)
    if isinstance(src, Image.Image):
        img = src
    else:
        if isinstance(src, (str, Path)):
            try:
                with open(src, "rb") as f:
                    data = f.read(MAX_UPLOAD_BYTES + 1)
            except OSError as e:
                raise InputError(f"{label}: cannot read image ({e.strerror or e})") from e
        elif isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
        else:
            raise InputError(f"{label}: expected a path, bytes or a PIL image, "
                             f"got {type(src).__name__}")
        if not data:
            raise InputError(f"{label}: zero-byte file, not an image")
        if len(data) > MAX_UPLOAD_BYTES:
            raise InputError(f"{label}: file is over {MAX_UPLOAD_BYTES // 2**20} MiB")
        Image.init()        # registers every plugin, so that formats= can name WEBP and TIFF
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data), formats=ALLOWED_IMAGE_FORMATS)
        except Image.DecompressionBombError as e:
            raise InputError(f"{label}: image too large (decompression bomb?): {e}") from e
        except Exception as e:  # noqa: BLE001 - any decoder failure means "not an image"
            raise InputError(f"{label}: not a readable image (formats "
                             f"{', '.join(ALLOWED_IMAGE_FORMATS)})") from e

    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        raise InputError(f"{label}: image too large ({w}x{h} = {w * h:,} pixels > "
                         f"{MAX_IMAGE_PIXELS:,}; decompression bomb?)")
    if min(w, h) < MIN_IMAGE_SIDE or max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise InputError(f"{label}: absurd size {w}x{h} for a poster (each side must be "
                         f">= {MIN_IMAGE_SIDE} px, aspect ratio <= {MAX_ASPECT_RATIO:g})")
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
        return _to_rgb(img)
    except Exception as e:  # noqa: BLE001 - e.g. LAB or unusual TIFF modes
        raise InputError(f"{label}: cannot convert colour mode {img.mode} to RGB ({e})") from e


# --------------------------------------------------------------------------- dataset
def resolve_data_dir(path: str | Path | None = None) -> Path:
    """The MM-IMDb folder: ``path``, else ``$MMGENRE_DATA``; it must hold split.json and dataset/.

    A folder whose ``mmimdb/`` subfolder is the dataset (how the tarball extracts) is accepted.
    """
    if path is None or str(path) == "":
        env = os.environ.get(DATA_ENV_VAR, "").strip()
        if not env:
            raise InputError(f"No MM-IMDb folder given and {DATA_ENV_VAR} is not set. "
                             + HOW_TO_GET_DATA)
        path = env
    root = Path(path).expanduser()
    if not (root / "split.json").is_file() and (root / "mmimdb" / "split.json").is_file():
        root = root / "mmimdb"
    if not root.is_dir():
        raise InputError(f"{root}: MM-IMDb folder does not exist. " + HOW_TO_GET_DATA)
    missing = [n for n, ok in (("split.json", (root / "split.json").is_file()),
                               ("dataset/", (root / "dataset").is_dir())) if not ok]
    if missing:
        raise InputError(f"{root}: not an MM-IMDb folder, missing {' and '.join(missing)}. "
                         + HOW_TO_GET_DATA)
    return root.resolve()


def _read_splits(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError as e:
        raise InputError(f"{path}: split file not found. " + HOW_TO_GET_DATA) from e
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 / JSON, huge ints
        raise InputError(f"{path}: unreadable split file ({e})") from e
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected an object like "
                         '{"train": [ids], "dev": [ids], "test": [ids]}')
    for name, ids in data.items():
        if not isinstance(ids, list):
            raise InputError(f"{path}: split '{name}' must be a list of ids")
    return data


class MMIMDb:
    """A loaded MM-IMDb folder. ``movies`` keeps split.json order (train, dev, test)."""

    def __init__(self, root: Path, movies: dict[str, Movie], splits: dict[str, list[str]],
                 report: ValidationReport, poster_bytes: dict[str, int] | None = None):
        self.root = root
        self.movies = movies
        self.splits = splits
        self.report = report
        self._poster_bytes = poster_bytes or {}

    @classmethod
    def load(cls, root: str | Path | None = None, *, skip_bad: bool = False,
             check_images: bool = False, splits_file: str = "split.json") -> "MMIMDb":
        """Read split file + dataset/*.json (+ decode every poster when ``check_images``)."""
        root = resolve_data_dir(root)
        dataset = root / "dataset"
        report = ValidationReport()

        def bad(path: Path | str, reason: str, imdb_id: str | None) -> None:
            if not skip_bad:
                raise InputError(f"{path}: {reason}")
            report.bad_files.append((str(path), reason))
            if imdb_id is not None:
                report.skipped_ids.append(imdb_id)

        split_path = Path(splits_file) if Path(splits_file).is_absolute() else root / splits_file
        raw_splits = _read_splits(split_path)

        # One directory scan instead of thousands of stat calls; sizes feed the fingerprint.
        try:
            files = {e.name: e for e in os.scandir(dataset) if e.is_file()}
        except OSError as e:
            raise InputError(f"{dataset}: cannot list dataset folder ({e.strerror or e})") from e

        todo: list[tuple[str, str]] = []     # (split, id), first occurrence only
        seen: set[str] = set()
        for split_name, raw_ids in raw_splits.items():
            for pos, raw_id in enumerate(raw_ids):
                imdb_id = _normalise_id(raw_id)
                if imdb_id is None:
                    bad(split_path, f"split '{split_name}' entry {pos}: invalid id {raw_id!r}",
                        str(raw_id))
                    continue
                if imdb_id in seen:
                    if imdb_id not in report.duplicate_ids:
                        report.duplicate_ids.append(imdb_id)
                    continue
                seen.add(imdb_id)
                todo.append((split_name, imdb_id))

        movies: dict[str, Movie] = {}
        splits: dict[str, list[str]] = {name: [] for name in raw_splits}
        poster_bytes: dict[str, int] = {}
        bar = tqdm(todo, desc="reading MM-IMDb", unit="movie",
                   disable=None if len(todo) > PROGRESS_MIN_FILES else True)
        for split_name, imdb_id in bar:
            json_path = dataset / f"{imdb_id}.json"
            if json_path.name not in files:
                bad(json_path, f"listed in {split_path.name} ({split_name}) but the file "
                               "does not exist", imdb_id)
                continue
            try:
                data = read_movie_json(json_path)
                file_id = data.get("imdb_id")
                if file_id is not None and _digits(file_id) != _digits(imdb_id):
                    raise InputError(f"{json_path}: imdb_id {file_id!r} does not match the "
                                     f"file name")
                plot, truncated = _clean_text(data.get("plot"), f"{json_path}: plot")
                raw_title = data.get("title")
                title = _clean_text(raw_title if isinstance(raw_title, str) or raw_title is None
                                    else str(raw_title), f"{json_path}: title")[0]
            except InputError as e:
                bad(json_path, str(e).removeprefix(f"{json_path}: "), imdb_id)
                continue

            poster = next((files[n] for n in (imdb_id + s for s in POSTER_SUFFIXES)
                           if n in files), None)
            poster_path = dataset / poster.name if poster is not None else None
            if poster_path is not None and check_images:
                try:
                    load_poster(poster_path)
                except InputError as e:
                    bad(poster_path, str(e).removeprefix(f"{poster_path}: "), imdb_id)
                    continue

            kept, dropped = split_known(data["genres"])
            report.dropped_genres.update(dropped)
            if not kept:
                report.movies_without_genres.append(imdb_id)
            if not plot:
                report.empty_plots.append(imdb_id)
            if truncated:
                report.truncated_plots.append(imdb_id)
            if poster_path is None:
                report.missing_posters.append(imdb_id)
            else:
                poster_bytes[imdb_id] = poster.stat().st_size
            movies[imdb_id] = Movie(imdb_id=imdb_id, title=title,
                                    year=_parse_year(data.get("year")), plot=plot,
                                    genres=tuple(kept), poster_path=poster_path,
                                    split=split_name)
            splits[split_name].append(imdb_id)

        report.n_movies = len(movies)
        report.per_split = {name: len(ids) for name, ids in splits.items()}
        return cls(root, movies, splits, report, poster_bytes)

    # -- access
    def split(self, name: str) -> list[Movie]:
        if name not in self.splits:
            raise InputError(f"unknown split {name!r}; this dataset has {list(self.splits)}")
        return [self.movies[i] for i in self.splits[name]]

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        """(N, 23) float32 multi-hot matrix, rows in ``ids`` order."""
        missing = [i for i in ids if i not in self.movies]
        if missing:
            raise InputError(f"unknown imdb ids: {missing[:5]}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if not len(ids):
            return np.zeros((0, N_GENRES), dtype=np.float32)
        return np.stack([self.movies[i].labels for i in ids])

    def fingerprint(self) -> str:
        """16 hex chars identifying the content: ids, split membership, plots, genres and poster
        byte sizes (not mtimes or paths), so two clones of the same data agree."""
        h = hashlib.sha256()
        for m in self.movies.values():
            rec = [m.imdb_id, m.split, m.plot, list(m.genres), self._poster_bytes.get(m.imdb_id)]
            h.update(json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            h.update(b"\n")
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.movies)

    def __iter__(self) -> Iterator[Movie]:
        return iter(self.movies.values())

    def __getitem__(self, imdb_id: str) -> Movie:
        return self.movies[imdb_id]

    def __contains__(self, imdb_id: object) -> bool:
        return imdb_id in self.movies

    def __repr__(self) -> str:
        return f"MMIMDb(root={str(self.root)!r}, movies={len(self)}, splits={self.report.per_split})"


def _digits(value: Any) -> int | None:
    s = "".join(ch for ch in str(value) if ch.isdigit())
    return int(s) if s else None
