"""A full-size feature cache for a rehearsal folder, copied from a smaller rehearsal's real cache.

Extracting MPNet features of 25,959 long plots takes hours on 2 CPU cores, and extraction speed
is per item (measured on a smaller rehearsal). What grows with the dataset after that -- training
every head, its memory, the predictions -- needs a cache of the full size, not new features.
:func:`copy_rehearsal_features` writes one: each movie of the big rehearsal gets the cached rows
of a movie of the small rehearsal that copies the SAME mmimdb-lite movie (``sources.rehearsal_of``;
so the same poster and genres and a lengthened plot of the same movie), else of one of the same
split with the same poster / plot presence. The cache has the big folder's fingerprint, so
``python -m train`` reads it as its own; its meta.json says where its rows came from.

The resulting figures are about time and memory; the heads' metrics on it mean nothing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmgenre import atomic
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.features import cache_dir, load_features
from mmgenre.lazy_rows import LazyRows
from mmgenre.rehearsal import source_ids

CHUNK = 1024  # rows copied at a time: memory stays at one chunk of the largest array


def _sources(ds: MMIMDb) -> dict[str, str]:
    return source_ids(ds.root, [m.imdb_id for m in ds])


def _mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir()) / 2**20


def _split_of(ds: MMIMDb) -> dict[str, str]:
    return {i: name for name, ids in ds.splits.items() for i in ids}


def donor_rows(big: MMIMDb, small: MMIMDb, small_ids: list[str]) -> np.ndarray:
    """For each movie of ``big`` (its order), the row of ``small_ids`` (a cache's row order) it copies."""
    row_of = {i: r for r, i in enumerate(small_ids)}
    small_src, small_split = _sources(small), _split_of(small)
    by_source: dict[str, list[int]] = {}
    by_kind: dict[tuple, list[int]] = {}
    for i in small_ids:
        m = small[i]
        by_source.setdefault(small_src[i], []).append(row_of[i])
        by_kind.setdefault((small_split.get(i), m.has_poster, m.has_plot), []).append(row_of[i])
        by_kind.setdefault((None, m.has_poster, m.has_plot), []).append(row_of[i])
    big_src, big_split = _sources(big), _split_of(big)
    used: dict[str, int] = {}
    rows = []
    for n, m in enumerate(big):
        src = big_src[m.imdb_id]
        if src in by_source:
            pool = by_source[src]
            k = used[src] = used.get(src, -1) + 1
        else:
            pool = (by_kind.get((big_split.get(m.imdb_id), m.has_poster, m.has_plot))
                    or by_kind.get((None, m.has_poster, m.has_plot)))
            if not pool:
                raise InputError(f"{small.root}: no movie with poster={m.has_poster}, plot={m.has_plot} "
                                 f"to lend its features to {m.imdb_id}")
            k = n
        rows.append(pool[k % len(pool)])
    return np.array(rows, dtype=np.int64)


def copy_rehearsal_features(big_dir: str | Path, small_dir: str | Path, small_cache_root: str | Path,
                            cache_root: str | Path, encoders: dict[str, str], progress: bool = False,
                            precision: str = "fp32") -> dict:
    """Write ``cache_root``'s cache of every ``{kind: encoder}`` for the rehearsal at ``big_dir`` from
    the complete caches of the rehearsal at ``small_dir`` (in ``small_cache_root``), both of that
    extraction ``precision``. A cache already complete is kept. Returns ``{kind: {"path", "rows",
    "mib", "copied"}}``."""
    big, small = MMIMDb.load(big_dir), MMIMDb.load(small_dir)
    mapping = None
    report = {}
    for kind, encoder in encoders.items():
        src = cache_dir(small_cache_root, kind, encoder, small.fingerprint(), precision)
        if not (src / "meta.json").is_file():
            raise InputError(f"{src}: no complete {kind}:{encoder} cache of {small_dir} to copy from")
        out = cache_dir(cache_root, kind, encoder, big.fingerprint(), precision)
        if (out / "meta.json").is_file():
            report[kind] = {"path": str(out), "rows": len(big), "copied": False, "mib": _mib(out)}
            continue
        fs = load_features(src)
        if mapping is None or mapping[0] != fs.ids:
            mapping = (fs.ids, donor_rows(big, small, fs.ids))
        rows = mapping[1]
        out.mkdir(parents=True, exist_ok=True)
        for name in ("pooled", "present", "seq", "seq_mask"):
            arr = getattr(fs, name)
            if arr is None:
                continue
            with atomic.atomic_path(out / f"{name}.npy") as tmp:
                dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=arr.dtype, shape=(len(rows), *arr.shape[1:]))
                for start in range(0, len(rows), CHUNK):
                    dst[start:start + CHUNK] = LazyRows(arr, rows[start:start + CHUNK])[:]
                dst.flush()
                del dst
            if progress:
                print(f"rehearsal features: {kind} {name}.npy written", flush=True)
        atomic.write_json(out / "ids.json", [m.imdb_id for m in big])
        meta = dict(fs.meta)
        meta.pop("path", None)
        meta.update(fingerprint=big.fingerprint(), n=len(rows), n_present=int(np.asarray(fs.present)[rows].sum()),
                    bad_files=[], rehearsal_copy_of={"cache": str(src), "dataset": str(Path(small_dir).resolve())})
        atomic.write_json(out / "meta.json", meta)  # last: marks the cache complete
        report[kind] = {"path": str(out), "rows": len(rows), "copied": True, "mib": _mib(out)}
    return report
