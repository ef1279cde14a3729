"""Seeded multi-label splits by iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011).

The algorithm hands out examples label by label, rarest label first, each to the fold that still
"wants" most examples of that label, so rare genres are spread over every fold instead of being
left to chance. Ties are broken by (1) how much the fold still wants the example's other labels
(a second-order refinement that keeps rare co-occurring labels apart), (2) how many examples the
fold still wants, (3) a seeded random draw. On small data a final repair pass swaps examples
between folds so that every fold meant to get at least one positive of a label gets one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmgenre.errors import InputError

SPLIT_NAMES = ("train", "dev", "test")


def _check(ids: Sequence[str], labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 2:
        raise InputError(f"labels: expected an (N, n_labels) matrix, got shape {y.shape}")
    if y.shape[0] != len(ids):
        raise InputError(f"labels: {y.shape[0]} rows for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise InputError("ids: contains duplicates; every id must be unique")
    return y > 0.5


def iterative_stratification(labels: np.ndarray, fractions: Sequence[float], *,
                             seed: int = 0) -> np.ndarray:
    """Fold index (0..len(fractions)-1) per row of the (N, L) 0/1 ``labels`` matrix.

    A fraction of 0 leaves that fold empty (e.g. ``(0.85, 0.15, 0.0)``: no test part).
    """
    y = np.asarray(labels) > 0.5
    r = np.asarray(fractions, dtype=np.float64)
    if (r.ndim != 1 or len(r) < 2 or not np.all(np.isfinite(r)) or np.any(r < 0)
            or not np.isclose(r.sum(), 1.0)):
        raise InputError(f"fractions: need >= 2 non-negative numbers summing to 1, got {fractions}")
    used = np.flatnonzero(r > 0)
    if len(used) < len(r):
        if len(used) == 1:
            return np.full(len(y), used[0], dtype=np.int64)
        return used[iterative_stratification(y, r[used] / r[used].sum(), seed=seed)]
    n, _ = y.shape
    rng = np.random.default_rng(seed)
    want = r * n                                        # (K,) examples each fold still wants
    want_label = np.outer(r, y.sum(axis=0))             # (K, L) positives each fold still wants
    fold = np.full(n, -1, dtype=np.int64)
    left = y.copy()                                     # labels of unassigned examples

    def assign(i: int, primary: np.ndarray) -> None:
        labs = np.flatnonzero(y[i])
        second = np.clip(want_label[:, labs], 0, None).sum(axis=1)
        # lexsort: last key is the primary one; the largest tuple wins.
        order = np.lexsort((rng.random(len(want)), want, second, primary))
        k = order[-1]
        fold[i] = k
        want[k] -= 1
        want_label[k, labs] -= 1
        left[i] = False

    while left.any():
        counts = left.sum(axis=0)
        active = np.flatnonzero(counts)
        rarest = active[counts[active] == counts[active].min()]
        lab = rarest[rng.integers(len(rarest))]
        rows = np.flatnonzero(left[:, lab])
        for i in rng.permutation(rows):
            assign(i, want_label[:, lab].copy())
    # Examples without any label only balance the fold sizes.
    for i in rng.permutation(np.flatnonzero(fold < 0)):
        assign(i, want.copy())
    _repair_empty_folds(y, fold, r)
    return fold


def _repair_empty_folds(y: np.ndarray, fold: np.ndarray, r: np.ndarray) -> None:
    """Swap examples (in place) so that every fold meant to hold >= 1 positive of a label holds
    one. On small data the greedy pass can leave, e.g., a genre with k positives absent from one
    of k folds; each swap keeps fold sizes, strictly lowers the number of such gaps, and among
    valid swaps the one closest to the target counts is taken."""
    n_folds = len(r)
    yi = y.astype(np.int64)
    counts = np.stack([yi[fold == j].sum(axis=0) for j in range(n_folds)])   # (K, L)
    target = np.outer(r, yi.sum(axis=0))                                      # (K, L)
    need = target >= 1 - 1e-9
    unfixable: set[tuple[int, int]] = set()
    while True:
        gaps = [(j, lab) for j, lab in np.argwhere(need & (counts == 0)).tolist()
                if (j, lab) not in unfixable]
        if not gaps:
            return
        j, lab = gaps[0]
        recipients = np.flatnonzero((fold == j) & ~y[:, lab])
        donors = np.flatnonzero(y[:, lab] & (counts[fold, lab] >= 2))
        best: tuple[int, float, int, int] | None = None
        for x in donors:
            m = fold[x]
            new_m = counts[m] - yi[x] + yi[recipients]          # (R, L)
            new_j = counts[j] + yi[x] - yi[recipients]          # (R, L)
            gaps_before = (need[m] & (counts[m] == 0)).sum() + (need[j] & (counts[j] == 0)).sum()
            gaps_after = (need[m] & (new_m == 0)).sum(1) + (need[j] & (new_j == 0)).sum(1)
            cost = ((new_m - target[m]) ** 2).sum(1) + ((new_j - target[j]) ** 2).sum(1)
            ok = np.flatnonzero(gaps_after < gaps_before)
            if len(ok):
                z = ok[np.lexsort((cost[ok], gaps_after[ok]))[0]]
                cand = (int(gaps_after[z]), float(cost[z]), int(x), int(recipients[z]))
                if best is None or cand[:2] < best[:2]:
                    best = cand
        if best is None:
            unfixable.add((j, lab))
            continue
        _, _, x, z = best
        m = fold[x]
        counts[m] += yi[z] - yi[x]
        counts[j] += yi[x] - yi[z]
        fold[x], fold[z] = j, m


def stratified_resplit(ids: Sequence[str], labels: np.ndarray, *, seed: int = 0,
                       fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> dict[str, list[str]]:
    """Multi-label stratified train/dev/test split; every id exactly once, ids keep input order."""
    if len(fractions) != 3:
        raise InputError(f"fractions: need 3 values (train, dev, test), got {fractions}")
    y = _check(ids, labels)
    fold = iterative_stratification(y, fractions, seed=seed)
    return {name: [i for i, f in zip(ids, fold) if f == k] for k, name in enumerate(SPLIT_NAMES)}


def kfold_splits(ids: Sequence[str], labels: np.ndarray, *, k: int = 5,
                 seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``k`` stratified folds as (train_ids, val_ids) pairs; each id is in exactly one val set."""
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"k: need an integer >= 2, got {k!r}")
    if k > len(ids):
        raise InputError(f"k: {k} folds for only {len(ids)} ids")
    y = _check(ids, labels)
    fold = iterative_stratification(y, [1.0 / k] * k, seed=seed)
    return [([i for i, f in zip(ids, fold) if f != j], [i for i, f in zip(ids, fold) if f == j])
            for j in range(k)]
