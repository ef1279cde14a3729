"""Precomputed explanations of a split, kept inside the checkpoint folder they explain.

    <checkpoint>/explanations/<split>/           the fast method ("<split>-deep/": --deep)
        manifest.json                            settings, checkpoint and data fingerprints, ids
        shard-00000.safetensors                  ``shard_size`` movies, in split order

A shard (``mmgenre.explain_store_format``) holds its movies' arrays (Grad-CAM downsampled, word
scores, cross-attention) as safetensors and the rest as JSON, written atomically, so a restarted
run (``mmgenre.explain_split``) keeps the shards already there. No pickle anywhere. A store is used only when its checkpoint fingerprint
(:func:`checkpoint_fingerprint`) and data fingerprint (``MMIMDb.fingerprint``) are those of the
checkpoint and data at hand; otherwise :func:`load_explanation` returns no explanation and a
note saying why, and the caller computes it live. The store holds plot words: it is data, never
committed (see .gitignore).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmgenre import atomic
from mmgenre.checkpoint import CONFIG_FILE, ENCODERS_FILE, WEIGHTS_FILE
from mmgenre.errors import InputError
from mmgenre.explain.explanation import Explanation
from mmgenre.explain.faithfulness import DELETION_FILL
from mmgenre.explain_store_format import (ShardError, attach_poster, decode, read_shard,  # noqa: F401
                                          write_shard)
from mmgenre.poster import load_poster

STORE_FOLDER = "explanations"
MANIFEST = "manifest.json"
FORMAT = "mmgenre-explanations"
VERSION = 1


def store_dir(checkpoint_dir: str | Path, split: str, text_method: str = "fast") -> Path:
    name = split if text_method == "fast" else f"{split}-{text_method}"
    return Path(checkpoint_dir) / STORE_FOLDER / name


def shard_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"shard-{index:05d}.safetensors"


@functools.lru_cache(maxsize=64)
def _fingerprint(folder: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE, ENCODERS_FILE):
        f = Path(folder) / name
        h.update(name.encode())
        if f.is_file():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def checkpoint_fingerprint(checkpoint_dir: str | Path) -> str:
    """16 hex chars of the sha256 of the files that rebuild the model (config, weights, tuned
    encoder part); computed once per version of those files (keyed by their size and mtime)."""
    folder = Path(checkpoint_dir)
    stamp = []
    for name in (CONFIG_FILE, WEIGHTS_FILE, ENCODERS_FILE):
        try:
            st = (folder / name).stat()
            stamp.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append((name, None, None))
    return _fingerprint(str(folder.resolve()), tuple(stamp))


# ------------------------------------------------------------------------------ manifest
def read_manifest(folder: Path) -> dict | None:
    """The store's manifest (shared: do not mutate); None when there is no store; ShardError
    when it is unreadable. Parsed once per version of the file."""
    f = Path(folder) / MANIFEST
    try:
        st = f.stat()
    except OSError:
        return None
    return _manifest(str(f), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _manifest(path: str, mtime_ns: int, size: int) -> dict:
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ShardError(f"{MANIFEST} is corrupt ({str(exc)[:120]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ShardError(f"{MANIFEST} is not a version-{VERSION} {FORMAT} manifest")
    ok = (isinstance(manifest.get("ids"), list) and all(isinstance(i, str) for i in manifest["ids"])
          and isinstance(manifest.get("shard_size"), int)
          and manifest["shard_size"] > 0 and isinstance(manifest.get("text_method"), str)
          and all(isinstance(manifest.get(k), dict) and isinstance(manifest[k].get("fingerprint"), str)
                  for k in ("checkpoint", "data")))
    if not ok:
        raise ShardError(f"{MANIFEST} lacks ids, shard_size, checkpoint, data or text_method")
    manifest["position"] = {imdb_id: i for i, imdb_id in enumerate(manifest["ids"])}
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic.write_json(Path(folder) / MANIFEST, {k: v for k, v in manifest.items() if k != "position"})


def shard_expectation(manifest: dict, index: int) -> dict:
    """The header fields a shard of ``manifest`` must carry."""
    size = manifest["shard_size"]
    return {"checkpoint": manifest["checkpoint"]["fingerprint"], "data": manifest["data"]["fingerprint"],
            "text_method": manifest["text_method"], "ids": manifest["ids"][index * size:(index + 1) * size]}


def stale_reason(manifest: dict, checkpoint_dir: Path, data_fingerprint: str | None) -> str | None:
    """Why ``manifest`` does not describe this checkpoint and data (None: it does)."""
    have = checkpoint_fingerprint(checkpoint_dir)
    if manifest["checkpoint"].get("fingerprint") != have:
        return (f"it was written by another checkpoint, or an earlier version of this one (fingerprint "
                f"{str(manifest['checkpoint'].get('fingerprint'))[:16]}; this checkpoint is {have})")
    fill = manifest.get("deletion_fill", "grey")  # stores before the blur deletion test had no such field
    if fill != DELETION_FILL:
        return (f"its deletion test filled the poster with {str(fill)[:20]!r}, this version uses "
                f"{DELETION_FILL!r} (run explain-split again)")
    if data_fingerprint is not None and manifest["data"].get("fingerprint") != data_fingerprint:
        return (f"it was written for other data (fingerprint {str(manifest['data'].get('fingerprint'))[:16]}, "
                f"this data is {data_fingerprint})")
    return None


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Lookup:
    """A stored explanation, or None and (when there is a store) a note saying why not.
    ``problem``: the note reports a store ignored (other checkpoint or data) or corrupt."""

    explanation: Explanation | None
    note: str | None = None
    problem: bool = False


def _name(checkpoint_dir: Path, folder: Path) -> str:
    """How notes name a store: relative to the checkpoints folder, never a server path."""
    return f"{Path(checkpoint_dir).name}/{STORE_FOLDER}/{folder.name}"


def _rerun(checkpoint_dir: Path, manifest: dict) -> str:
    deep = " --deep" if manifest.get("text_method") == "deep" else ""
    return (f"rerun `python -m mmgenre explain-split --checkpoint CHECKPOINTS/{Path(checkpoint_dir).name} --data DATA "
            f"--split {manifest.get('split')}{deep}` to refresh it")


def load_explanation(checkpoint_dir: str | Path, data_fingerprint: str | None, imdb_id: str, *,
                     split: str | None = None, text_method: str = "fast", genres=None, poster=None) -> Lookup:
    """The stored explanation of ``imdb_id`` by the checkpoint in ``checkpoint_dir``, computed
    with ``text_method``, on the data whose fingerprint is ``data_fingerprint``.

    ``split``: where to look (None: every store of that method). ``genres``: names it must
    explain. ``poster`` (a path or an image): attached, with the maps resized to it, so the
    result stands in for a live explanation; without it, maps stay at the store's size and
    ``poster`` is None. Never raises for a bad store: the note says what was wrong."""
    checkpoint_dir = Path(checkpoint_dir)
    folders = [store_dir(checkpoint_dir, split, text_method)] if split else [
        f for f, s, m in list_stores(checkpoint_dir) if m == text_method]
    notes: list[Lookup] = []
    for folder in folders:
        found = _lookup(checkpoint_dir, folder, data_fingerprint, imdb_id, genres, poster)
        if found.explanation is not None:
            return found
        if found.note:
            notes.append(found)
    return max(notes, key=lambda n: n.problem) if notes else Lookup(None)


def _lookup(checkpoint_dir: Path, folder: Path, data_fingerprint, imdb_id: str, genres, poster) -> Lookup:
    name = _name(checkpoint_dir, folder)
    try:
        manifest = read_manifest(folder)
    except ShardError as exc:
        return Lookup(None, f"The explanation store {name} is unreadable: {exc}; computed live instead.", True)
    if manifest is None:
        return Lookup(None)
    stale = stale_reason(manifest, checkpoint_dir, data_fingerprint)
    if stale:
        return Lookup(None, f"The explanation store {name} was ignored: {stale}; {_rerun(checkpoint_dir, manifest)}.",
                      True)
    pos = manifest["position"].get(imdb_id)
    if pos is None:
        return Lookup(None) if not manifest.get("complete") else Lookup(None, f"{imdb_id} is not in the store {name}.")
    index = pos // manifest["shard_size"]
    path = shard_path(folder, index)
    if not path.is_file():
        return Lookup(None, f"The store {name} does not hold this movie yet (its run has not reached it).")
    try:
        got = read_shard(path, shard_expectation(manifest, index), only=imdb_id)[imdb_id]
    except ShardError as exc:
        return Lookup(None, f"The explanation store {name} has a corrupt file: {exc}; computed live instead.", True)
    if isinstance(got, str):
        return Lookup(None, f"The store {name} holds no explanation of this movie: {got}")
    wanted = [] if genres is None else [genres] if isinstance(genres, str) else list(genres)
    missing = [g for g in wanted if g not in got.genres]
    if missing:
        return Lookup(None, f"The store {name} explains {', '.join(got.genres) or 'no genre'} for this movie, "
                            f"not {', '.join(missing)}.")
    if poster is not None:
        try:
            image = np.asarray(load_poster(poster).convert("RGB"), dtype=np.uint8)
        except InputError:
            return Lookup(None)  # the live explanation reports the poster's problem
        got = attach_poster(got, image)
    return Lookup(got)


def list_stores(checkpoint_dir: str | Path) -> list[tuple[Path, str, str]]:
    """(folder, split, text_method) of every store in ``checkpoint_dir`` (unreadable ones too:
    their split and method are guessed from the folder name)."""
    root = Path(checkpoint_dir) / STORE_FOLDER
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()):
        split, _, method = folder.name.partition("-")
        try:
            manifest = read_manifest(folder) or {}
            split, method = manifest.get("split", split), manifest.get("text_method", method or "fast")
        except ShardError:
            method = method or "fast"
        out.append((folder, str(split), str(method)))
    return out


@dataclass
class StoreContents:
    """Every readable explanation of one store (maps at the store's size), for dataset views."""

    model: str
    split: str
    text_method: str
    explanations: dict[str, Explanation] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)   # imdb_id -> why the run could not explain it
    planned: int = 0                                        # movies of the split the run was to explain
    notes: list[str] = field(default_factory=list)          # corrupt shards, an ignored store
    usable: bool = True


def read_store(checkpoint_dir: str | Path, folder: Path, data_fingerprint: str | None = None) -> StoreContents:
    """The contents of the store in ``folder``; an ignored or unreadable store comes back with
    ``usable`` False and its note; a corrupt shard is left out, with a note."""
    checkpoint_dir, folder = Path(checkpoint_dir), Path(folder)
    name = _name(checkpoint_dir, folder)
    out = StoreContents(model=checkpoint_dir.name, split=folder.name.partition("-")[0],
                        text_method=folder.name.partition("-")[2] or "fast")
    try:
        manifest = read_manifest(folder)
    except ShardError as exc:
        manifest, reason = None, f"the store {name} is unreadable: {exc}"
    else:
        reason = None if manifest else f"the store {name} has no manifest"
    if manifest is not None:
        out.split, out.text_method, out.planned = manifest.get("split"), manifest["text_method"], len(manifest["ids"])
        stale = stale_reason(manifest, checkpoint_dir, data_fingerprint)
        reason = f"the store {name} was ignored: {stale}; {_rerun(checkpoint_dir, manifest)}" if stale else None
    if reason:
        out.usable = False
        out.notes.append(reason)
        return out
    n_shards = -(-len(manifest["ids"]) // manifest["shard_size"])
    for index in range(n_shards):
        path = shard_path(folder, index)
        if not path.is_file():
            continue
        try:
            movies = read_shard(path, shard_expectation(manifest, index))
        except ShardError as exc:
            out.notes.append(f"{name}: {exc}; its movies are left out")
            continue
        for imdb_id, got in movies.items():
            if isinstance(got, str):
                out.errors[imdb_id] = got
            else:
                out.explanations[imdb_id] = got
    return out
