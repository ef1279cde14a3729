"""Seeded multi-label splits by iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011).

The algorithm hands out examples label by label, rarest label first, each to the fold that still
"wants" most examples of that label, so rare genres are spread over every fold instead of being
left to chance. Ties are broken by (1) how much the fold still wants the example's other labels
(a second-order refinement that keeps rare co-occurring labels apart), (2) how many examples the
fold still wants, (3) a seeded random draw.
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
    """Fold index (0..len(fractions)-1) per row of the (N, L) 0/1 ``labels`` matrix."""
    y = np.asarray(labels) > 0.5
    r = np.asarray(fractions, dtype=np.float64)
    if r.ndim != 1 or len(r) < 2 or np.any(r <= 0) or not np.isclose(r.sum(), 1.0):
        raise InputError(f"fractions: need >= 2 positive numbers summing to 1, got {fractions}")
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
    return fold


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
