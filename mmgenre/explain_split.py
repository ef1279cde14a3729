"""Explain every movie of a split once and keep the results (``python -m mmgenre explain-split``).

    explain_split("checkpoints/gmu", "../shared/mmimdb-lite", "test")   # -> summary dict

The movies go, in split order, into shards of ``shard_size`` (``mmgenre.explain_store``); each
shard is written atomically when its last movie is explained, so a killed run loses at most the
shards in progress, and a restarted one skips every shard already written (and valid). A store
left by another checkpoint, other data or other settings is replaced, with a note. With
``workers`` > 1 the shards are shared among that many processes, each with its share of the
torch threads; a movie the model cannot explain (e.g. no poster for a poster-only model) is
stored with the reason instead.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mmgenre.checkpoint import load_checkpoint
from mmgenre.data import MMIMDb, resolve_data_dir
from mmgenre.errors import InputError
from mmgenre.explain_store import (FORMAT, VERSION, ShardError, checkpoint_fingerprint, read_manifest, read_shard,
                                   shard_expectation, shard_path, store_dir, write_manifest, write_shard)
from mmgenre.explain.faithfulness import DELETION_FILL
from mmgenre.explain.text_attr import TEXT_METHODS
from mmgenre.genres import GENRES

GENRE_MODES = ("top", "predicted")
_SETTINGS = ("split", "text_method", "genres", "top", "ig_steps", "shard_size", "cam_side", "deletion_fill")
_worker: dict = {}  # the predictor of this process (set by _init)


def _init(checkpoint: str, threads: int | None) -> None:
    import torch
    from mmgenre.predict import Predictor
    if threads:
        torch.set_num_threads(threads)
    _worker["predictor"] = Predictor.from_checkpoint(checkpoint)


def _explain_movie(predictor, poster, plot: str, settings: dict):
    """One movie's explanation for the genres ``settings`` asks for."""
    from mmgenre.explain import explain_prediction
    from mmgenre.inputs import prepare_inputs
    inputs = prepare_inputs(poster, plot)
    genres = None
    if settings["genres"] == "top":
        predictor.check_modalities(inputs)
        probs = predictor.probabilities(inputs)
        genres = [GENRES[i] for i in np.argsort(-probs)[: settings["top"]]]
    return explain_prediction(predictor, inputs, genres=genres, ig_steps=settings["ig_steps"],
                              text_method=settings["text_method"])


def _run_shard(path: str, header: dict, movies: list[tuple[str, str | None, str]], settings: dict,
               tick=None) -> dict:
    """Explain ``movies`` [(imdb_id, poster path, plot)] and write them as the shard ``path``."""
    t0, out = time.perf_counter(), {}
    for imdb_id, poster, plot in movies:
        try:
            out[imdb_id] = _explain_movie(_worker["predictor"], poster, plot, settings)
        except InputError as exc:
            out[imdb_id] = str(exc)
        if tick is not None:
            tick()
    write_shard(Path(path), {**header, "seconds": round(time.perf_counter() - t0, 3)}, out, settings["cam_side"])
    return {"n": len(movies), "errors": sum(isinstance(v, str) for v in out.values())}


def _plan(ckpt_dir: Path, ds: MMIMDb, settings: dict, log) -> tuple[Path, dict, list[int]]:
    """The store folder, its manifest (written) and the shard indices still to do."""
    folder = store_dir(ckpt_dir, settings["split"], settings["text_method"])
    ids = list(ds.splits[settings["split"]])
    manifest = {"format": FORMAT, "version": VERSION, **settings,
                "checkpoint": {"model": load_checkpoint(ckpt_dir).model, "folder": ckpt_dir.name,
                               "fingerprint": checkpoint_fingerprint(ckpt_dir)},
                "data": {"fingerprint": ds.fingerprint(), "folder": Path(ds.root).name},
                "ids": ids, "complete": False,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        old = read_manifest(folder)
    except ShardError as exc:
        old = None
        log(f"note: {folder.name}: {exc}; starting the store again")
    same = old is not None and all(old.get(k) == manifest[k] for k in (*_SETTINGS, "ids")) and all(
        old[part].get("fingerprint") == manifest[part]["fingerprint"] for part in ("checkpoint", "data"))
    if old is not None and not same:
        log(f"note: the store {ckpt_dir.name}/{folder.parent.name}/{folder.name} was written by another checkpoint, "
            "other data or other settings: replacing it")
    if not same:
        for f in folder.glob("shard-*.safetensors"):
            f.unlink()
    else:
        manifest["created"] = old.get("created", manifest["created"])
    write_manifest(folder, manifest)
    todo = []
    for index in range(-(-len(ids) // settings["shard_size"])):
        path = shard_path(folder, index)
        if path.is_file():
            try:
                read_shard(path, shard_expectation(manifest, index))
                continue
            except ShardError as exc:
                log(f"note: {exc}; explaining its movies again")
        todo.append(index)
    return folder, manifest, todo


def explain_split(checkpoint: str | Path, data: str | Path | None, split: str = "test", *, genres: str = "top",
                  top: int = 3, text_method: str = "fast", ig_steps: int = 32, workers: int = 1,
                  shard_size: int = 16, cam_side: int = 64, limit: int | None = None, progress: bool | None = None,
                  log=None) -> dict:
    """Write (or complete) the store of ``split`` in ``checkpoint``; returns a summary.

    ``genres``: "top" (the ``top`` most probable genres of each movie) or "predicted" (the
    predicted genres, else the 3 most probable). ``limit``: stop after the shards holding the
    first ``limit`` movies (a later run continues). ``progress``: tqdm bar (None: on a terminal).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if genres not in GENRE_MODES:
        raise InputError(f"--genres must be one of {', '.join(GENRE_MODES)}, got {str(genres)[:40]!r}")
    if text_method not in TEXT_METHODS:
        raise InputError(f"text_method must be one of {', '.join(TEXT_METHODS)}, got {str(text_method)[:40]!r}")
    for name, value in (("top", top), ("ig_steps", ig_steps), ("workers", workers), ("shard_size", shard_size),
                        ("cam_side", cam_side)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "ig_steps" else 1):
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    ckpt_dir = Path(checkpoint)
    load_checkpoint(ckpt_dir)  # a clear error before the data is read
    ds = MMIMDb.load(resolve_data_dir(data), skip_bad=True)
    ds.split(split)  # InputError naming the splits there are
    settings = {"split": split, "text_method": text_method, "genres": genres, "top": top, "ig_steps": ig_steps,
                "shard_size": shard_size, "cam_side": cam_side, "deletion_fill": DELETION_FILL}
    t0 = time.perf_counter()
    folder, manifest, todo = _plan(ckpt_dir, ds, settings, log)
    ids = manifest["ids"]
    all_todo = todo
    if limit is not None:
        todo = [i for i in todo if i * shard_size < limit]
    header = {k: manifest[k] for k in ("text_method", "split")}
    header.update(checkpoint=manifest["checkpoint"]["fingerprint"], data=manifest["data"]["fingerprint"])
    tasks = []
    for index in todo:
        chunk = ids[index * shard_size:(index + 1) * shard_size]
        movies = [(i, str(ds[i].poster_path) if ds[i].poster_path else None, ds[i].plot) for i in chunk]
        tasks.append((str(shard_path(folder, index)), {**header, "index": index, "ids": chunk}, movies, settings))
    n_todo = sum(len(t[2]) for t in tasks)
    already = len(ids) - sum(len(ids[i * shard_size:(i + 1) * shard_size]) for i in all_todo)
    bar = tqdm(total=n_todo, desc=f"explaining {split} ({ckpt_dir.name})", unit="movie",
               disable=None if progress is None else not progress)
    errors = 0
    workers = min(workers, max(1, len(tasks)))
    try:
        if workers == 1:
            if tasks:
                _init(str(ckpt_dir), None)
            for task in tasks:
                errors += _run_shard(*task, tick=lambda: bar.update(1))["errors"]
        else:
            import torch
            threads = max(1, torch.get_num_threads() // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init,
                                     initargs=(str(ckpt_dir), threads)) as pool:
                futures = [pool.submit(_run_shard, *task) for task in tasks]
                try:
                    for fut in as_completed(futures):
                        done = fut.result()
                        errors += done["errors"]
                        bar.update(done["n"])
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    written = list(folder.glob("shard-*.safetensors"))
    n_shards = -(-len(ids) // shard_size)
    complete = len(written) == n_shards
    seconds = time.perf_counter() - t0
    manifest.update(complete=complete, last_run={"seconds": round(seconds, 1), "movies": n_todo, "workers": workers})
    write_manifest(folder, manifest)
    return {"store": str(folder), "split": split, "movies": len(ids), "explained_now": n_todo,
            "already_stored": already, "could_not_explain_now": errors,
            "shards": f"{len(written)}/{n_shards}", "complete": complete, "text_method": text_method,
            "workers": workers, "seconds": round(seconds, 1),
            "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file())}
