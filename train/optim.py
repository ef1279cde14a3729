"""Losses and the learning-rate schedule every run uses."""
from __future__ import annotations

import torch
from torch import nn

from mmgenre.errors import InputError

from .config import TrainConfig


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
