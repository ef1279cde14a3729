"""How much each input drives a prediction: a removal test over a one-movie batch.

``ablation`` (every model): the genre probability with the poster removed (every modality
computed from it zeroed and marked missing, as for a movie without a poster) and with the plot
removed. The heads' own shares (gates, modality weights) come from ``Head.explain_extras``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmgenre import schema
from mmgenre.genres import GENRES


def ablation_batch(batch: schema.Batch) -> schema.Batch:
    """Three rows from a one-row batch: as given, without the poster, without the plot."""
    rows = {k: v.detach().expand(3, *v.shape[1:]).clone() for k, v in batch.items()}
    for source in ("plot", "poster"):
        rows.setdefault(schema.presence(schema.primary(source)), torch.ones(3, dtype=torch.bool))
    schema.remove_rows(rows, "poster", torch.tensor([False, True, False]))
    schema.remove_rows(rows, "plot", torch.tensor([False, False, True]))
    return rows


def ablation_table(probs: np.ndarray, targets: Sequence[int]) -> dict[str, dict[str, float]]:
    """{genre: {"p", "without_poster", "without_plot"}} from the (3, n_genres) ablation probabilities."""
    return {GENRES[t]: {"p": float(probs[0, t]), "without_poster": float(probs[1, t]),
                        "without_plot": float(probs[2, t])} for t in targets}
