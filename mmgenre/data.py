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
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES, split_known
# Records and text checks live in mmgenre.records; re-exported for `from mmgenre.data import Movie`.
from mmgenre.records import (MAX_PLOT_CHARS, Movie, ValidationReport, clean_plot,  # noqa: F401
                             clean_text, normalise_id, parse_year, read_movie_json)
# Poster loading lives in mmgenre.poster; re-exported so `from mmgenre.data import load_poster` works.
from mmgenre.poster import (ALLOWED_IMAGE_FORMATS, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS,  # noqa: F401
                            MAX_UPLOAD_BYTES, MIN_IMAGE_SIDE, load_poster)

POSTER_SUFFIXES = (".jpeg", ".jpg", ".png")   # official is .jpeg; the others are accepted too
DATA_ENV_VAR = "MMGENRE_DATA"
PROGRESS_MIN_FILES = 500

HOW_TO_GET_DATA = (
    "MM-IMDb (Arevalo et al. 2017) is not shipped with mmgenre. Download "
    "https://archive.org/download/mmimdb/mmimdb.tar.gz (8.1 GB; project page "
    "http://lisi1.unal.edu.co/mmimdb/), extract it with `tar -xzf mmimdb.tar.gz`, and pass the "
    f"folder that holds split.json and dataset/ as --data, or set {DATA_ENV_VAR}=<that folder>."
)

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
                imdb_id = normalise_id(raw_id)
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
                plot, truncated = clean_text(data.get("plot"), f"{json_path}: plot")
                raw_title = data.get("title")
                title = clean_text(raw_title if isinstance(raw_title, str) or raw_title is None
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
                                    year=parse_year(data.get("year")), plot=plot,
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
