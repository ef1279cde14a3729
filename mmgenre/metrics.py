"""Multi-label evaluation for the 23 MM-IMDb genres: point metrics, per-genre tables,
threshold tuning, curves and bootstrap confidence intervals.

Accuracy, Hamming, precision / recall / F1, the per-genre table and the curves come straight
from scikit-learn. The bootstrap recomputes the same metrics for many resamples at once with
numpy (:mod:`mmgenre.resampling`); the point ROC-AUC / mAP reuse that path with every weight 1
(sklearn's per-call validation is too slow for 23 genres x 4 averages). Tests check both paths
equal scikit-learn.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from mmgenre.errors import InputError
from mmgenre.genres import GENRE_INDEX, GENRES, N_GENRES, normalize_genre
from mmgenre.resampling import multiplicities, rank_metrics, resampled_metrics

METRIC_KEYS: tuple[str, ...] = (
    "accuracy", "hamming_accuracy",
    "precision_micro", "precision_macro", "precision_weighted", "precision_samples",
    "recall_micro", "recall_macro", "recall_weighted", "recall_samples",
    "micro_f1", "macro_f1", "weighted_f1", "samples_f1",
    "roc_auc_macro", "roc_auc_micro", "map_macro", "map_micro",
)
LEADERBOARD_KEYS: tuple[str, ...] = (
    "accuracy", "hamming_accuracy", "precision_micro", "recall_micro", "micro_f1", "macro_f1",
    "weighted_f1", "samples_f1", "roc_auc_macro", "map_macro",
)
DEFAULT_GRID = np.round(np.arange(0.02, 0.96, 0.02), 2)

_AVERAGES = ("micro", "macro", "weighted", "samples")


# ----------------------------------------------------------------------------- validation
def _matrix(values, name: str) -> np.ndarray:
    """A non-empty (N, 23) float64 array, or InputError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not a numeric array ({exc})") from exc
    if arr.ndim != 2 or arr.shape[1] != N_GENRES:
        raise InputError(f"{name}: expected shape (N, {N_GENRES}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: no rows (N == 0); nothing to evaluate")
    return arr


def _check_prob(y_prob, name: str = "y_prob") -> np.ndarray:
    arr = _matrix(y_prob, name)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: contains NaN or infinite values")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise InputError(f"{name}: probabilities must lie in [0, 1], got range "
                         f"[{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def _check_true(y_true, n_rows: int | None = None, prob_name: str = "y_prob") -> np.ndarray:
    arr = _matrix(y_true, "y_true")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise InputError(f"y_true has {arr.shape[0]} rows but {prob_name} has {n_rows}")
    if not np.all((arr == 0) | (arr == 1)):
        raise InputError("y_true: must be a 0/1 multi-hot matrix (found other values or NaN)")
    return arr.astype(np.int64)


def _check_thresholds(thresholds, name: str = "thresholds") -> np.ndarray:
    """Scalar or (23,) thresholds -> float array broadcastable against (N, 23)."""
    try:
        thr = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not numeric ({exc})") from exc
    if thr.ndim not in (0, 1) or (thr.ndim == 1 and thr.shape[0] != N_GENRES):
        raise InputError(f"{name}: expected a scalar or shape ({N_GENRES},), got {thr.shape}")
    if not np.all(np.isfinite(thr)) or thr.min() < 0.0 or thr.max() > 1.0:
        raise InputError(f"{name}: thresholds must be finite and lie in [0, 1]")
    return thr


def _check_pair(y_true, y_prob, prob_name: str = "y_prob") -> tuple[np.ndarray, np.ndarray]:
    prob = _check_prob(y_prob, prob_name)
    return _check_true(y_true, prob.shape[0], prob_name), prob


# ----------------------------------------------------------------------------- point metrics
def binarize(y_prob: np.ndarray, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """(N, 23) int matrix: 1 where ``y_prob >= threshold`` (scalar or one per genre)."""
    prob = _check_prob(y_prob)
    return (prob >= _check_thresholds(thresholds)).astype(np.int64)


def _scored_columns(y_true: np.ndarray) -> np.ndarray:
    """Indices of genres with at least one positive and one negative (AUC/AP defined)."""
    pos = y_true.sum(axis=0)
    return np.flatnonzero((pos > 0) & (pos < y_true.shape[0]))


def compute_metrics(y_true, y_prob, thresholds: np.ndarray | float = 0.5) -> dict[str, float]:
    """All ``METRIC_KEYS`` plus ``n_genres_scored`` and ``n_samples`` (as floats).

    * ``accuracy`` is subset accuracy (all 23 labels right); ``hamming_accuracy`` = 1 - Hamming loss.
    * Precision / recall / F1 use ``zero_division=0`` (a genre or movie with nothing to
      score counts as 0, exactly as scikit-learn does).
    * ROC-AUC and average precision are computed only over genres that have both a positive
      and a negative in ``y_true``: macro = mean over those genres, micro = on the flattened
      matrix restricted to those columns. NaN when no genre qualifies.
    """
    yt, prob = _check_pair(y_true, y_prob)
    yp = (prob >= _check_thresholds(thresholds)).astype(np.int64)
    out: dict[str, float] = {
        "accuracy": float(accuracy_score(yt, yp)),
        "hamming_accuracy": 1.0 - float(hamming_loss(yt, yp)),
    }
    for avg in _AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(yt, yp, average=avg, zero_division=0)
        out[f"precision_{avg}"] = float(p)
        out[f"recall_{avg}"] = float(r)
        out[f"{avg}_f1"] = float(f)
    # Ranking metrics: the numpy path shared with the bootstrap (one resample = every movie once).
    # It equals sklearn's roc_auc_score / average_precision_score (checked in the tests) but skips
    # their per-call validation, which alone costs ~70 ms on the 2,608-movie dev set.
    rank = rank_metrics(yt, prob, np.ones((1, yt.shape[0]), dtype=np.int32))
    out.update({k: float(v[0]) for k, v in rank.items()})
    out = {k: out[k] for k in METRIC_KEYS}
    out["n_genres_scored"] = float(_scored_columns(yt).size)
    out["n_samples"] = float(yt.shape[0])
    return out


def per_genre_table(y_true, y_prob, thresholds: np.ndarray | float = 0.5) -> pd.DataFrame:
    """One row per genre: genre, support, predicted, precision, recall, f1, roc_auc, ap, threshold.

    ``roc_auc`` / ``ap`` are NaN for genres without both a positive and a negative.
    """
    yt, prob = _check_pair(y_true, y_prob)
    thr = np.broadcast_to(_check_thresholds(thresholds), (N_GENRES,)).astype(np.float64)
    yp = (prob >= thr).astype(np.int64)
    p, r, f, support = precision_recall_fscore_support(yt, yp, average=None, zero_division=0)
    auc = np.full(N_GENRES, np.nan)
    ap = np.full(N_GENRES, np.nan)
    for j in _scored_columns(yt):
        auc[j] = roc_auc_score(yt[:, j], prob[:, j])
        ap[j] = average_precision_score(yt[:, j], prob[:, j])
    return pd.DataFrame({
        "genre": list(GENRES), "support": support.astype(np.int64),
        "predicted": yp.sum(axis=0).astype(np.int64), "precision": p, "recall": r, "f1": f,
        "roc_auc": auc, "ap": ap, "threshold": thr,
    })


# Per-genre thresholds are shrunk toward one shared threshold as if the shared one had been seen on
# this many positives: a genre with 3 positives in the tuning split keeps mostly the shared
# threshold, one with 100 mostly its own. 10 was chosen by 2-fold cross-validation inside the
# tuning split of mmimdb-lite (20 repeats, every head: +0.01-0.03 micro-F1 over unshrunk
# per-genre thresholds on the held-out half); see README "Thresholds".
THRESHOLD_SHRINK = 10.0


def tune_thresholds(y_true, y_prob, *, grid: Sequence[float] | np.ndarray | None = None,
                    min_support: int = 1, shrink: float = 0.0) -> np.ndarray:
    """(23,) per-genre thresholds, each maximising that genre's F1 on the given (dev) set.

    Candidates come from ``grid`` (default 0.02, 0.04, ..., 0.94). Genres with fewer than
    ``min_support`` positives get 0.5. Among thresholds with equal F1 the one closest to 0.5
    wins (then the lower one), so a genre that is never predicted correctly keeps 0.5.

    ``shrink`` > 0: each genre's threshold becomes ``(n * t_genre + shrink * t_shared) / (n + shrink)``
    with ``n`` its positives and ``t_shared`` the one threshold that maximises micro-F1 over all
    genres (small tuning sets overfit per-genre thresholds; see ``THRESHOLD_SHRINK``).
    """
    yt, prob = _check_pair(y_true, y_prob)
    cand = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if cand.ndim != 1 or cand.size == 0:
        raise InputError(f"grid: expected a non-empty 1-D sequence, got shape {cand.shape}")
    if not np.all(np.isfinite(cand)) or cand.min() < 0.0 or cand.max() > 1.0:
        raise InputError("grid: thresholds must be finite and lie in [0, 1]")
    if int(min_support) < 0:
        raise InputError(f"min_support: must be >= 0, got {min_support}")
    if isinstance(shrink, bool) or not isinstance(shrink, (int, float)) or not 0 <= shrink < float("inf"):
        raise InputError(f"shrink: must be a finite number >= 0, got {shrink!r}")
    pos = yt.sum(axis=0)
    f1 = np.empty((cand.size, N_GENRES))
    micro = np.empty(cand.size)
    for i, t in enumerate(cand):  # one pass per candidate keeps memory at O(N * 23)
        pred = prob >= t
        tp = (pred & (yt == 1)).sum(axis=0)
        denom = pred.sum(axis=0) + pos  # 2tp + fp + fn
        f1[i] = np.divide(2.0 * tp, denom, out=np.zeros(N_GENRES), where=denom > 0)
        micro[i] = 2.0 * tp.sum() / denom.sum() if denom.sum() > 0 else 0.0
    # Sort candidates by (distance to 0.5, value); argmax returns the first maximum, i.e. the tie-break.
    order = np.lexsort((cand, np.round(np.abs(cand - 0.5), 9)))
    best = cand[order][np.argmax(f1[order], axis=0)]
    if shrink > 0:
        shared = cand[order][int(np.argmax(micro[order]))]
        best = (pos * best + shrink * shared) / (pos + shrink)
    return np.where(pos >= int(min_support), best, 0.5)


def curves(y_true, y_prob, genre: str) -> dict:
    """PR and ROC curve of one genre as plain lists, for plotting.

    Returns ``{"pr": (precision, recall, thresholds), "roc": (fpr, tpr, thresholds)}`` exactly
    as ``sklearn.metrics.precision_recall_curve`` / ``roc_curve`` give them (the first ROC
    threshold is ``inf``). Raises ``InputError`` for an unknown genre name or when the genre
    lacks positives or negatives in ``y_true`` (the curves are undefined then).
    """
    canon = normalize_genre(genre) if isinstance(genre, str) else None
    if canon not in GENRE_INDEX:
        raise InputError(f"genre: unknown genre {genre!r}; expected one of {', '.join(GENRES)}")
    yt, prob = _check_pair(y_true, y_prob)
    j = GENRE_INDEX[canon]
    if j not in _scored_columns(yt):
        raise InputError(f"genre {canon!r}: y_true needs both positives and negatives for curves "
                         f"(has {int(yt[:, j].sum())} positives of {yt.shape[0]})")
    precision, recall, pr_thr = precision_recall_curve(yt[:, j], prob[:, j])
    fpr, tpr, roc_thr = roc_curve(yt[:, j], prob[:, j])
    return {"pr": (precision.tolist(), recall.tolist(), pr_thr.tolist()),
            "roc": (fpr.tolist(), tpr.tolist(), roc_thr.tolist())}


# ----------------------------------------------------------------------------- bootstrap
def _check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    bad = [k for k in keys if k not in METRIC_KEYS]
    if bad or not keys:
        raise InputError(f"keys: unknown metric(s) {bad}; choose from {', '.join(METRIC_KEYS)}")
    return keys


def _check_alpha(alpha: float) -> float:
    if not 0.0 < float(alpha) < 1.0:
        raise InputError(f"alpha: must be in (0, 1), got {alpha}")
    return float(alpha)


def bootstrap_ci(y_true, y_prob, thresholds: np.ndarray | float = 0.5, *,
                 keys: Sequence[str] = ("micro_f1", "macro_f1", "samples_f1", "map_macro"),
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                 ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval ``(low, high)`` at level ``1 - alpha`` for each metric in ``keys``.

    Movies (rows) are resampled with replacement ``n_boot`` times; any key of ``METRIC_KEYS``
    is allowed. Resamples where a ranking metric is undefined (no genre with both classes) are
    ignored for that metric; (nan, nan) if all are.
    """
    yt, prob = _check_pair(y_true, y_prob)
    keys, alpha = _check_keys(keys), _check_alpha(alpha)
    thr = _check_thresholds(thresholds)
    vals = resampled_metrics(yt, prob, thr, multiplicities(yt.shape[0], n_boot, seed), keys)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out = {}
    for k in keys:
        v = vals[k][np.isfinite(vals[k])]
        lo, hi = np.percentile(v, q) if v.size else (np.nan, np.nan)
        out[k] = (float(lo), float(hi))
    return out


def paired_bootstrap(y_true, prob_a, prob_b, thr_a: np.ndarray | float = 0.5,
                     thr_b: np.ndarray | float = 0.5, *, key: str = "micro_f1",
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Paired bootstrap comparison of models A and B on the same movies for one metric.

    Both models are scored on the *same* resampled movie indices in every replicate, giving
    bootstrap differences ``d_b = metric_A(b) - metric_B(b)``. Returns a dict with

    * ``key``; ``a``, ``b``: the metric of each model on the full set; ``diff`` = a - b;
    * ``ci_low``, ``ci_high``: percentile interval of the ``d_b`` at level ``1 - alpha``;
    * ``p_value`` (two-sided): if ``diff > 0`` it is ``2 * mean(d_b <= 0)``, if ``diff < 0``
      it is ``2 * mean(d_b >= 0)``, capped at 1; ``diff == 0`` gives 1. Replicates with
      ``d_b == 0`` count as the other side (conservative). Its resolution is ``2 / n_boot``:
      0.0 means fewer than one replicate in ``n_boot`` crossed zero.
    """
    prob_a = _check_prob(prob_a, "prob_a")
    yt, prob_b = _check_pair(y_true, prob_b, "prob_b")
    if prob_a.shape != prob_b.shape:
        raise InputError(f"prob_a has shape {prob_a.shape} but prob_b has {prob_b.shape}")
    (key,), alpha = _check_keys(key), _check_alpha(alpha)
    ta, tb = _check_thresholds(thr_a, "thr_a"), _check_thresholds(thr_b, "thr_b")
    a = compute_metrics(yt, prob_a, ta)[key]
    b = compute_metrics(yt, prob_b, tb)[key]
    w = multiplicities(yt.shape[0], n_boot, seed)
    # the same multiplicity matrix w for both models: that is what makes the comparison paired
    d = resampled_metrics(yt, prob_a, ta, w, (key,))[key] \
        - resampled_metrics(yt, prob_b, tb, w, (key,))[key]
    d = d[np.isfinite(d)]
    diff = a - b
    if d.size == 0:
        lo = hi = p = float("nan")
    else:
        lo, hi = (float(x) for x in np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
        if diff > 0:
            p = min(1.0, 2.0 * float(np.mean(d <= 0)))
        elif diff < 0:
            p = min(1.0, 2.0 * float(np.mean(d >= 0)))
        else:
            p = 1.0
    return {"key": key, "a": float(a), "b": float(b), "diff": float(diff),
            "ci_low": lo, "ci_high": hi, "p_value": p}
