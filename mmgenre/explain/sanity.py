"""Model-randomisation sanity check (Adebayo et al. 2018): re-initialise the model's weights and
explain again; a map that barely changes (high Spearman correlation) does not depend on the model.
"""
from __future__ import annotations

import copy

import numpy as np
from scipy.stats import spearmanr

from mmgenre.explain.run import explain_prediction
from mmgenre.viz import resize_map


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # undefined for constant maps
    return float(spearmanr(a, b).statistic)


def coarse(cam: np.ndarray, side: int = 32) -> np.ndarray:
    """A CAM resized to at most ``side`` x ``side`` (correlating every pixel adds only ties)."""
    h, w = np.shape(cam)
    scale = min(1.0, side / max(h, w))
    return resize_map(cam, (max(1, round(h * scale)), max(1, round(w * scale))))


def randomisation_sanity(predictor, inputs, explanation, *, seed: int = 0, ig_steps: int = 32) -> dict:
    """Spearman correlations between ``explanation``'s maps and those of a randomised-head copy.

    Returns ``{"cam": {genre: rho}, "tokens": {genre: rho}, "cam_mean", "tokens_mean"}``
    (rho None where a map is constant). Low values mean the maps depend on the trained weights.
    """
    proxy = copy.copy(predictor)
    proxy.model = predictor.model.randomized(seed)
    rand = explain_prediction(proxy, inputs, genres=explanation.genres, ig_steps=ig_steps, faithfulness=False,
                              random_seed=seed)
    cam = {g: _spearman(coarse(explanation.poster_cam[g]), coarse(rand.poster_cam[g]))
           for g in explanation.poster_cam if g in rand.poster_cam}
    tokens = {g: _spearman(explanation.token_scores[g], rand.token_scores[g])
              for g in explanation.token_scores if g in rand.token_scores}

    def mean(d: dict) -> float | None:
        vals = [v for v in d.values() if v is not None]
        return float(np.mean(vals)) if vals else None

    return {"cam": cam, "tokens": tokens, "cam_mean": mean(cam), "tokens_mean": mean(tokens)}
