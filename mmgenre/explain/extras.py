"""What a head's extras say about one prediction; heads call these from ``Head.explain_extras``.

* gates (gmu): ``gate_text_share``, the mean of the gate over hidden units (1 = all text);
* modality weights (attention / late / detection fusion): :func:`modality_weights`; late fusion
  learns one weight per genre, so ``weights`` is their mean over the explained genres and
  ``weights_per_genre`` has each one;
* attention maps (cross_attention): :func:`mmgenre.explain.cross_attention.cross_attention_maps`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmgenre.genres import GENRES


@dataclass(frozen=True)
class ExtrasContext:
    """What a head may need to phrase its extras for one movie (row ``row`` of its output)."""

    targets: Sequence[int]                          # the explained genre indices
    row: int = 0
    words: Sequence[str] | None = None              # the plot's words, when they were attributed
    positions: Sequence[Sequence[int]] | None = None  # token positions of each word
    grid: tuple[int, int] | None = None             # the poster's region grid, when there is a poster


def modality_weights(modalities: Sequence[str], weights: torch.Tensor, targets: Sequence[int]) -> dict:
    """``{"weights": {modality: w}}`` from one row's (M,) weights, or, for (M, n_genres) weights
    (one per genre), their mean over ``targets`` plus ``weights_per_genre``."""
    w = weights.detach().double().numpy()
    if w.ndim == 2:
        per = {GENRES[t]: {m: float(w[i, t]) for i, m in enumerate(modalities)} for t in targets}
        cols = list(targets) or list(range(w.shape[1]))
        return {"weights": {m: float(w[i, cols].mean()) for i, m in enumerate(modalities)},
                "weights_per_genre": per}
    return {"weights": {m: float(w[i]) for i, m in enumerate(modalities)}}
