"""How much each modality drives a prediction: the head's own shares and a removal test.

* ``gate_text_share`` (gmu): the mean of the gate z over hidden units (1 = all text).
* ``weights`` (attention / late / detection fusion): the head's modality weights; late fusion
  learns one weight per genre, so ``weights`` is their mean over the explained genres and
  ``weights_per_genre`` has each one.
* ``ablation`` (every model): the genre probability with the poster removed (``has_image`` False,
  image and detector features zeroed, as for a movie without a poster) and with the plot removed.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmgenre.genres import GENRES

_MODALITY_NAMES = {"text": "text", "image": "image", "det": "det"}
_NO_POSTER = ("image", "image_regions", "det")
_NO_PLOT = ("text", "text_tokens")


def ablation_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Three rows from a one-row batch: as given, without the poster, without the plot."""
    rows = {k: v.detach().expand(3, *v.shape[1:]).clone() for k, v in batch.items()}
    n = 3
    for key in _NO_POSTER:
        if key in rows:
            rows[key][1] = 0
    for key in _NO_PLOT:
        if key in rows:
            rows[key][2] = 0
    if "text_mask" in rows:
        rows["text_mask"][2] = False
    has_image = rows.get("has_image", torch.ones(n, dtype=torch.bool)).bool().clone()
    has_text = rows.get("has_text", torch.ones(n, dtype=torch.bool)).bool().clone()
    has_image[1], has_text[2] = False, False
    rows["has_image"], rows["has_text"] = has_image, has_text
    if "has_det" in rows:
        rows["has_det"] = rows["has_det"].bool().clone()
        rows["has_det"][1] = False
    return rows


def ablation_table(probs: np.ndarray, targets: Sequence[int]) -> dict[str, dict[str, float]]:
    """{genre: {"p", "without_poster", "without_plot"}} from the (3, n_genres) ablation probabilities."""
    return {GENRES[t]: {"p": float(probs[0, t]), "without_poster": float(probs[1, t]),
                        "without_plot": float(probs[2, t])} for t in targets}


def modality_shares(head_modalities: Sequence[str], extras: dict[str, torch.Tensor], targets: Sequence[int],
                    row: int = 0) -> dict:
    """``gate_text_share`` / ``weights`` / ``weights_per_genre`` read from a head's extras."""
    out: dict = {"gate_text_share": None, "weights": None}
    if "gate_text_share" in extras:
        out["gate_text_share"] = float(extras["gate_text_share"][row])
    w = extras.get("modality_weights")
    if w is not None:
        w = w[row].detach().double().numpy()
        names = [_MODALITY_NAMES.get(m, m) for m in head_modalities]
        if w.ndim == 2:  # (M, n_genres): one weight per modality and genre (late fusion)
            per = {GENRES[t]: {n: float(w[i, t]) for i, n in enumerate(names)} for t in targets}
            cols = list(targets) or list(range(w.shape[1]))
            out["weights"] = {n: float(w[i, cols].mean()) for i, n in enumerate(names)}
            out["weights_per_genre"] = per
        else:
            out["weights"] = {n: float(w[i]) for i, n in enumerate(names)}
    return out
