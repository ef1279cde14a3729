"""K-fold cross-validation on one split (e.g. the 2,608 lite dev movies with real MM-IMDb plots).

Each fold trains on K-1 folds (15% of them held out, stratified, for early stopping and
thresholds) and predicts the held-out fold; the out-of-fold predictions of all folds are
scored together, and the per-fold figures give a spread.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mmgenre import atomic
from mmgenre import metrics as M
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.models import model_family
from mmgenre.splits import kfold_splits, stratified_resplit

from .config import TrainConfig
from .data import encoder_names, load_dataset, load_features
from .heads import HeadTrainer
from .runtime import make_accelerator


def cross_validate(cfg: TrainConfig, ds: MMIMDb | None = None) -> dict:
    t0 = time.perf_counter()
    ds = ds or load_dataset(cfg)
    if cfg.cv_split not in ds.splits:
        raise InputError(f"--cv-split {cfg.cv_split!r} is not a split of {ds.root}")
    ids = list(ds.splits[cfg.cv_split])
    y_all = ds.labels(ids)
    pos = {i: n for n, i in enumerate(ids)}
    oof = np.zeros_like(y_all)
    oof_pred = np.zeros_like(y_all)
    folds = []
    family = model_family(cfg.model)
    acc = make_accelerator(cfg)  # one for every fold
    feats = load_features(ds, cfg, family.encoder_kinds_of(cfg.model))
    for k, (train_ids, val_ids) in enumerate(kfold_splits(ids, y_all, k=cfg.cv, seed=cfg.seed)):
        inner = stratified_resplit(train_ids, ds.labels(train_ids), seed=cfg.seed + k, fractions=(0.85, 0.15, 0.0))
        fit_ids, tune_ids = inner["train"], inner["dev"]
        parts = {"train": fit_ids, "dev": tune_ids, "val": val_ids}  # dev: early stopping and thresholds
        _, probs, _ = family.fit(cfg.model, {n: [ds[i] for i in s] for n, s in parts.items()}, feats,
                                 {n: ds.labels(s) for n, s in parts.items()}, HeadTrainer(cfg, acc=acc))
        p_tune, p_val = probs["dev"], probs["val"]
        thr = M.tune_thresholds(ds.labels(tune_ids), p_tune, shrink=M.THRESHOLD_SHRINK)
        rows = [pos[i] for i in val_ids]
        oof[rows] = p_val
        oof_pred[rows] = M.binarize(p_val, thr)
        folds.append(M.compute_metrics(ds.labels(val_ids), p_val, thr))
    # out-of-fold scores: each movie binarised by its own fold's thresholds
    pooled = M.compute_metrics(y_all, oof_pred.astype(np.float32), 0.5)
    ranking = M.compute_metrics(y_all, oof, 0.5)
    for key in ("roc_auc_macro", "roc_auc_micro", "map_macro", "map_micro"):
        pooled[key] = ranking[key]
    summary = {"model": cfg.model, "split": cfg.cv_split, "k": cfg.cv, "n": len(ids),
               "encoders": encoder_names(cfg),
               "out_of_fold": pooled,
               "fold_mean": {k: float(np.mean([f[k] for f in folds])) for k in folds[0]},
               "fold_std": {k: float(np.std([f[k] for f in folds])) for k in folds[0]},
               "folds": folds, "seconds": time.perf_counter() - t0}
    if acc.is_main_process:
        atomic.write_json(Path(cfg.out) / "cv" / f"{cfg.model}-{cfg.cv_split}-k{cfg.cv}.json", summary)
    acc.wait_for_everyone()
    return summary
