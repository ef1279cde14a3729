"""Importable training: ``fit(cfg)`` trains one model on cached features and writes its checkpoint.

Protocol (the same for every model): fit on ``train`` (optionally plus a stratified share of
``dev``), early-stop on dev macro-F1, tune one threshold per genre on dev, then report dev and
test with every metric, per-genre tables, bootstrap intervals and complete-pair figures.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from mmgenre import metrics as M
from mmgenre.batching import FeatureTable, predict_table
from mmgenre.checkpoint import save_checkpoint
from mmgenre.data import MMIMDb, resolve_data_dir
from mmgenre.encoders import ENCODER_KINDS, option_name
from mmgenre.errors import InputError
from mmgenre.features import extract_features
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.heads.base import modality_dropout
from mmgenre.models import model_family
from mmgenre.splits import stratified_resplit

from .config import PROTOCOLS as PROTOCOL_HELP
from .config import TrainConfig
from .resume import EpochState, Progress

log = logging.getLogger(__name__)


PROTOCOLS = tuple(PROTOCOL_HELP)


@dataclass
class FitResult:
    model: str
    path: Path | None
    metrics: dict
    seconds: float
    history: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# data
def load_dataset(cfg: TrainConfig) -> MMIMDb:
    return MMIMDb.load(resolve_data_dir(cfg.data), skip_bad=cfg.skip_bad)


def encoder_names(cfg: TrainConfig) -> dict[str, str]:
    """The encoder of each kind ``cfg`` names (its field per kind is the kind's CLI option)."""
    return {kind: getattr(cfg, option_name(kind)) for kind in ENCODER_KINDS}


def load_features(ds: MMIMDb, cfg: TrainConfig, kinds: list[str]) -> dict:
    names = encoder_names(cfg)
    return {k: extract_features(ds, k, names[k], cache_root=cfg.cache, skip_bad=cfg.skip_bad,
                                progress=cfg.progress) for k in kinds}


def protocol_splits(ds: MMIMDb, cfg: TrainConfig) -> dict[str, list[str]]:
    """train/dev/test ids under ``cfg.protocol`` (see TrainConfig); with train_on_dev_fraction > 0
    a stratified share of the remaining dev joins train."""
    for name in (cfg.train_split, cfg.dev_split, cfg.test_split):
        if name not in ds.splits:
            raise InputError(f"split {name!r} is not in {ds.root}/split.json (has {sorted(ds.splits)})")
    train, dev = list(ds.splits[cfg.train_split]), list(ds.splits[cfg.dev_split])
    if cfg.protocol == "complete-dev":
        complete = [i for i in dev if ds[i].has_plot and ds[i].has_poster]
        if complete:
            train += [i for i in dev if not (ds[i].has_plot and ds[i].has_poster)]
            dev = complete
    elif cfg.protocol == "train-holdout":
        parts = stratified_resplit(train, ds.labels(train), seed=cfg.seed, fractions=(0.8, 0.2, 0.0))
        train, dev = parts["train"] + dev, parts["dev"]
    elif cfg.protocol != "official":
        raise InputError(f"unknown protocol {cfg.protocol!r}; use {', '.join(PROTOCOLS)}")
    if cfg.train_on_dev_fraction > 0:
        f = cfg.train_on_dev_fraction
        parts = stratified_resplit(dev, ds.labels(dev), seed=cfg.seed, fractions=(f, 1 - f, 0.0))
        train, dev = train + parts["train"], parts["dev"]
    return {"train": train, "dev": dev, "test": list(ds.splits[cfg.test_split])}


# --------------------------------------------------------------------------------------------
# neural heads
class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017) on logits, for rare genres."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits, target):
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-bce)
        return ((1 - p_t) ** self.gamma * bce).mean()


def make_loss(cfg: TrainConfig) -> nn.Module:
    if cfg.loss == "bce":
        return nn.BCEWithLogitsLoss()
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma)
    raise InputError(f"unknown loss {cfg.loss!r}; use bce or focal")


def warmup_linear(optimizer, total_steps: int, warmup_frac: float):
    warm = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_head(name: str, train: FeatureTable, y_train: np.ndarray, dev: FeatureTable,
               y_dev: np.ndarray, cfg: TrainConfig,
               state: EpochState | None = None) -> tuple[nn.Module, list[dict]]:
    """AdamW + warm-up, BCE (or focal), early stopping on dev macro-F1 with dev-tuned thresholds.

    With ``state``, everything needed to continue is saved after each epoch and a saved state of
    the same run is resumed (see :mod:`train.resume`); the result is the same either way.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    head = build_head(name, train.dims, len(GENRES), hidden=cfg.hidden or HEADS[name].default_hidden,
                      dropout=cfg.dropout, **cfg.head_kwargs)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = warmup_linear(opt, cfg.epochs * steps_per_epoch, cfg.warmup_frac)
    loss_fn = make_loss(cfg)
    target = torch.from_numpy(y_train).float()
    if cfg.label_smoothing:
        target = target * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    gen = torch.Generator().manual_seed(cfg.seed)
    multimodal = len(HEADS[name].modalities) > 1
    best = (-1.0, None, 0)
    history = []
    done = Progress()
    if state is not None:
        done = state.restore(head, opt, sched, gen) or done
        best, history = (done.best_score, done.best_state, done.best_epoch), done.history
    epochs = range(done.epoch, cfg.epochs) if not done.stopped else range(0)
    bar = tqdm(epochs, desc=name, unit="epoch", disable=not cfg.progress, leave=False,
               initial=done.epoch, total=cfg.epochs)
    for epoch in bar:
        head.train()
        perm = torch.randperm(len(train), generator=gen).numpy()
        total = 0.0
        for start in range(0, len(train), cfg.batch_size):
            idx = np.sort(perm[start:start + cfg.batch_size])
            batch = train.batch(idx)
            if multimodal and cfg.modality_dropout > 0:
                batch = modality_dropout(batch, cfg.modality_dropout, cfg.modality_dropout, generator=gen)
            loss = loss_fn(head(batch).logits, target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        probs = predict_table(head, dev)
        thr = M.tune_thresholds(y_dev, probs)
        score = M.compute_metrics(y_dev, probs, thr)["macro_f1"]
        history.append({"epoch": epoch + 1, "train_loss": total / len(train), "dev_macro_f1": score})
        bar.set_postfix(loss=f"{total / len(train):.4f}", dev_macro_f1=f"{score:.3f}")
        stop = False
        if score > best[0]:
            best = (score, copy.deepcopy(head.state_dict()), epoch)
        elif epoch - best[2] >= cfg.patience:
            stop = True
        if state is not None:
            state.save(Progress(epoch + 1, history, best[0], best[2], best[1], stop), head, opt, sched, gen)
        if stop:
            break
    head.load_state_dict(best[1])
    head.eval()
    return head, history


@dataclass
class HeadTrainer:
    """``mmgenre.families.base.Trainer``: what a model family gets from training (``train_head``
    with this config; with ``state``, resumable)."""

    cfg: TrainConfig
    state: EpochState | None = None

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def max_tokens(self) -> int | None:
        return self.cfg.max_tokens

    def fit_head(self, name, train, y_train, dev, y_dev):
        return train_head(name, train, y_train, dev, y_dev, self.cfg, self.state)


# --------------------------------------------------------------------------------------------
# evaluation and writing
def evaluate_split(y: np.ndarray, probs: np.ndarray, thr: np.ndarray, complete: np.ndarray,
                   n_boot: int, seed: int) -> dict:
    out = M.compute_metrics(y, probs, thr)
    out["per_genre"] = M.per_genre_table(y, probs, thr).to_dict(orient="records")
    if n_boot:
        out["ci"] = {k: list(v) for k, v in M.bootstrap_ci(y, probs, thr, n_boot=n_boot, seed=seed).items()}
    if complete.any() and not complete.all():
        out["complete_pairs"] = M.compute_metrics(y[complete], probs[complete], thr)
    elif complete.all():
        out["complete_pairs"] = {k: v for k, v in out.items() if k not in ("per_genre", "ci")}
    return out


def complete_pairs(movies: list) -> np.ndarray:
    """(N,) bool: the movies with both a plot and a poster (every model's "complete pairs")."""
    return np.array([m.has_plot and m.has_poster for m in movies], dtype=bool)


def predictions_frame(ds: MMIMDb, split: str, ids: list[str], probs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"imdb_id": ids, "split": split,
                          "true_genres": ["|".join(ds[i].genres) for i in ids],
                          "has_poster": [ds[i].has_poster for i in ids],
                          "has_plot": [ds[i].has_plot for i in ids]})
    probs_df = pd.DataFrame(probs, columns=[f"p_{g}" for g in GENRES])
    return pd.concat([frame, probs_df], axis=1)


def fit(cfg: TrainConfig, ds: MMIMDb | None = None) -> FitResult:
    """Train ``cfg.model`` and write ``<cfg.out>/<cfg.model>/``. Returns the metrics."""
    family = model_family(cfg.model)
    if cfg.finetune:
        from .finetune import fit_finetune
        return fit_finetune(cfg, ds)
    t0 = time.perf_counter()
    ds = ds or load_dataset(cfg)
    splits = protocol_splits(ds, cfg)
    y = {s: ds.labels(ids) for s, ids in splits.items()}
    names = encoder_names(cfg)
    kinds = family.encoder_kinds_of(cfg.model)
    feats = load_features(ds, cfg, kinds)
    state = EpochState(cfg.out, cfg, ds.fingerprint())
    movies = {s: [ds[i] for i in ids] for s, ids in splits.items()}
    model, probs, history = family.fit(cfg.model, movies, feats, y, HeadTrainer(cfg, state))
    weights, head_cfg = model.state()
    encoders = {k: feats[k].meta["encoder_info"] | {"name": names[k]} for k in kinds}
    # the same "complete pairs" for every model: plot and poster both present
    complete = {s: complete_pairs(ms) for s, ms in movies.items()}
    thr = M.tune_thresholds(y["dev"], probs["dev"])
    train_seconds = time.perf_counter() - t0
    results = {s: evaluate_split(y[s], probs[s], thr, complete[s], cfg.n_boot if s != "train" else 0, cfg.seed)
               for s in ("dev", "test")}
    results["train_seconds"] = train_seconds
    results["history"] = history
    results["n"] = {s: len(ids) for s, ids in splits.items()}
    config = {"model": cfg.model, "head": head_cfg, "encoders": encoders,
              "thresholds": [float(t) for t in thr], "train": cfg.to_dict(),
              "data": {"fingerprint": ds.fingerprint(), "folder": Path(ds.root).name,
                       "n": results["n"]}}
    preds = pd.concat([predictions_frame(ds, s, splits[s], probs[s]) for s in ("dev", "test")],
                      ignore_index=True)
    path = save_checkpoint(Path(cfg.out) / cfg.model, weights=weights, config=config,
                           metrics=results, predictions=preds)
    state.clear()  # the checkpoint is complete: nothing left to resume
    return FitResult(cfg.model, path, results, time.perf_counter() - t0, history)
