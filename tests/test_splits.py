"""mmgenre.splits: iterative stratification for train/dev/test and k folds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.splits import kfold_splits, stratified_resplit


def random_labels(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """MM-IMDb-like labels: 1-3 genres each, skewed genre frequencies, a few unlabelled rows."""
    rng = np.random.default_rng(seed)
    p = np.linspace(3.0, 0.2, 23)
    p /= p.sum()
    y = np.zeros((n, 23), dtype=np.float32)
    for i in range(n):
        if rng.random() < 0.03:
            continue
        y[i, rng.choice(23, size=int(rng.integers(1, 4)), replace=False, p=p)] = 1
    return [f"{1_000_000 + 7 * i:07d}" for i in range(n)], y


def test_resplit_is_a_partition_with_target_sizes():
    ids, y = random_labels(600)
    parts = stratified_resplit(ids, y, seed=3)
    assert list(parts) == ["train", "dev", "test"]
    assert sorted(sum(parts.values(), [])) == sorted(ids)
    for name, frac in zip(parts, (0.7, 0.15, 0.15)):
        assert abs(len(parts[name]) - frac * 600) <= 6
        order = [ids.index(i) for i in parts[name]]
        assert order == sorted(order), "ids keep their input order"


def test_resplit_deterministic_and_seed_dependent():
    ids, y = random_labels(300)
    a = stratified_resplit(ids, y, seed=0)
    assert a == stratified_resplit(ids, y, seed=0)
    assert a != stratified_resplit(ids, y, seed=1)


def test_resplit_label_proportions_close_to_overall():
    ids, y = random_labels(1000, seed=5)
    parts = stratified_resplit(ids, y, seed=0)
    index = {i: k for k, i in enumerate(ids)}
    overall = y.sum(0)
    for name, frac in zip(parts, (0.7, 0.15, 0.15)):
        got = y[[index[i] for i in parts[name]]].sum(0)
        # iterative stratification keeps every genre within about one example of its target
        assert np.all(np.abs(got - frac * overall) <= 2), (name, got, frac * overall)


def test_resplit_zero_fraction_leaves_part_empty():
    ids, y = random_labels(100)
    parts = stratified_resplit(ids, y, fractions=(0.85, 0.15, 0.0))
    assert parts["test"] == [] and len(parts["train"]) + len(parts["dev"]) == 100
    assert abs(len(parts["dev"]) - 15) <= 2


@pytest.mark.parametrize("k", [3, 5])
def test_kfold_partition_and_coverage(k: int):
    ids, y = random_labels(120, seed=2)
    folds = kfold_splits(ids, y, k=k, seed=0)
    assert len(folds) == k
    vals = [v for _, v in folds]
    assert sorted(sum(vals, [])) == sorted(ids), "every id is in exactly one validation fold"
    for train, val in folds:
        assert set(train).isdisjoint(val) and len(train) + len(val) == 120
        assert abs(len(val) - 120 / k) <= 3
        yv = y[[ids.index(i) for i in val]]
        for g in np.flatnonzero(y.sum(0) >= k):
            assert yv[:, g].sum() >= 1, f"genre {g} with >= {k} positives missing from a fold"
    assert folds == kfold_splits(ids, y, k=k, seed=0)
    assert folds != kfold_splits(ids, y, k=k, seed=1)


def test_kfold_on_tiny_dataset(tiny_data: Path):
    ds = MMIMDb.load(tiny_data)
    ids = list(ds.movies)
    y = ds.labels(ids)
    folds = kfold_splits(ids, y, k=4, seed=0)
    for _, val in folds:
        yv = ds.labels(val)
        assert np.all(yv.sum(0)[y.sum(0) >= 4] >= 1)


def test_bad_arguments():
    ids, y = random_labels(20)
    with pytest.raises(InputError, match="rows"):
        stratified_resplit(ids[:-1], y)
    with pytest.raises(InputError, match="duplicates"):
        kfold_splits(ids[:-1] + ids[:1], y)
    with pytest.raises(InputError, match="fractions"):
        stratified_resplit(ids, y, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(InputError, match="k"):
        kfold_splits(ids, y, k=1)
    with pytest.raises(InputError, match="k"):
        kfold_splits(ids, y, k=21)
    with pytest.raises(InputError, match="matrix"):
        kfold_splits(ids, y[:, 0])
