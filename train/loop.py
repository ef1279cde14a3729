"""Importable training: ``fit(cfg)`` trains one model and writes its checkpoint.

Protocol (the same for every model): fit on ``train`` (optionally plus a stratified share of
``dev``), early-stop on dev macro-F1, tune one threshold per genre on dev, then report dev and
test with every metric, per-genre tables, bootstrap intervals and complete-pair figures.
Frozen-feature heads (``train.heads``) and fine-tuning (``train.finetune``) share the engine
(``train.engine``), its checks and its ending (``train.results``).
"""
from __future__ import annotations

from mmgenre.data import MMIMDb

from .config import TrainConfig
from .data import PROTOCOLS, complete_pairs, encoder_names, load_dataset, load_features, predictions_frame, protocol_splits
from .finetune import fit_finetune
from .heads import HeadTrainer, fit_frozen
from .optim import FocalLoss, make_loss, warmup_linear
from .results import FitResult, evaluate_split

__all__ = ["PROTOCOLS", "FitResult", "FocalLoss", "HeadTrainer", "complete_pairs", "encoder_names",
           "evaluate_split", "fit", "load_dataset", "load_features", "make_loss", "predictions_frame",
           "protocol_splits", "warmup_linear"]


def fit(cfg: TrainConfig, ds: MMIMDb | None = None, *, fresh: bool = False) -> FitResult:
    """Train ``cfg.model`` (fine-tuning its encoders with ``cfg.finetune``) and write
    ``<cfg.out>/<cfg.model>/``. ``fresh`` discards a saved training state of another run."""
    if cfg.finetune:
        return fit_finetune(cfg, ds, fresh=fresh)
    return fit_frozen(cfg, ds, fresh=fresh)
