"""The file format of an explanation store (``mmgenre.explain_store``): one movie's explanation
as arrays + a JSON record, and shards of movies as one safetensors file each.

A shard holds its movies' arrays (Grad-CAM maps as float16 at most ``cam_side`` px on the longer
side, word scores as float32, cross-attention as float16) under ``<imdb_id>/<part>[/<genre>]``,
and everything else (words, probabilities, modality shares, faithfulness, timings, method) as
JSON in the file's metadata, with a header (fingerprints, method, ids) that ties it to its
store. One atomic write makes a whole shard visible at once. No pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_numpy_bytes

from mmgenre import atomic
from mmgenre.genres import GENRES
from mmgenre.explain.explanation import Explanation
from mmgenre.viz import resize_map

CAM_SIDE = 64
_RECORD_FIELDS = ("model", "genres", "probabilities", "predicted", "words", "ig_delta", "modality", "objects",
                  "faithfulness", "timings", "cut_short", "text_method", "text_steps")


# ------------------------------------------------------------------------------ one movie
def encode(exp: Explanation, cam_side: int = CAM_SIDE) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays keyed "<part>[/<genre>]", JSON record) of one explanation."""
    arrays: dict[str, np.ndarray] = {}
    for g, cam in exp.poster_cam.items():
        h, w = cam.shape
        if max(h, w) > cam_side:
            s = cam_side / max(h, w)
            cam = resize_map(cam, (max(1, round(h * s)), max(1, round(w * s))))
        arrays[f"cam/{g}"] = np.clip(cam, 0, 1).astype(np.float16)
    for g, scores in exp.token_scores.items():
        arrays[f"scores/{g}"] = np.asarray(scores, dtype=np.float32)
    record = {k: getattr(exp, k) for k in _RECORD_FIELDS}
    record["poster_size"] = None if exp.poster is None else [int(exp.poster.shape[1]), int(exp.poster.shape[0])]
    record["cams"], record["scores"] = list(exp.poster_cam), list(exp.token_scores)
    ca = exp.cross_attention
    if ca:
        arrays["t2i"] = np.asarray(ca["text_to_image"], dtype=np.float16)
        arrays["i2t"] = np.asarray(ca["image_to_text"], dtype=np.float16)
        record["cross_attention"] = {"words": list(ca["words"]), "word_index": [int(i) for i in ca["word_index"]],
                                     "grid": [int(n) for n in ca["grid"]]}
    return arrays, json.loads(json.dumps(record, default=_plain))


def _plain(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def decode(record: dict, arrays: dict[str, np.ndarray]) -> Explanation:
    """The :class:`Explanation` of a stored ``record``: maps at the store's size and no poster
    (:func:`attach_poster` adds it and resizes the maps back)."""
    _check(record)
    words = list(record["words"])
    cams = {g: arrays[f"cam/{g}"].astype(np.float32) for g in record["cams"]}
    scores = {g: arrays[f"scores/{g}"] for g in record["scores"]}
    if any(s.shape != (len(words),) for s in scores.values()):
        raise ValueError("word scores and words differ in length")
    ca = record.get("cross_attention")
    if ca:
        t2i, i2t = arrays["t2i"].astype(np.float32), arrays["i2t"].astype(np.float32)
        ca = {**ca, "grid": tuple(ca["grid"]), "text_to_image": t2i, "image_to_text": i2t,
              "text_to_image_mean": t2i.mean(axis=0), "image_to_text_mean": i2t.mean(axis=0)}
    fields = {k: record[k] for k in _RECORD_FIELDS}
    return Explanation(**fields, poster=None, poster_cam=cams, token_scores=scores, cross_attention=ca or None)


def _check(record: dict) -> None:
    """The types the pages rely on; ValueError otherwise (a hand-edited or foreign file)."""
    probs, known = record["probabilities"], set(GENRES)
    ok = (isinstance(probs, dict) and set(probs) <= known
          and all(isinstance(v, (int, float)) for v in probs.values())
          and all(isinstance(record[k], list) and all(isinstance(x, str) for x in record[k])
                  for k in ("genres", "predicted", "words", "cams", "scores"))
          and set(record["genres"]) <= known and set(record["cams"]) <= known and set(record["scores"]) <= known
          and all(isinstance(record[k], dict) for k in ("ig_delta", "modality", "faithfulness", "timings")))
    if not ok:
        raise ValueError("a movie record has fields of the wrong type")


# ------------------------------------------------------------------------------ shards
def write_shard(path: Path, header: dict, movies: dict[str, Explanation | str], cam_side: int = CAM_SIDE) -> None:
    """One shard, atomically: ``movies`` maps imdb_id -> explanation, or the error that stopped it."""
    arrays, records = {}, {}
    for imdb_id, exp in movies.items():
        if isinstance(exp, str):
            records[imdb_id] = {"error": exp}
            continue
        parts, records[imdb_id] = encode(exp, cam_side)
        arrays.update({f"{imdb_id}/{k}": v for k, v in parts.items()})
    meta = {"header": json.dumps(header), "movies": json.dumps(records)}
    atomic.write_bytes(path, save_numpy_bytes(arrays, metadata=meta))


class ShardError(ValueError):
    """A shard file that cannot be read back (truncated, edited, from another run)."""


def read_shard(path: Path, expect: dict | None = None, only: str | None = None) -> dict[str, Explanation | str]:
    """{imdb_id: Explanation (maps at store size) or error text} of a shard (``only``: that movie).

    ``expect``: header fields that must match (fingerprints, method, ids). Raises
    :class:`ShardError` naming what is wrong."""
    try:
        with safe_open(str(path), framework="np") as fh:
            meta = fh.metadata() or {}
            header, records = json.loads(meta["header"]), json.loads(meta["movies"])
            for key, want in (expect or {}).items():
                if header.get(key) != want:
                    raise ShardError(f"{path.name} has {key} {str(header.get(key))[:60]!r}, expected {str(want)[:60]!r}")
            out: dict[str, Explanation | str] = {}
            for imdb_id in [only] if only is not None else list(records):
                rec = records[imdb_id]
                if "error" in rec:
                    out[imdb_id] = str(rec["error"])
                    continue
                prefix = f"{imdb_id}/"
                keys = [k for k in fh.keys() if k.startswith(prefix)]
                out[imdb_id] = decode(rec, {k[len(prefix):]: fh.get_tensor(k) for k in keys})
            return out
    except ShardError:
        raise
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ShardError(f"{path.name} is corrupt ({type(exc).__name__}: {str(exc)[:120]})") from None


def attach_poster(exp: Explanation, poster: np.ndarray) -> Explanation:
    """``exp`` with ``poster`` (H, W, 3) uint8 attached and its maps resized to it."""
    exp.poster = poster
    exp.poster_cam = {g: np.clip(resize_map(cam, poster.shape[:2]), 0, 1) for g, cam in exp.poster_cam.items()}
    return exp
