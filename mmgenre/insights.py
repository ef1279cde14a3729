"""Dataset-level views of stored explanations (``mmgenre.explain_store``), per model and genre.

Every function takes ``{model: {imdb_id: Explanation}}`` (e.g. the ``explanations`` of
``read_store`` for each checkpoint) and aggregates over the genres each explanation explains
(a store explains the top-3 genres of each movie by default, so ``movies`` says how many
explanations a row averages):

* :func:`modality_by_genre`: how much each model relies on the poster vs the plot: the mean
  probability drop when either is removed, ``plot_reliance`` = |plot drop| / (|plot drop| +
  |poster drop|) averaged over movies, and the model's own shares (gate, modality weights);
* :func:`top_words`: the plot words that push each genre up, summed over the split, with the
  number of plots they occur in and push the genre up in;
* :func:`mean_cams`: the average Grad-CAM per genre on a common grid;
* :func:`faithfulness_rows` / :func:`faithfulness_summary`: deletion-vs-random gap and IG
  completeness delta per explanation, and their distribution per model.
"""
from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mmgenre.explain.explanation import Explanation
from mmgenre.viz import resize_map

Stores = Mapping[str, Mapping[str, Explanation]]
CAM_GRID = (48, 32)  # (H, W): posters are about 2:3
_STRIP = string.punctuation + "“”‘’«»…—–"


def normalise_word(word: str) -> str:
    """Lower case without surrounding punctuation ("Detective," -> "detective")."""
    return word.strip(_STRIP).lower()


def _genres(exp: Explanation) -> list[str]:
    return list(exp.genres)


def modality_by_genre(stores: Stores) -> pd.DataFrame:
    """One row per (model, genre): ``movies``, mean ``p``, ``drop_without_poster``,
    ``drop_without_plot``, ``plot_reliance`` (NaN where neither removal moves p) and, for models
    that have them, ``gate_text_share`` and ``weight_<modality>``."""
    rows = []
    for model, exps in stores.items():
        for exp in exps.values():
            mod = exp.modality or {}
            for g, a in (mod.get("ablation") or {}).items():
                poster, plot = float(a["p"]) - float(a["without_poster"]), float(a["p"]) - float(a["without_plot"])
                total = abs(poster) + abs(plot)
                row = {"model": model, "genre": g, "p": float(a["p"]), "drop_without_poster": poster,
                       "drop_without_plot": plot, "plot_reliance": abs(plot) / total if total > 0 else np.nan,
                       "gate_text_share": mod.get("gate_text_share")}
                weights = (mod.get("weights_per_genre") or {}).get(g) or mod.get("weights") or {}
                row.update({f"weight_{k}": float(v) for k, v in weights.items()})
                rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["model", "genre", "movies", "p", "drop_without_poster", "drop_without_plot",
                                     "plot_reliance", "gate_text_share"])
    df = pd.DataFrame(rows)
    df["gate_text_share"] = pd.to_numeric(df["gate_text_share"], errors="coerce")
    means = df.groupby(["model", "genre"], sort=False).mean(numeric_only=True)
    means.insert(0, "movies", df.groupby(["model", "genre"], sort=False).size())
    return means.reset_index()


def top_words(stores: Stores, min_movies: int = 1, per_genre: int | None = None) -> pd.DataFrame:
    """One row per (model, genre, word) whose plots ``min_movies`` or more explanations of that
    genre contain: ``movies`` (plots containing it), ``pushes_up`` (plots where its score, summed
    over its occurrences, is positive), ``sum_positive`` (the sum of those positive scores) and
    ``mean_score`` (its mean score over the plots containing it). Sorted by ``sum_positive``
    within each model and genre; ``per_genre`` keeps that many rows of each."""
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for model, exps in stores.items():
        for exp in exps.values():
            for g in _genres(exp):
                scores = exp.token_scores.get(g)
                if scores is None:
                    continue
                per_word: dict[str, float] = defaultdict(float)
                for word, score in zip(exp.words, np.asarray(scores, dtype=np.float64)):
                    key = normalise_word(word)
                    if key:
                        per_word[key] += float(score)
                for word, score in per_word.items():
                    acc[(model, g, word)].append(score)
    rows = [{"model": m, "genre": g, "word": w, "movies": len(s), "pushes_up": sum(v > 0 for v in s),
             "sum_positive": float(sum(v for v in s if v > 0)), "mean_score": float(np.mean(s))}
            for (m, g, w), s in acc.items() if len(s) >= min_movies]
    cols = ["model", "genre", "word", "movies", "pushes_up", "sum_positive", "mean_score"]
    df = pd.DataFrame(rows, columns=cols)
    df = df.sort_values(["model", "genre", "sum_positive", "word"], ascending=[True, True, False, True],
                        kind="stable").reset_index(drop=True)
    if per_genre is not None:
        df = df.groupby(["model", "genre"], sort=False).head(per_genre).reset_index(drop=True)
    return df


def mean_cams(stores: Stores, grid: tuple[int, int] = CAM_GRID) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """{(model, genre): (mean Grad-CAM resized to ``grid`` = (H, W), number of maps)}."""
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for model, exps in stores.items():
        for exp in exps.values():
            for g, cam in exp.poster_cam.items():
                key = (model, g)
                sums[key] = sums.get(key, 0) + resize_map(np.asarray(cam, dtype=np.float32), grid)
                counts[key] += 1
    return {k: (sums[k] / counts[k], counts[k]) for k in sums}


def cams_table(cams: Mapping[tuple[str, str], tuple[np.ndarray, int]]) -> pd.DataFrame:
    """The maps of :func:`mean_cams` as long rows (model, genre, movies, row, col, value), for CSV."""
    rows = []
    for (model, genre), (cam, n) in cams.items():
        r, c = np.indices(cam.shape)
        rows.append(pd.DataFrame({"model": model, "genre": genre, "movies": n, "row": r.ravel(),
                                  "col": c.ravel(), "value": cam.ravel().astype(np.float64)}))
    cols = ["model", "genre", "movies", "row", "col", "value"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def faithfulness_rows(stores: Stores) -> pd.DataFrame:
    """One row per (model, movie, genre): ``top_drop``, ``random_drop``, ``gap`` (top - random),
    ``beats_random`` (Grad-CAM deletion test; NaN without a CAM) and ``ig_abs``, ``ig_rel`` (IG
    completeness delta; NaN without word scores)."""
    rows = []
    for model, exps in stores.items():
        for imdb_id, exp in exps.items():
            faith = exp.faithfulness or {}
            deletion, ig = faith.get("deletion") or {}, faith.get("ig_completeness") or {}
            for g in _genres(exp):
                d, c = deletion.get(g), ig.get(g)
                if d is None and c is None:
                    continue
                rows.append({"model": model, "imdb_id": imdb_id, "genre": g,
                             "top_drop": d["top_drop"] if d else np.nan,
                             "random_drop": d["random_drop"] if d else np.nan,
                             "gap": d["top_drop"] - d["random_drop"] if d else np.nan,
                             "beats_random": float(bool(d["beats_random"])) if d else np.nan,
                             "ig_abs": c["abs"] if c else np.nan, "ig_rel": c["rel"] if c else np.nan})
    cols = ["model", "imdb_id", "genre", "top_drop", "random_drop", "gap", "beats_random", "ig_abs", "ig_rel"]
    return pd.DataFrame(rows, columns=cols)


def faithfulness_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: how many deletion tests and IG deltas, the share of tests where the map beats
    random regions, the median gap, the median relative IG delta and the share within 5%."""
    out = []
    for model, df in rows.groupby("model", sort=False):
        gap, rel = df["gap"].dropna(), df["ig_rel"].dropna()
        out.append({"model": model, "deletion_tests": len(gap),
                    "beats_random_share": float(df["beats_random"].dropna().mean()) if len(gap) else np.nan,
                    "median_gap": float(gap.median()) if len(gap) else np.nan,
                    "ig_deltas": len(rel), "median_ig_rel": float(rel.median()) if len(rel) else np.nan,
                    "ig_rel_within_5pct": float((rel <= 0.05).mean()) if len(rel) else np.nan})
    cols = ["model", "deletion_tests", "beats_random_share", "median_gap", "ig_deltas", "median_ig_rel",
            "ig_rel_within_5pct"]
    return pd.DataFrame(out, columns=cols)
