"""One movie's record as read from MM-IMDb: ``Movie``, the checks on its JSON and text, and the
``ValidationReport`` of a whole folder (``mmgenre.data.MMIMDb`` reads the folder).

Every problem with a file is raised as :class:`~mmgenre.errors.InputError` naming the file.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmgenre.errors import InputError
from mmgenre.genres import to_multi_hot

MAX_PLOT_CHARS = 20_000          # longer plots are truncated (and recorded), not rejected
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
def clean_text(text: Any, what: str = "plot") -> tuple[str, bool]:
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
    return clean_text(text)[0]


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


def parse_year(value: Any) -> int | None:
    """1999, 1999.0, "1999", "1999-2004" -> 1999; anything else -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() and 1800 <= value <= 2200 else None
    m = re.match(r"\s*(\d{4})", str(value))
    return int(m.group(1)) if m else None


def normalise_id(value: Any) -> str | None:
    """split.json id -> file stem: ints are zero-padded to 7 digits, strings kept; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return f"{value:07d}"
    if isinstance(value, str) and _ID_RE.match(value.strip()):
        return value.strip()
    return None
