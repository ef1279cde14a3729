"""Metrics of many bootstrap resamples at once, in numpy (``mmgenre.metrics`` validates and calls it).

Resampling movies with replacement is the same as weighting each movie by how often it was drawn,
so every count-based metric becomes a matrix product with the (n_boot, N) multiplicity matrix,
and ROC-AUC / average precision become weighted prefix sums over one sort of the scores. With
every weight 1 this is the point estimate (``compute_metrics`` uses it for ROC-AUC / mAP).
Inputs here are already validated: (N, 23) 0/1 labels, probabilities, thresholds.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES

RANK_KEYS = ("roc_auc_macro", "roc_auc_micro", "map_macro", "map_micro")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def _count_metrics(yt: np.ndarray, yp: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Threshold-based metrics for each row of the multiplicity matrix ``w`` (B, N)."""
    n = w.sum(axis=1)  # resample sizes (== N)
    hit, t, p = yt * yp, yt, yp
    tp, fp, fn = w @ hit, w @ (p - hit), w @ (t - hit)  # (B, 23) per-genre counts
    support = tp + fn
    out = {
        "accuracy": w @ np.all(yt == yp, axis=1).astype(np.float64) / n,
        "hamming_accuracy": 1.0 - w @ (yt != yp).sum(axis=1).astype(np.float64) / (n * N_GENRES),
    }
    # micro: pooled counts; macro / weighted: per-genre scores averaged (weights = support).
    stp, sfp, sfn = tp.sum(1), fp.sum(1), fn.sum(1)
    out["precision_micro"] = _safe_div(stp, stp + sfp)
    out["recall_micro"] = _safe_div(stp, stp + sfn)
    out["micro_f1"] = _safe_div(2 * stp, 2 * stp + sfp + sfn)
    per_genre = {"precision": _safe_div(tp, tp + fp), "recall": _safe_div(tp, tp + fn),
                 "f1": _safe_div(2 * tp, 2 * tp + fp + fn)}
    for name, score in per_genre.items():
        key_macro = "macro_f1" if name == "f1" else f"{name}_macro"
        key_weighted = "weighted_f1" if name == "f1" else f"{name}_weighted"
        out[key_macro] = score.mean(axis=1)
        out[key_weighted] = _safe_div((score * support).sum(1), support.sum(1))
    # samples: per-movie scores (fixed for each movie), averaged with multiplicities.
    mtp = hit.sum(1).astype(np.float64)
    mfp, mfn = p.sum(1) - mtp, t.sum(1) - mtp
    out["precision_samples"] = w @ _safe_div(mtp, mtp + mfp) / n
    out["recall_samples"] = w @ _safe_div(mtp, mtp + mfn) / n
    out["samples_f1"] = w @ _safe_div(2 * mtp, 2 * mtp + mfp + mfn) / n
    return out


def _weighted_auc_ap(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """ROC-AUC, AP, positive weight and negative weight of one ranking for each row of ``w``.

    ``w`` is a (B, n) integer matrix of row multiplicities. Same values as scikit-learn: scores
    are grouped into tie groups (so weighting equals duplicating rows), and only groups holding
    positives contribute. With tp_g / fp_g the positive / negative weight in group g and
    TP_g / FP_g the cumulative weights down to g (scores sorted descending):
    AP = sum_g (tp_g / P) * TP_g / (TP_g + FP_g), and AUC (the trapezoidal ROC area) =
    sum_g tp_g * (N - FP_g + fp_g / 2) / (P * N), N being the total negative weight.
    """
    order = np.argsort(-score)  # order inside a tie group is irrelevant
    s, ys = score[order], y[order]
    new_group = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], s.size] - 1
    pos_at = np.flatnonzero(ys == 1)  # sorted positions of positives
    gp = np.cumsum(new_group)[pos_at] - 1  # tie group of each positive (non-decreasing)
    gp = gp[np.r_[True, gp[1:] != gp[:-1]]] if gp.size else gp  # each such group once
    ws = w[:, order]
    # Prefix sums with a leading 0 column: cum[:, k] = weight of the first k sorted rows.
    zero = np.zeros((w.shape[0], 1), dtype=np.int32)  # weights sum to n: int32 is exact
    cum_all = np.hstack([zero, np.cumsum(ws, axis=1, dtype=np.int32)])
    cum_pos = np.hstack([zero, np.cumsum(ws[:, pos_at], axis=1, dtype=np.int32)])
    n_pos_end = np.searchsorted(pos_at, ends[gp], side="right")  # positives up to a group's end
    n_pos_before = np.searchsorted(pos_at, starts[gp], side="left")
    tp_cum = cum_pos[:, n_pos_end].astype(np.float64)
    tp_g = tp_cum - cum_pos[:, n_pos_before]
    fp_cum = cum_all[:, ends[gp] + 1] - tp_cum
    fp_g = fp_cum - (cum_all[:, starts[gp]] - cum_pos[:, n_pos_before])
    npos = cum_pos[:, -1].astype(np.float64)
    nneg = cum_all[:, -1] - npos
    ap = _safe_div(np.sum(tp_g * _safe_div(tp_cum, tp_cum + fp_cum), axis=1), npos)
    auc = _safe_div(np.sum(tp_g * (nneg[:, None] - fp_cum + fp_g / 2.0), axis=1), npos * nneg)
    return auc, ap, npos, nneg


def rank_metrics(yt: np.ndarray, prob: np.ndarray, w: np.ndarray,
                  micro: bool = True) -> dict[str, np.ndarray]:
    """ROC-AUC / mAP per resample (macro, and micro unless ``micro=False``: it costs far more),
    over the genres that have both classes in that resample."""
    b = w.shape[0]
    auc, ap, valid = np.empty((b, N_GENRES)), np.empty((b, N_GENRES)), np.empty((b, N_GENRES), bool)
    for j in range(N_GENRES):
        a, p, npos, nneg = _weighted_auc_ap(yt[:, j], prob[:, j], w)
        auc[:, j], ap[:, j], valid[:, j] = a, p, (npos > 0) & (nneg > 0)
    n_valid = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"roc_auc_macro": np.where(n_valid > 0, (auc * valid).sum(1) / n_valid, np.nan),
               "map_macro": np.where(n_valid > 0, (ap * valid).sum(1) / n_valid, np.nan)}
    if not micro:
        return out
    # micro: flatten (movie, genre) cells; cells of genres not scored in a resample get weight 0.
    cell_w = (w[:, :, None] * valid[:, None, :]).reshape(b, -1)
    auc_mi, ap_mi, _, _ = _weighted_auc_ap(yt.ravel(), prob.ravel(), cell_w)
    out["roc_auc_micro"] = np.where(n_valid > 0, auc_mi, np.nan)
    out["map_micro"] = np.where(n_valid > 0, ap_mi, np.nan)
    return out


def resampled_metrics(yt: np.ndarray, prob: np.ndarray, thr: np.ndarray, w: np.ndarray,
                       keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Metrics ``keys`` for every row of the multiplicity matrix ``w``, in memory-bounded chunks."""
    yp = (prob >= thr).astype(np.int64)
    need_rank = any(k in RANK_KEYS for k in keys)
    need_micro = any(k in ("roc_auc_micro", "map_micro") for k in keys)
    # micro ranking metrics build a (chunk, N*23) matrix: keep it around 4M cells.
    chunk = max(1, 4_000_000 // (yt.size if need_micro else yt.shape[0]))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, w.shape[0], chunk):
        wc = w[start:start + chunk]
        vals = _count_metrics(yt, yp, wc.astype(np.float64))
        if need_rank:
            vals.update(rank_metrics(yt, prob, wc, micro=need_micro))
        for k in keys:
            parts[k].append(vals[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def multiplicities(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts of how often each movie is drawn in each resample of size n."""
    if int(n_boot) < 1:
        raise InputError(f"n_boot: must be >= 1, got {n_boot}")
    b = int(n_boot)
    idx = np.random.default_rng(seed).integers(0, n, size=(b, n))
    flat = (idx + n * np.arange(b)[:, None]).ravel()  # offset each resample into its own row
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.int32)
