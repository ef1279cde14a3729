"""Frozen-feature training: a head over cached encoder features (every family, through ``family.fit``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator

from mmgenre.batching import FeatureTable
from mmgenre.data import MMIMDb
from mmgenre.heads import HEADS, build_head
from mmgenre.heads.base import modality_dropout
from mmgenre.genres import GENRES
from mmgenre.models import model_family

from . import engine
from .config import TrainConfig
from .data import encoder_names, load_features
from .resume import EpochState
from .results import FitResult, finish_run, start_run
from .runtime import make_accelerator


def head_task(name: str, train: FeatureTable, y_train: np.ndarray, dev: FeatureTable, y_dev: np.ndarray,
              cfg: TrainConfig) -> engine.Task:
    torch.manual_seed(cfg.seed)  # the head's initial weights
    head = build_head(name, train.dims, len(GENRES), hidden=cfg.hidden or HEADS[name].default_hidden,
                      dropout=cfg.dropout, **cfg.head_kwargs)
    tables = {"train": train, "dev": dev}
    drop = cfg.modality_dropout if len(HEADS[name].modalities) > 1 else 0.0

    def logits(model, split, idx, noise):
        batch = {k: v.to(next(model.parameters()).device) for k, v in tables[split].batch(idx).items()}
        if noise is not None and drop > 0:
            batch = modality_dropout(batch, drop, drop, generator=noise)
        return model(batch).logits

    return engine.Task(name, head, [{"params": list(head.parameters())}], {"train": y_train, "dev": y_dev}, logits)


@dataclass
class HeadTrainer:
    """``mmgenre.families.base.Trainer``: what a model family gets from training (the engine with
    this config; with ``state``, resumable; ``on_epoch`` sees each epoch's record)."""

    cfg: TrainConfig
    state: EpochState | None = None
    acc: Accelerator | None = None
    on_epoch: object = None
    state_extra: dict | None = None

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def max_tokens(self) -> int | None:
        return self.cfg.max_tokens

    def fit_head(self, name, train, y_train, dev, y_dev):
        acc = self.acc or make_accelerator(self.cfg)
        task = head_task(name, train, y_train, dev, y_dev, self.cfg)
        head, history = engine.train(task, self.cfg, acc, self.state, self.on_epoch, self.state_extra)
        return head.cpu(), history  # families predict on the CPU tables


def fit_frozen(cfg: TrainConfig, ds: MMIMDb | None = None, *, fresh: bool = False) -> FitResult:
    """Train ``cfg.model`` on cached features and write ``<cfg.out>/<cfg.model>/``."""
    family = model_family(cfg.model)
    ctx = start_run(cfg, ds, fresh=fresh)
    with ctx.tracked:
        kinds = family.encoder_kinds_of(cfg.model)
        feats = load_features(ctx.ds, cfg, kinds)
        trainer = HeadTrainer(cfg, ctx.state, ctx.acc, ctx.tracked.epoch, ctx.state_extra)
        model, probs, history = family.fit(cfg.model, ctx.movies, feats, ctx.labels, trainer)
        weights, head_cfg = model.state()
        names = encoder_names(cfg)
        encoders = {k: feats[k].meta["encoder_info"] | {"name": names[k]} for k in kinds}
        return finish_run(ctx, probs, history, weights=weights, config={"head": head_cfg, "encoders": encoders})
