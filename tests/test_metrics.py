"""Tests for mmgenre.metrics: hand-computed toy values, agreement with scikit-learn, threshold
tuning, bootstrap intervals and the paired test, and input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (average_precision_score, f1_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

from mmgenre import metrics as M
from mmgenre import resampling
from mmgenre.errors import InputError
from mmgenre.genres import GENRE_INDEX, GENRES, N_GENRES

D, C, R = GENRE_INDEX["Drama"], GENRE_INDEX["Comedy"], GENRE_INDEX["Romance"]


def embed(cols: dict[int, list[float]], n: int, fill: float = 0.0) -> np.ndarray:
    """(n, 23) matrix with the given columns set and every other column equal to ``fill``."""
    out = np.full((n, N_GENRES), fill)
    for j, values in cols.items():
        out[:, j] = values
    return out


# Toy: 4 movies, 3 active genres (Drama, Comedy, Romance); the other 20 genres have no
# positives (y = 0) and a constant 0.1 probability (never predicted).
#            Drama Comedy Romance        prob Drama Comedy Romance     pred @0.5
# movie 0:     1     0      1                 0.9   0.2    0.6         1 0 1  (exact)
# movie 1:     0     1      0                 0.4   0.7    0.45        0 1 0  (exact)
# movie 2:     1     1      0                 0.8   0.3    0.55        1 0 1  (C missed, R extra)
# movie 3:     0     0      1                 0.6   0.45   0.45        1 0 0  (D extra, R missed)
TOY_TRUE = embed({D: [1, 0, 1, 0], C: [0, 1, 1, 0], R: [1, 0, 0, 1]}, 4)
TOY_PROB = embed({D: [0.9, 0.4, 0.8, 0.6], C: [0.2, 0.7, 0.3, 0.45], R: [0.6, 0.45, 0.55, 0.45]}, 4, fill=0.1)


def random_case(seed: int, n: int = 300, signal: float = 0.35, decimals: int | None = 2):
    """Labels with per-genre prevalence 5-40% and probabilities that carry some signal.
    Rounding the probabilities creates many tied scores."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, N_GENRES)) < rng.uniform(0.05, 0.4, N_GENRES)).astype(int)
    p = np.clip(signal * y + (1 - signal) * rng.random((n, N_GENRES)), 0, 1)
    return y, (np.round(p, decimals) if decimals is not None else p)


def sklearn_rank(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Reference ROC-AUC / AP straight from scikit-learn over the genres with both classes."""
    pos = y.sum(0)
    cols = np.flatnonzero((pos > 0) & (pos < len(y)))
    yc, pc = y[:, cols], p[:, cols]
    return {"roc_auc_macro": roc_auc_score(yc, pc, average="macro"),
            "roc_auc_micro": roc_auc_score(yc, pc, average="micro"),
            "map_macro": average_precision_score(yc, pc, average="macro"),
            "map_micro": average_precision_score(yc, pc, average="micro")}


# ----------------------------------------------------------------------------- hand-computed
def test_toy_metrics_match_hand_computation():
    m = M.compute_metrics(TOY_TRUE, TOY_PROB)
    expected = {
        # movies 0 and 1 are exactly right
        "accuracy": 2 / 4,
        # 4 wrong cells (2 in movie 2, 2 in movie 3) out of 4 * 23
        "hamming_accuracy": 1 - 4 / 92,
        # per genre: Drama tp2 fp1 fn0 (P 2/3, R 1, F1 4/5); Comedy tp1 fp0 fn1 (P 1, R 1/2, F1 2/3);
        # Romance tp1 fp1 fn1 (P R F1 = 1/2); the 20 empty genres score 0 (zero_division=0).
        # micro: tp4 fp2 fn2
        "precision_micro": 4 / 6, "recall_micro": 4 / 6, "micro_f1": 4 / 6,
        # macro: mean over all 23 genres, as scikit-learn does
        "precision_macro": (2 / 3 + 1 + 1 / 2) / 23,
        "recall_macro": (1 + 1 / 2 + 1 / 2) / 23,
        "macro_f1": (4 / 5 + 2 / 3 + 1 / 2) / 23,
        # weighted: supports 2, 2, 2
        "precision_weighted": (2 * 2 / 3 + 2 * 1 + 2 * 1 / 2) / 6,
        "recall_weighted": (2 * 1 + 2 * 1 / 2 + 2 * 1 / 2) / 6,
        "weighted_f1": (2 * 4 / 5 + 2 * 2 / 3 + 2 * 1 / 2) / 6,
        # samples: movie P/R/F1 = 1, 1, 1/2 (tp1 fp1 fn1), 0 (tp0)
        "precision_samples": (1 + 1 + 0.5 + 0) / 4,
        "recall_samples": (1 + 1 + 0.5 + 0) / 4,
        "samples_f1": (1 + 1 + 0.5 + 0) / 4,
        # AUC: Drama 1 (both positives above both negatives); Comedy 3/4 (positive 0.3 < negative
        # 0.45); Romance: positive 0.45 ties negative 0.45 (1/2) and loses to 0.55 -> 2.5/4.
        "roc_auc_macro": (1 + 3 / 4 + 5 / 8) / 3,
        # AP: Drama 1; Comedy ranking + - + - -> 1/2 * 1 + 1/2 * 2/3 = 5/6;
        # Romance 0.6+ , 0.55-, {0.45+, 0.45-} -> 1/2 * 1 + 1/2 * 2/4 = 3/4.
        "map_macro": (1 + 5 / 6 + 3 / 4) / 3,
        # micro AUC over the 12 cells of the 3 scored genres: positives .9 .8 .7 .6 .45 .3 vs
        # negatives .4 .6 .2 .45 .45 .55 -> 6 + 6 + 6 + 5.5 + 3 + 1 = 27.5 of 36 pairs.
        "roc_auc_micro": 27.5 / 36,
        # micro AP: tie groups .9+ .8+ .7+ {.6+-} .55- {.45+--} .4- .3+ .2- ; precision where recall
        # grows: 1, 1, 1, 4/5, 5/9, 6/11, each step 1/6.
        "map_micro": (1 + 1 + 1 + 4 / 5 + 5 / 9 + 6 / 11) / 6,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert set(M.METRIC_KEYS) <= set(m)
    # the 20 genres without positives are excluded from AUC / mAP and the count says so
    assert m["n_genres_scored"] == 3.0
    assert m["n_samples"] == 4.0


def test_toy_per_genre_table():
    thr = np.full(N_GENRES, 0.5)
    thr[C] = 0.25  # Comedy now predicted for movies 1, 2, 3 (0.7, 0.3, 0.45): tp2 fp1 -> F1 4/5
    table = M.per_genre_table(TOY_TRUE, TOY_PROB, thr)
    assert list(table.columns) == ["genre", "support", "predicted", "precision", "recall", "f1",
                                   "roc_auc", "ap", "threshold"]
    assert list(table["genre"]) == list(GENRES)
    drama, comedy, romance = table.iloc[D], table.iloc[C], table.iloc[R]
    assert (drama.support, drama.predicted) == (2, 3)
    assert drama.precision == pytest.approx(2 / 3) and drama.recall == 1 and drama.f1 == pytest.approx(0.8)
    assert drama.roc_auc == 1 and drama.ap == 1
    assert (comedy.predicted, comedy.recall, comedy.threshold) == (3, 1.0, 0.25)
    assert comedy.precision == pytest.approx(2 / 3) and comedy.f1 == pytest.approx(0.8)
    assert comedy.roc_auc == pytest.approx(0.75) and comedy.ap == pytest.approx(5 / 6)
    assert romance.roc_auc == pytest.approx(5 / 8) and romance.ap == pytest.approx(3 / 4)
    empty = table.drop(index=[D, C, R])
    assert empty["roc_auc"].isna().all() and empty["ap"].isna().all()
    assert (empty["support"] == 0).all() and (empty["f1"] == 0).all()


def test_binarize_is_inclusive_and_per_genre():
    prob = embed({D: [0.5, 0.49], C: [0.3, 0.2]}, 2)
    thr = np.full(N_GENRES, 0.5)
    thr[C] = 0.25
    out = M.binarize(prob, thr)
    assert out.shape == (2, N_GENRES) and out.dtype.kind == "i"
    assert out[:, D].tolist() == [1, 0] and out[:, C].tolist() == [1, 0]
    assert M.binarize(prob, 0.0).sum() == 2 * N_GENRES


# ----------------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_metrics_matches_sklearn_with_ties(seed):
    y, p = random_case(seed, n=int(40 + 60 * seed), decimals=1 + seed)
    y[:, -1] = 0  # one genre with no positives, one with no negatives
    y[:, -2] = 1
    thr = np.random.default_rng(seed).uniform(0.2, 0.7, N_GENRES)
    m = M.compute_metrics(y, p, thr)
    for key, value in sklearn_rank(y, p).items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    pos = y.sum(0)
    assert m["n_genres_scored"] == np.sum((pos > 0) & (pos < len(y))) <= N_GENRES - 2
    pred = (p >= thr).astype(int)
    for avg in ("micro", "macro", "weighted", "samples"):
        key = f"{avg}_f1"
        assert m[key] == pytest.approx(f1_score(y, pred, average=avg, zero_division=0), abs=1e-12)


def test_all_tied_scores_give_chance_auc_and_prevalence_ap():
    y = embed({D: [1, 0, 0, 1, 0]}, 5)
    m = M.compute_metrics(y, np.full((5, N_GENRES), 0.3))
    assert m["roc_auc_macro"] == pytest.approx(0.5) and m["map_macro"] == pytest.approx(2 / 5)
    assert m["n_genres_scored"] == 1


def test_no_scorable_genre_gives_nan_ranking_metrics():
    m = M.compute_metrics(np.zeros((3, N_GENRES)), np.full((3, N_GENRES), 0.2))
    assert m["n_genres_scored"] == 0
    assert all(math.isnan(m[k]) for k in ("roc_auc_macro", "roc_auc_micro", "map_macro", "map_micro"))
    assert m["accuracy"] == 1.0 and m["micro_f1"] == 0.0


def test_resampled_metrics_equal_sklearn_on_resamples():
    """The numpy bootstrap path equals scikit-learn on explicitly resampled data."""
    y, p = random_case(5, n=120, decimals=2)
    y[:, 3] = 0
    y[:2, 3] = 1  # rare genre: some resamples lose its positives and must drop it from AUC/mAP
    thr = np.full(N_GENRES, 0.45)
    w = resampling.multiplicities(len(y), 8, seed=11)
    assert (w.sum(axis=1) == len(y)).all()
    got = resampling.resampled_metrics(y, p, thr, w, M.METRIC_KEYS)
    for b in range(len(w)):
        idx = np.repeat(np.arange(len(y)), w[b])
        yb, pb = y[idx], p[idx]
        ref = M.compute_metrics(yb, pb, thr)  # sklearn for the count-based metrics
        ref.update(sklearn_rank(yb, pb))  # sklearn directly for the ranking metrics
        for key in M.METRIC_KEYS:
            assert got[key][b] == pytest.approx(ref[key], abs=1e-12), (b, key)


# ----------------------------------------------------------------------------- thresholds
def test_tune_thresholds_finds_known_optimum():
    # Drama: positives 0.35 0.4 0.7, negatives 0.1 0.2 0.3 0.5 (7 movies).
    # t in (0.30, 0.35] keeps tp3 fp1 -> F1 6/7 (best); (0.2, 0.3] -> 6/8; (0.35, 0.4] -> 4/6.
    # Grid points 0.32 and 0.34 tie at 6/7 -> the one closer to 0.5 wins: 0.34.
    # Comedy: no positives -> 0.5. Romance: positives at 0.0, negatives at 0.99 -> F1 is 0 for
    # every grid value -> 0.5. Action: one positive (0.9) vs negatives at 0.6 -> F1 1 for t in
    # (0.6, 0.9]; the closest grid value to 0.5 there is 0.62.
    action = GENRE_INDEX["Action"]
    y = embed({D: [1, 1, 1, 0, 0, 0, 0], R: [1, 1, 0, 0, 0, 0, 0], action: [1, 0, 0, 0, 0, 0, 0]}, 7)
    p = embed({D: [0.35, 0.4, 0.7, 0.1, 0.2, 0.3, 0.5], C: [0.9] * 7, R: [0, 0, 0.99, 0.99, 0.99, 0.99, 0.99],
               action: [0.9, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]}, 7, fill=0.2)
    thr = M.tune_thresholds(y, p)
    assert thr.shape == (N_GENRES,)
    assert thr[D] == pytest.approx(0.34)
    assert thr[C] == 0.5 and thr[R] == 0.5
    assert thr[action] == pytest.approx(0.62)
    # Action has a single positive: with min_support=2 it keeps 0.5, Drama (3 positives) is still tuned
    thr2 = M.tune_thresholds(y, p, min_support=2)
    assert thr2[D] == pytest.approx(0.34) and thr2[action] == 0.5
    # a custom grid
    assert M.tune_thresholds(y, p, grid=[0.25, 0.6])[D] == 0.25


def test_tuned_thresholds_beat_every_grid_value_per_genre():
    y, p = random_case(3, n=200)
    thr = M.tune_thresholds(y, p)
    tuned_f1 = M.per_genre_table(y, p, thr)["f1"].to_numpy()
    for t in M.DEFAULT_GRID[::5]:
        f1_t = f1_score(y, (p >= t).astype(int), average=None, zero_division=0)
        assert np.all(tuned_f1 >= f1_t - 1e-12)
    assert set(np.round(thr, 2)) <= set(M.DEFAULT_GRID) | {0.5}


# ----------------------------------------------------------------------------- curves, masks
def test_curves_match_sklearn_and_reject_unknown_genre():
    out = M.curves(TOY_TRUE, TOY_PROB, "comedy")  # names are normalised
    prec, rec, thr = precision_recall_curve(TOY_TRUE[:, C], TOY_PROB[:, C])
    fpr, tpr, rthr = roc_curve(TOY_TRUE[:, C], TOY_PROB[:, C])
    assert out["pr"] == (prec.tolist(), rec.tolist(), thr.tolist())
    assert out["roc"][:2] == (fpr.tolist(), tpr.tolist())
    assert all(isinstance(v, list) for v in out["pr"] + out["roc"])
    with pytest.raises(InputError, match="unknown genre"):
        M.curves(TOY_TRUE, TOY_PROB, "Space Opera")
    with pytest.raises(InputError, match="unknown genre"):
        M.curves(TOY_TRUE, TOY_PROB, "News")  # a dropped genre
    with pytest.raises(InputError, match="positives"):
        M.curves(TOY_TRUE, TOY_PROB, "Western")  # no positives: curves undefined


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_point_and_narrows_with_more_data():
    keys = ("micro_f1", "macro_f1", "samples_f1", "map_macro", "roc_auc_micro", "hamming_accuracy")
    y_small, p_small = random_case(7, n=80)
    y_big, p_big = random_case(8, n=800)
    ci_small = M.bootstrap_ci(y_small, p_small, keys=keys, n_boot=300)
    ci_big = M.bootstrap_ci(y_big, p_big, keys=keys, n_boot=300)
    point = M.compute_metrics(y_big, p_big)
    for key in keys:
        lo, hi = ci_big[key]
        assert lo <= point[key] <= hi, key
        assert (ci_small[key][1] - ci_small[key][0]) > (hi - lo), key
    # same seed, same answer; other alpha gives a narrower interval
    assert M.bootstrap_ci(y_small, p_small, keys=keys, n_boot=300) == ci_small
    lo90, hi90 = M.bootstrap_ci(y_small, p_small, keys=("micro_f1",), n_boot=300, alpha=0.1)["micro_f1"]
    assert ci_small["micro_f1"][0] <= lo90 <= hi90 <= ci_small["micro_f1"][1]


def test_paired_bootstrap_detects_a_clearly_better_model():
    rng = np.random.default_rng(0)
    y, good = random_case(9, n=300, signal=0.6)
    noise = rng.random(y.shape)
    res = M.paired_bootstrap(y, good, noise, key="micro_f1", n_boot=500)
    assert set(res) == {"key", "a", "b", "diff", "ci_low", "ci_high", "p_value"}
    assert res["key"] == "micro_f1" and res["diff"] == pytest.approx(res["a"] - res["b"])
    assert res["diff"] > 0 and res["ci_low"] > 0 and res["p_value"] < 0.05
    flipped = M.paired_bootstrap(y, noise, good, key="map_macro", n_boot=200)
    assert flipped["diff"] < 0 and flipped["ci_high"] < 0 and flipped["p_value"] < 0.05


def test_paired_bootstrap_identical_models():
    y, p = random_case(10, n=150)
    res = M.paired_bootstrap(y, p, p.copy(), n_boot=200)
    assert res["diff"] == 0 and res["ci_low"] == 0 == res["ci_high"] and res["p_value"] > 0.2


def test_paired_bootstrap_p_value_follows_its_definition():
    """Two close models: p is 2 * the share of paired resample diffs at or below 0 (diff > 0)."""
    y, p = random_case(12, n=60)
    rng = np.random.default_rng(1)
    q = np.clip(p + rng.normal(0, 0.08, p.shape), 0, 1)
    res = M.paired_bootstrap(y, p, q, key="samples_f1", n_boot=40, seed=4)
    w = resampling.multiplicities(len(y), 40, seed=4)  # the same resamples the function draws
    diffs = []
    for b in range(40):
        idx = np.repeat(np.arange(len(y)), w[b])
        diffs.append(M.compute_metrics(y[idx], p[idx])["samples_f1"]
                     - M.compute_metrics(y[idx], q[idx])["samples_f1"])
    diffs = np.array(diffs)
    side = (diffs <= 0) if res["diff"] > 0 else (diffs >= 0)
    assert res["p_value"] == pytest.approx(min(1.0, 2 * side.mean()))
    assert res["ci_low"] == pytest.approx(np.percentile(diffs, 2.5))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("y_true, y_prob, match", [
    (np.zeros((4, 22)), np.zeros((4, 22)), "y_prob: expected shape"),
    (np.zeros((4, N_GENRES)), np.zeros(N_GENRES), "y_prob: expected shape"),
    (np.zeros((3, N_GENRES)), np.zeros((4, N_GENRES)), "rows"),
    (np.zeros((0, N_GENRES)), np.zeros((0, N_GENRES)), "N == 0"),
    (np.zeros((2, N_GENRES)), np.full((2, N_GENRES), np.nan), "NaN"),
    (np.zeros((2, N_GENRES)), np.full((2, N_GENRES), 1.5), r"\[0, 1\]"),
    (np.full((2, N_GENRES), 2), np.zeros((2, N_GENRES)), "y_true: must be a 0/1"),
    (np.zeros((2, 22)), np.zeros((2, N_GENRES)), "y_true: expected shape"),
])
def test_bad_inputs_raise_input_error(y_true, y_prob, match):
    for fn in (M.compute_metrics, M.per_genre_table, M.tune_thresholds, M.bootstrap_ci):
        with pytest.raises(InputError, match=match):
            fn(y_true, y_prob)


def test_bad_options_raise_input_error():
    with pytest.raises(InputError, match="thresholds"):
        M.compute_metrics(TOY_TRUE, TOY_PROB, np.full(5, 0.5))
    with pytest.raises(InputError, match="thresholds"):
        M.binarize(TOY_PROB, 1.5)
    with pytest.raises(InputError, match="keys"):
        M.bootstrap_ci(TOY_TRUE, TOY_PROB, keys=("f1",), n_boot=5)
    with pytest.raises(InputError, match="n_boot"):
        M.bootstrap_ci(TOY_TRUE, TOY_PROB, n_boot=0)
    with pytest.raises(InputError, match="prob_b"):
        M.paired_bootstrap(TOY_TRUE, TOY_PROB, TOY_PROB[:3], n_boot=5)
    with pytest.raises(InputError, match="grid"):
        M.tune_thresholds(TOY_TRUE, TOY_PROB, grid=[])
