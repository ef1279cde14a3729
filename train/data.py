"""What a run reads: the dataset, the protocol's splits, cached features; and the predictions table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmgenre.data import MMIMDb, resolve_data_dir
from mmgenre.encoders import ENCODER_KINDS, option_name
from mmgenre.errors import InputError
from mmgenre.features import extract_features
from mmgenre.genres import GENRES
from mmgenre.splits import stratified_resplit

from .config import PROTOCOLS as PROTOCOL_HELP
from .config import TrainConfig

PROTOCOLS = tuple(PROTOCOL_HELP)


def load_dataset(cfg: TrainConfig) -> MMIMDb:
    return MMIMDb.load(resolve_data_dir(cfg.data), skip_bad=cfg.skip_bad)


def encoder_names(cfg: TrainConfig) -> dict[str, str]:
    """The encoder of each kind ``cfg`` names (its field per kind is the kind's CLI option)."""
    return {kind: getattr(cfg, option_name(kind)) for kind in ENCODER_KINDS}


def load_features(ds: MMIMDb, cfg: TrainConfig, kinds: list[str]) -> dict:
    names = encoder_names(cfg)
    return {k: extract_features(ds, k, names[k], cache_root=cfg.cache, skip_bad=cfg.skip_bad,
                                progress=cfg.progress, precision=cfg.feature_precision) for k in kinds}


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
