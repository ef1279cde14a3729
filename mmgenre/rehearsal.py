"""A full-size MM-IMDb rehearsal folder, re-sampled from a small real subset (mmimdb-lite).

:func:`make_rehearsal` writes ``n_movies`` movies (default 25,959, split 15,552 / 2,608 / 7,799 as
in the official archive) in the official layout: ``split.json``, ``dataset/<id>.json`` and
``dataset/<id>.jpeg``. Each new movie copies one source movie of the same split (genres, year,
title with a copy number, poster) under a NEW 7-digit id that is neither a source id nor an id of
the official split (``split_official.json`` when the source has it). Its plot is the source plot
lengthened with real plot sentences of source movies sharing one of its genres, to a drawn
MM-IMDb-like length (log-normal words, see :data:`PLOT_WORDS`), in 1-3 paragraphs. Posters are
hard links where the filesystem allows (no extra disk), copies otherwise.

The figures it supports are about speed and memory at full size; its metrics mean nothing (copies
of one movie sit in one split, but they share a poster and plot sentences).

A killed run can be rerun: every file is written under a temporary name and renamed into place,
each movie is drawn from its own seeded generator, files already in place are kept, and
``split.json`` comes last, so a folder with it is complete. ``rehearsal.json`` records the
parameters; rerunning with other parameters on the same folder is refused.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from mmgenre.data import MMIMDb
from mmgenre.errors import InputError

OFFICIAL_SPLITS = {"train": 15552, "dev": 2608, "test": 7799}
PLOT_WORDS = (180, 0.6, 25, 1500)  # words: median, log-normal sigma, min, max (the whole plot)
ID_RANGE = (8_000_000, 10_000_000)  # above every official MM-IMDb id (and excluded from them anyway)
META_FILE = "rehearsal.json"
FORMAT = 1
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _scaled_splits(n_movies: int) -> tuple[int, int, int]:
    """The official split proportions for ``n_movies`` (exactly the official sizes at 25,959)."""
    total = sum(OFFICIAL_SPLITS.values())
    dev = round(n_movies * OFFICIAL_SPLITS["dev"] / total)
    test = round(n_movies * OFFICIAL_SPLITS["test"] / total)
    return n_movies - dev - test, dev, test


def _repository() -> Path:
    return Path(__file__).resolve().parents[1]


def _check_out_dir(source: Path, out: Path) -> None:
    repo = _repository()
    for inside, what in ((repo, "the repository"), (source, "the source folder")):
        if out == inside or inside in out.parents:
            raise InputError(f"{out}: the rehearsal folder must not be inside {what} ({inside})")
    if out in source.parents:
        raise InputError(f"{out}: the rehearsal folder must not contain the source folder {source}")


def _write_text(path: Path, text: str) -> None:
    # A rename is atomic; no fsync: a killed process loses nothing, only a power cut could.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _place_poster(src: Path, dst: Path) -> str:
    """Hard-link ``src`` at ``dst`` (copy when linking is impossible); "link" or "copy"."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        how = "link"
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, tmp)
        how = "copy"
    os.replace(tmp, dst)
    return how


def _new_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    ids: list[str] = []
    seen = set(taken)
    while len(ids) < n:
        for v in rng.integers(*ID_RANGE, size=2 * (n - len(ids)) + 16):
            s = f"{int(v):07d}"
            if s not in seen:
                seen.add(s)
                ids.append(s)
                if len(ids) == n:
                    break
    return ids


def _sentence_pool(source: MMIMDb):
    """Every plot sentence of the source, its word count, and the sentence indices per genre."""
    sentences: list[str] = []
    by_genre: dict[str, list[int]] = {}
    for m in source:
        for s in _SENTENCE_END.split(m.plot):
            if len(s.split()) >= 3:
                for g in m.genres:
                    by_genre.setdefault(g, []).append(len(sentences))
                sentences.append(s.strip())
    return sentences, np.array([len(s.split()) for s in sentences]), {g: np.array(v) for g, v in by_genre.items()}


def _long_plot(rng: np.random.Generator, movie, pool, plot_words) -> list[str]:
    sentences, words, by_genre = pool
    median, sigma, low, high = plot_words
    target = int(np.clip(rng.lognormal(np.log(median), sigma), low, high))
    picked = [movie.plot] if movie.plot else []
    n = len(movie.plot.split())
    genres = [g for g in movie.genres if g in by_genre] or list(by_genre)
    while n < target:
        i = int(rng.choice(by_genre[genres[int(rng.integers(len(genres)))]]))
        picked.append(sentences[i])
        n += int(words[i])
    cuts = sorted(rng.choice(np.arange(1, len(picked)), min(int(rng.integers(0, 3)), len(picked) - 1),
                             replace=False).tolist()) if len(picked) > 1 else []
    return [" ".join(picked[a:b]) for a, b in zip([0, *cuts], [*cuts, len(picked)])]


def make_rehearsal(source_dir: str | Path, out_dir: str | Path, *, n_movies: int = 25959,
                   splits: tuple[int, int, int] | None = None, seed: int = 0,
                   plot_words: tuple[float, float, int, int] = PLOT_WORDS, progress: bool = False) -> dict:
    """Write (or finish, or reuse) a rehearsal folder at ``out_dir``; returns its ``rehearsal.json``
    record plus ``"posters": {"link": n, "copy": n, "kept": n}`` for this call.

    ``splits`` = (train, dev, test) sizes summing to ``n_movies``; None: the official proportions.
    The folder must not be inside the repository or the source folder.
    """
    source_dir, out = Path(source_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    if n_movies < 3:
        raise InputError(f"n_movies must be at least 3, not {n_movies}")
    sizes = tuple(int(s) for s in (splits or _scaled_splits(n_movies)))
    if len(sizes) != 3 or sum(sizes) != n_movies or min(sizes) < 1:
        raise InputError(f"splits {sizes} must be three positive sizes summing to n_movies={n_movies}")
    _check_out_dir(source_dir, out)
    source = MMIMDb.load(source_dir)
    missing = [s for s in OFFICIAL_SPLITS if not source.splits.get(s)]
    if missing:
        raise InputError(f"{source_dir}: the source has no movies in split(s) {missing}")
    meta = {"format": FORMAT, "source": str(source_dir), "source_fingerprint": source.fingerprint(),
            "n_movies": n_movies, "splits": dict(zip(OFFICIAL_SPLITS, sizes)), "seed": seed,
            "plot_words": list(plot_words)}
    meta_path = out / META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        differ = [k for k in meta if old.get(k) != meta[k]]
        if differ:
            raise InputError(f"{out} holds a rehearsal with other parameters ({', '.join(differ)}); "
                             "remove it or choose another folder")
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: not empty and not a rehearsal folder; choose another folder")
    counts = {"link": 0, "copy": 0, "kept": 0}
    if (out / "split.json").is_file() and meta_path.is_file():
        return {**meta, "posters": counts}  # complete: reuse
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    _write_text(meta_path, json.dumps(meta, indent=1))

    taken = set(source.movies)
    official = source_dir / "split_official.json"
    if official.is_file():
        taken |= {f"{int(i):07d}" for ids in json.loads(official.read_text()).values() for i in ids}
    rng = np.random.default_rng(seed)
    ids = _new_ids(rng, n_movies, taken)
    plan: list[tuple[str, str]] = []   # (new id, source id), split by split
    new_splits: dict[str, list[str]] = {}
    start = 0
    for name, size in zip(OFFICIAL_SPLITS, sizes):
        pool_ids = source.splits[name]
        # Each source movie is used about equally often: whole permutations, then part of one.
        order = np.concatenate([rng.permutation(len(pool_ids)) for _ in range(-(-size // len(pool_ids)))])[:size]
        new_splits[name] = ids[start:start + size]
        plan += [(new, pool_ids[int(j)]) for new, j in zip(new_splits[name], order)]
        start += size
    sentences = _sentence_pool(source)
    copy_number: dict[str, int] = {}
    dataset = out / "dataset"
    for i, (new, src_id) in enumerate(plan):
        copy_number[src_id] = copy_number.get(src_id, 0) + 1
        m = source[src_id]
        if progress and i % 2000 == 0:
            print(f"rehearsal: {i}/{n_movies} movies", flush=True)
        if m.poster_path is not None:
            dst = dataset / f"{new}.jpeg"
            if dst.is_file():
                counts["kept"] += 1
            else:
                counts[_place_poster(m.poster_path, dst)] += 1
        target = dataset / f"{new}.json"
        if target.is_file():
            continue
        movie_rng = np.random.default_rng([seed, i])  # a rerun draws the same plot for movie i
        record = {"imdb_id": new, "title": f"{m.title} ({copy_number[src_id]})", "year": m.year,
                  "plot": _long_plot(movie_rng, m, sentences, plot_words), "genres": list(m.genres),
                  "sources": {"rehearsal_of": src_id}}
        _write_text(target, json.dumps(record, ensure_ascii=False, indent=1))
    _write_text(out / "split.json", json.dumps(new_splits, indent=1))  # last: marks the folder complete
    return {**meta, "posters": counts}


def source_ids(rehearsal_dir: str | Path, ids) -> dict[str, str]:
    """{new id: the source movie it copies} (``sources.rehearsal_of`` of each ``dataset/<id>.json``)."""
    root = Path(rehearsal_dir)
    out = {}
    for i in ids:
        rec = json.loads((root / "dataset" / f"{i}.json").read_text(encoding="utf-8"))
        src = (rec.get("sources") or {}).get("rehearsal_of")
        if src is None:
            raise InputError(f"{root}: movie {i} is not a rehearsal copy (no sources.rehearsal_of)")
        out[i] = str(src)
    return out


def rehearsal_checkpoints(rehearsal_dir: str | Path, checkpoints: str | Path, out_dir: str | Path) -> dict:
    """A checkpoints folder for the dashboard at rehearsal size: every checkpoint of ``checkpoints``
    (weights and config hard-linked, explanation stores left out) with a ``predictions.csv`` that
    holds a row for EVERY test movie of the rehearsal (and for each dev movie whose source has a dev
    row): the row of the source movie it copies (``sources.rehearsal_of``), under the new id.

    The probabilities are therefore the model's on the source movie's (shorter) plot, not on the
    lengthened one: right for timing pages and memory, where only the number of rows counts, and
    not a measurement of anything else. Returns ``{"models": [...], "test_rows": n, "dev_rows": n}``
    (rows per checkpoint).
    """
    import csv

    from mmgenre.checkpoint import CONFIG_FILE, PREDICTIONS_FILE

    rehearsal_dir, src_root, out = (Path(p).expanduser().resolve() for p in (rehearsal_dir, checkpoints, out_dir))
    if not (rehearsal_dir / META_FILE).is_file() or not (rehearsal_dir / "split.json").is_file():
        raise InputError(f"{rehearsal_dir}: not a complete rehearsal folder (no {META_FILE} / split.json)")
    splits = json.loads((rehearsal_dir / "split.json").read_text(encoding="utf-8"))
    wanted = [i for name in ("dev", "test") for i in splits.get(name, [])]
    source_of = source_ids(rehearsal_dir, wanted)
    models = sorted(p.name for p in src_root.iterdir() if (p / CONFIG_FILE).is_file() and (p / PREDICTIONS_FILE).is_file())
    if not models:
        raise InputError(f"{src_root}: no checkpoint with {CONFIG_FILE} and {PREDICTIONS_FILE}")
    kept = 0
    for name in models:
        src, dst = src_root / name, out / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f.name != PREDICTIONS_FILE and not (dst / f.name).exists():
                _place_poster(f, dst / f.name)  # any file: hard link, else copy
        with open(src / PREDICTIONS_FILE, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            by_id = {r[0]: r for r in reader}
        test = set(splits.get("test", []))
        missing = sorted({source_of[i] for i in test if source_of[i] not in by_id})
        if missing:
            raise InputError(f"{src / PREDICTIONS_FILE}: no prediction for source movie(s) {missing[:5]} "
                             f"({len(missing)} in all): the checkpoints were not trained on {rehearsal_dir}'s source")
        tmp = dst / f".{PREDICTIONS_FILE}.{os.getpid()}.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            kept = 0
            for i in wanted:
                if source_of[i] in by_id:
                    row = list(by_id[source_of[i]])
                    row[0] = i
                    writer.writerow(row)
                    kept += 1
        os.replace(tmp, dst / PREDICTIONS_FILE)
    for extra in ("leaderboard.csv",):
        if (src_root / extra).is_file() and not (out / extra).exists():
            _place_poster(src_root / extra, out / extra)
    n_test = len(splits.get("test", []))
    return {"models": models, "test_rows": n_test, "dev_rows": kept - n_test}
