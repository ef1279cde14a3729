"""``Explanation``: everything explained about one prediction, and its JSON form."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mmgenre.genres import GENRES
from mmgenre.viz import resize_map


def _empty_modality() -> dict:
    return {"gate_text_share": None, "weights": None, "ablation": {}}


@dataclass
class Explanation:
    """Everything explained about one prediction (see the module docstring of each part)."""

    model: str
    genres: list[str]                       # the explained genres
    probabilities: dict[str, float]         # every genre, highest first
    predicted: list[str]
    poster: np.ndarray | None               # (H, W, 3) uint8, upright
    poster_cam: dict[str, np.ndarray] = field(default_factory=dict)     # genre -> (H, W) float32 in [0, 1]
    words: list[str] = field(default_factory=list)
    token_scores: dict[str, np.ndarray] = field(default_factory=dict)   # genre -> (n_words,) per word
    ig_delta: dict[str, float] = field(default_factory=dict)  # genre -> captum convergence delta (0: exact)
    cross_attention: dict | None = None
    modality: dict = field(default_factory=_empty_modality)
    objects: list[dict] = field(default_factory=list)
    faithfulness: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # optional stages a deadline skipped, in order ("extra_genres", "ablation", "faithfulness",
    # "objects"); empty when the explanation is complete
    cut_short: list[str] = field(default_factory=list)
    # how the word scores were computed: "fast" (IG at the text encoder output), "deep" (IG at the
    # word embeddings); None without IG word scores (tf-idf). text_steps: IG steps used (most over genres)
    text_method: str | None = None
    text_steps: int | None = None

    @classmethod
    def start(cls, model: str, prediction: dict, poster, targets: list[int]) -> "Explanation":
        """An explanation with nothing explained yet, from ``Predictor.format``'s ``prediction``."""
        return cls(model=model, genres=[GENRES[t] for t in targets], probabilities=prediction["probabilities"],
                   predicted=prediction["predicted"],
                   poster=None if poster is None else np.asarray(poster, dtype=np.uint8))

    def attach_words(self, wa, targets: list[int]) -> None:
        """Word scores of a ``WordAttribution`` over ``targets`` (one row per target)."""
        self.words = list(wa.words)
        self.token_scores.update({GENRES[t]: wa.scores[i].astype(np.float32) for i, t in enumerate(targets)})
        self.ig_delta.update({GENRES[t]: float(wa.delta[i]) for i, t in enumerate(targets)})
        method, steps = getattr(wa, "method", None), getattr(wa, "n_steps", 0)
        if method is not None and len(targets):
            self.text_method = method
            self.text_steps = max(self.text_steps or 0, int(steps)) if steps else self.text_steps

    def to_dict(self, *, cam_side: int | None = 64, digits: int = 4) -> dict:
        """JSON-serialisable dict: arrays become lists rounded to ``digits``, non-finite -> None.

        The poster itself is left out (``poster_size`` = [width, height] instead) and each CAM is
        resized so its longer side is at most ``cam_side`` pixels (None: full size).
        """
        cams = {}
        for g, cam in self.poster_cam.items():
            h, w = cam.shape
            if cam_side is not None and max(h, w) > cam_side:
                s = cam_side / max(h, w)
                cam = resize_map(cam, (max(1, round(h * s)), max(1, round(w * s))))
            cams[g] = cam
        out = {"model": self.model, "genres": self.genres, "probabilities": self.probabilities,
               "predicted": self.predicted,
               "poster_size": None if self.poster is None else [int(self.poster.shape[1]), int(self.poster.shape[0])],
               "poster_cam": cams, "words": self.words, "token_scores": self.token_scores,
               "ig_delta": self.ig_delta, "cross_attention": self.cross_attention, "modality": self.modality,
               "objects": self.objects, "faithfulness": self.faithfulness, "timings": self.timings,
               "cut_short": self.cut_short, "text_method": self.text_method, "text_steps": self.text_steps}
        return _jsonable(out, digits)


def _jsonable(obj, digits: int):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc":
            arr = np.round(obj.astype(np.float64), digits)
            return _jsonable(arr.tolist(), digits) if not np.isfinite(arr).all() else arr.tolist()
        return obj.tolist()
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return round(float(obj), digits) if math.isfinite(obj) else None
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().numpy(), digits)
    return obj
