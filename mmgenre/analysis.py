"""Tables behind the dashboard: dataset statistics, error browsing and model comparison.

Everything here reads what the library already produced (an :class:`~mmgenre.data.MMIMDb`, the
``predictions.csv`` / ``metrics.json`` / ``config.json`` of checkpoint folders, a leaderboard)
and returns pandas frames, so the Streamlit pages only lay them out. Predicted genres always come
from :func:`mmgenre.metrics.binarize` with the checkpoint's own tuned thresholds; metrics and
tests come from :mod:`mmgenre.metrics`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from mmgenre import metrics as M
from mmgenre.checkpoint import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE
from mmgenre.data import MMIMDb, Movie
from mmgenre.errors import InputError
from mmgenre.genres import GENRE_INDEX, GENRES, N_GENRES, normalize_genre, to_multi_hot

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{g}" for g in GENRES)
ERROR_KINDS = ("false_positive", "false_negative")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


# ------------------------------------------------------------------------------ dataset
def split_counts(ds: MMIMDb) -> pd.DataFrame:
    """One row per split (then ``all``): movies, with poster, with plot, both, mean genres."""
    rows = []
    groups = [(name, ds.split(name)) for name in ds.splits] + [("all", list(ds))]
    for name, movies in groups:
        n = len(movies)
        rows.append({
            "split": name, "movies": n,
            "with_poster": sum(m.has_poster for m in movies),
            "with_plot": sum(m.has_plot for m in movies),
            "poster_and_plot": sum(m.has_poster and m.has_plot for m in movies),
            "mean_genres": float(np.mean([len(m.genres) for m in movies])) if n else float("nan"),
        })
    return pd.DataFrame(rows)


def genre_frequencies(ds: MMIMDb) -> pd.DataFrame:
    """Long table ``split, genre, movies, share`` (share of that split's movies carrying it)."""
    rows = []
    for name in ds.splits:
        movies = ds.split(name)
        counts = ds.labels([m.imdb_id for m in movies]).sum(axis=0) if movies else np.zeros(N_GENRES)
        for g, c in zip(GENRES, counts):
            rows.append({"split": name, "genre": g, "movies": int(c),
                         "share": float(c) / len(movies) if movies else 0.0})
    return pd.DataFrame(rows, columns=["split", "genre", "movies", "share"])


def cooccurrence(ds: MMIMDb, split: str | None = None) -> pd.DataFrame:
    """23 x 23 counts of movies carrying both genres (the diagonal is each genre's count)."""
    if split and split not in ds.splits:
        raise InputError(f"unknown split {split!r}; this dataset has {list(ds.splits)}")
    ids = list(ds.splits[split]) if split else list(ds.movies)
    y = ds.labels(ids).astype(np.int64)
    return pd.DataFrame(y.T @ y, index=list(GENRES), columns=list(GENRES))


def plot_lengths(ds: MMIMDb) -> pd.DataFrame:
    """``imdb_id, split, words, chars`` of every movie's cleaned plot (0 for an empty plot)."""
    return pd.DataFrame([{"imdb_id": m.imdb_id, "split": m.split, "words": len(m.plot.split()),
                          "chars": len(m.plot)} for m in ds],
                        columns=["imdb_id", "split", "words", "chars"])


def poster_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image header only (nothing is decoded); None if unreadable."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None  # a bomb's header (over 2x PIL's pixel limit) raises before any decoding


def poster_sizes(ds: MMIMDb) -> pd.DataFrame:
    """``imdb_id, split, width, height, kbytes`` of every poster present (headers only)."""
    rows = []
    for m in ds:
        if m.poster_path is None:
            continue
        size = poster_size(m.poster_path)
        if size is None:
            continue
        try:
            kbytes = m.poster_path.stat().st_size / 1024
        except OSError:
            kbytes = float("nan")
        rows.append({"imdb_id": m.imdb_id, "split": m.split, "width": size[0], "height": size[1],
                     "kbytes": kbytes})
    return pd.DataFrame(rows, columns=["imdb_id", "split", "width", "height", "kbytes"])


def missing_modalities(ds: MMIMDb) -> pd.DataFrame:
    """One row per split: movies with both modalities, poster only, plot only, no genre."""
    rows = []
    for name in ds.splits:
        movies = ds.split(name)
        rows.append({
            "split": name,
            "poster_and_plot": sum(m.has_poster and m.has_plot for m in movies),
            "poster_only": sum(m.has_poster and not m.has_plot for m in movies),
            "plot_only": sum(m.has_plot and not m.has_poster for m in movies),
            "no_genre": sum(not m.genres for m in movies),
        })
    return pd.DataFrame(rows)


def find_movies(ds: MMIMDb, *, split: str | None = None, genre: str | None = None,
                query: str | None = None, ids: Iterable[str] | None = None) -> list[Movie]:
    """Movies matching every given filter; ``query`` is a case-insensitive title substring."""
    canon = None
    if genre:
        canon = normalize_genre(genre)
        if canon not in GENRE_INDEX:
            raise InputError(f"unknown genre {genre!r}; expected one of {', '.join(GENRES)}")
    if split and split not in ds.splits:
        raise InputError(f"unknown split {split!r}; this dataset has {list(ds.splits)}")
    pool = [ds[i] for i in ids if i in ds] if ids is not None else (ds.split(split) if split else list(ds))
    needle = (query or "").strip().casefold()
    return [m for m in pool
            if (not split or m.split == split)
            and (canon is None or canon in m.genres)
            and (not needle or needle in m.title.casefold())]


def movie_label(m: Movie) -> str:
    """``Title (year) · id`` for pickers (plain text: the UI must not render it as markup)."""
    year = f" ({m.year})" if m.year else ""
    return f"{m.title or '(untitled)'}{year} · {m.imdb_id}"


# ------------------------------------------------------------------------------ checkpoints
def available_checkpoints(checkpoints: str | Path) -> list[str]:
    """Names of the sub-folders of ``checkpoints`` that hold a ``config.json``, in registry
    order (then any others alphabetically). Missing folder -> []. Folder names with characters
    other than letters, digits, ``_ . -`` are left out (they end up in UI labels and URLs)."""
    from mmgenre.models import list_models  # late: the registry imports torch

    root = Path(checkpoints)
    if not root.is_dir():
        return []
    found = {p.name for p in root.iterdir() if p.is_dir() and _SAFE_NAME.match(p.name)
             and (p / CONFIG_FILE).is_file()}
    order = list_models()
    return [m for m in order if m in found] + sorted(found - set(order))


def read_config(checkpoint: str | Path) -> dict:
    """The checkpoint's ``config.json`` (without loading weights)."""
    f = Path(checkpoint) / CONFIG_FILE
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{f}: checkpoint has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{f}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{f}: must hold a JSON object")
    return data


def training_protocols(checkpoints: str | Path, models: Sequence[str]) -> list[str]:
    """The protocols (``train.protocol`` in each config) under which ``models`` tuned their
    thresholds, distinct, in order of appearance; a config without one counts as "unknown"."""
    found: list[str] = []
    for m in models:
        train = read_config(Path(checkpoints) / m).get("train")
        protocol = train.get("protocol") if isinstance(train, dict) else None
        name = protocol if isinstance(protocol, str) else "unknown"
        if name not in found:
            found.append(name)
    return found


def read_thresholds(checkpoint: str | Path) -> np.ndarray:
    """(23,) tuned thresholds stored in the checkpoint's config."""
    thr = read_config(checkpoint).get("thresholds")
    try:
        arr = np.asarray(thr, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (N_GENRES,):
        raise InputError(f"{Path(checkpoint) / CONFIG_FILE}: 'thresholds' must be {N_GENRES} numbers")
    return arr


def read_metrics(checkpoint: str | Path) -> dict:
    """The checkpoint's ``metrics.json``; {} when it has none."""
    f = Path(checkpoint) / METRICS_FILE
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{f}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_predictions(checkpoint: str | Path) -> pd.DataFrame:
    """``predictions.csv`` of a checkpoint, checked: ids as strings, 23 probability columns."""
    f = Path(checkpoint) / PREDICTIONS_FILE
    if not f.is_file():
        raise InputError(f"{f}: checkpoint has no {PREDICTIONS_FILE}")
    try:
        frame = pd.read_csv(f, dtype={"imdb_id": str, "split": str, "true_genres": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{f}: unreadable CSV ({exc})") from None
    missing = [c for c in ("imdb_id", "split", "true_genres", *PROB_COLUMNS) if c not in frame.columns]
    if missing:
        raise InputError(f"{f}: missing column(s) {', '.join(missing[:5])}")
    frame["true_genres"] = frame["true_genres"].fillna("")
    return frame


def prediction_arrays(pred: pd.DataFrame, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, y_true (N, 23), probabilities (N, 23)) of one split of a predictions frame."""
    part = pred[pred["split"] == split]
    if part.empty:
        have = sorted(pred["split"].unique())
        raise InputError(f"predictions have no rows for split {split!r} (have {have})")
    y = np.stack([to_multi_hot(t.split("|") if t else []) for t in part["true_genres"]])
    probs = part[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    return part["imdb_id"].tolist(), y, np.clip(probs, 0.0, 1.0)


def predicted_sets(pred: pd.DataFrame, thresholds: np.ndarray) -> pd.Series:
    """Predicted genres of every row (a tuple in GENRES order), indexed like ``pred``."""
    probs = np.clip(pred[list(PROB_COLUMNS)].to_numpy(dtype=np.float64), 0.0, 1.0)
    if not len(probs):
        return pd.Series([], dtype=object)
    hot = M.binarize(probs, thresholds)
    return pd.Series([tuple(g for g, v in zip(GENRES, row) if v) for row in hot], index=pred.index)


def _genre(genre: str) -> str:
    canon = normalize_genre(genre) if isinstance(genre, str) else None
    if canon not in GENRE_INDEX:
        raise InputError(f"unknown genre {genre!r}; expected one of {', '.join(GENRES)}")
    return canon


def genre_errors(pred: pd.DataFrame, thresholds: np.ndarray, genre: str, kind: str,
                 split: str | None = None) -> pd.DataFrame:
    """False positives or negatives of one genre: ``imdb_id, split, probability, threshold,
    true_genres, predicted`` sorted by confidence (most confident mistakes first)."""
    if kind not in ERROR_KINDS:
        raise InputError(f"error kind must be one of {ERROR_KINDS}, got {kind!r}")
    g = _genre(genre)
    part = pred if split is None else pred[pred["split"] == split]
    cols = ["imdb_id", "split", "probability", "threshold", "true_genres", "predicted"]
    if part.empty:
        return pd.DataFrame(columns=cols)
    sets = predicted_sets(part, thresholds)
    is_true = part["true_genres"].map(lambda t: g in t.split("|"))
    is_pred = sets.map(lambda s: g in s)
    mask = (is_pred & ~is_true) if kind == "false_positive" else (~is_pred & is_true)
    out = pd.DataFrame({
        "imdb_id": part["imdb_id"], "split": part["split"], "probability": part[f"p_{g}"],
        "threshold": float(np.asarray(thresholds)[GENRE_INDEX[g]]),
        "true_genres": part["true_genres"].str.replace("|", ", ", regex=False),
        "predicted": sets.map(", ".join)})[mask]
    return out.sort_values("probability", ascending=(kind == "false_negative"), ignore_index=True)


def disagreements(pred_a: pd.DataFrame, thr_a: np.ndarray, pred_b: pd.DataFrame,
                  thr_b: np.ndarray, split: str | None = None,
                  genre: str | None = None) -> pd.DataFrame:
    """Movies where models A and B predict different genre sets (or differ on ``genre``):
    ``imdb_id, split, true_genres, only_a, only_b, a_right, b_right`` (``*_right``: how many of
    the disputed genres each model got right), most disputed first."""
    cols = ["imdb_id", "split", "true_genres", "only_a", "only_b", "a_right", "b_right"]
    a = pred_a if split is None else pred_a[pred_a["split"] == split]
    b = pred_b if split is None else pred_b[pred_b["split"] == split]
    a = a.assign(pred_set=predicted_sets(a, thr_a)) if len(a) else a.assign(pred_set=[])
    b = b.assign(pred_set=predicted_sets(b, thr_b)) if len(b) else b.assign(pred_set=[])
    merged = a[["imdb_id", "split", "true_genres", "pred_set"]].merge(
        b[["imdb_id", "split", "pred_set"]], on=["imdb_id", "split"], suffixes=("_a", "_b"))
    g = _genre(genre) if genre else None
    rows = []
    for r in merged.itertuples(index=False):
        sa, sb = set(r.pred_set_a), set(r.pred_set_b)
        only_a, only_b = sorted(sa - sb, key=GENRE_INDEX.get), sorted(sb - sa, key=GENRE_INDEX.get)
        if not (only_a or only_b) or (g and g not in only_a + only_b):
            continue
        true = set(r.true_genres.split("|")) if r.true_genres else set()
        rows.append({"imdb_id": r.imdb_id, "split": r.split,
                     "true_genres": r.true_genres.replace("|", ", "),
                     "only_a": ", ".join(only_a), "only_b": ", ".join(only_b),
                     "a_right": sum(x in true for x in only_a) + sum(x not in true for x in only_b),
                     "b_right": sum(x in true for x in only_b) + sum(x not in true for x in only_a),
                     "_n": len(only_a) + len(only_b)})
    out = pd.DataFrame(rows, columns=cols + ["_n"])
    return out.sort_values("_n", ascending=False, kind="stable", ignore_index=True)[cols]


def movie_predictions(frames: dict[str, tuple[pd.DataFrame, np.ndarray]],
                      imdb_id: str) -> pd.DataFrame:
    """One row per model holding ``imdb_id``: true, predicted, correct, missed, extra, top 3.

    ``frames`` maps a model name to (its predictions frame, its thresholds)."""
    rows = []
    for model, (pred, thr) in frames.items():
        part = pred[pred["imdb_id"] == imdb_id]
        if part.empty:
            continue
        row = part.iloc[[0]]
        predicted = predicted_sets(row, thr).iloc[0]
        true = tuple(t for t in row["true_genres"].iloc[0].split("|") if t)
        probs = row[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)[0]
        top = np.argsort(-probs)[:3]
        rows.append({"model": model, "split": row["split"].iloc[0],
                     "true": ", ".join(true), "predicted": ", ".join(predicted),
                     "correct": ", ".join(g for g in predicted if g in true),
                     "missed": ", ".join(g for g in true if g not in predicted),
                     "extra": ", ".join(g for g in predicted if g not in true),
                     "top_3": ", ".join(f"{GENRES[j]} {probs[j]:.2f}" for j in top)})
    return pd.DataFrame(rows, columns=["model", "split", "true", "predicted", "correct", "missed",
                                       "extra", "top_3"])


# ------------------------------------------------------------------------------ comparison
def per_genre_matrix(checkpoints: str | Path, models: Sequence[str], split: str = "test",
                     value: str = "f1") -> pd.DataFrame:
    """models x genres table of one per-genre figure (f1, precision, recall, roc_auc, ap)
    from each checkpoint's metrics.json; models without that table are left out."""
    rows = {}
    for model in models:
        table = read_metrics(Path(checkpoints) / model).get(split, {}).get("per_genre")
        if not table:
            continue
        by_genre = {r.get("genre"): r.get(value) for r in table if isinstance(r, dict)}
        rows[model] = [np.nan if by_genre.get(g) is None else float(by_genre[g]) for g in GENRES]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(GENRES))


def genre_curves(pred: pd.DataFrame, genre: str, split: str = "test") -> dict:
    """PR and ROC curves of one genre for one model (see :func:`mmgenre.metrics.curves`)."""
    _, y, probs = prediction_arrays(pred, split)
    return M.curves(y, probs, genre)


def paired_test(pred_a: pd.DataFrame, thr_a: np.ndarray, pred_b: pd.DataFrame, thr_b: np.ndarray,
                *, split: str = "test", key: str = "micro_f1", n_boot: int = 1000,
                seed: int = 0) -> dict:
    """:func:`mmgenre.metrics.paired_bootstrap` of A vs B on the movies both predicted."""
    ids_a, y_a, p_a = prediction_arrays(pred_a, split)
    ids_b, _, p_b = prediction_arrays(pred_b, split)
    pos_b = {i: k for k, i in enumerate(ids_b)}
    common = [k for k, i in enumerate(ids_a) if i in pos_b]
    if not common:
        raise InputError(f"the two models share no {split} movies; were they trained on the same data?")
    rows_b = [pos_b[ids_a[k]] for k in common]
    out = M.paired_bootstrap(y_a[common], p_a[common], p_b[rows_b], thr_a, thr_b, key=key,
                             n_boot=n_boot, seed=seed)
    out["n_movies"] = len(common)
    return out


def modality_gains(leaderboard: pd.DataFrame, metric: str = "micro_f1") -> pd.DataFrame:
    """For every multimodal model: its ``metric``, the best unimodal model using a subset of its
    modalities, and the gain (positive = fusion helps). Needs ``model`` and ``modalities``
    columns (``text+image``), as :func:`mmgenre.leaderboard.read_leaderboard` gives."""
    cols = ["model", "modalities", metric, "best_unimodal", "unimodal_value", "gain"]
    if leaderboard.empty or metric not in leaderboard.columns:
        return pd.DataFrame(columns=cols)
    board = leaderboard.dropna(subset=[metric])
    labels = dict(zip(board["model"], board["modalities"].astype(str)))
    mods = {m: set(label.split("+")) for m, label in labels.items()}
    value = dict(zip(board["model"], board[metric].astype(float)))
    rows = []
    for model, used in mods.items():
        if len(used) < 2:
            continue
        uni = [m for m, u in mods.items() if len(u) == 1 and u <= used]
        if not uni:
            continue
        best = max(uni, key=value.get)
        rows.append({"model": model, "modalities": labels[model], metric: value[model],
                     "best_unimodal": best, "unimodal_value": value[best],
                     "gain": value[model] - value[best]})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("gain", ascending=False, ignore_index=True)


def poster_thumbnail(path: str | Path, max_size: tuple[int, int] = (300, 450)) -> Image.Image:
    """A validated RGB thumbnail for galleries and examples; ``InputError`` for a bad poster.

    Goes through :func:`mmgenre.data.load_poster`, so only the allowed formats are decoded and
    bombs, truncated files and non-images are refused before any pixel reaches the UI.
    """
    from mmgenre.data import load_poster
    img = load_poster(path)
    img.thumbnail(max_size)
    return img
