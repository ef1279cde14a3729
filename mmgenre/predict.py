"""``Predictor``: a trained model rebuilt from its checkpoint alone, with its tuned thresholds.

    p = Predictor.from_checkpoint("checkpoints/gmu")
    p.predict(poster="poster.jpeg", plot="A detective ...")
    -> {"model": "gmu", "probabilities": {"Drama": 0.71, ...}, "predicted": ["Drama", ...], ...}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmgenre.checkpoint import Checkpoint, load_checkpoint
from mmgenre.errors import InputError
from mmgenre.explain.run import explain_prediction
from mmgenre.families.base import Model
from mmgenre.genres import GENRES
from mmgenre.inputs import Inputs, prepare_inputs
from mmgenre.models import load_model, model_modalities
from mmgenre.scheduling import ServiceLock
from mmgenre.schema import SOURCE

__all__ = ["Inputs", "Predictor", "prepare_inputs"]  # Inputs / prepare_inputs: from mmgenre.inputs

# torch modules are not re-entrant across threads, and predictors share encoders, on which
# explanations register hooks: one lock for all of them, held per stage and granted to the
# request that has used the models least (mmgenre.scheduling).
_MODELS_LOCK = ServiceLock()


class Predictor:
    def __init__(self, checkpoint: Checkpoint, model: Model):
        self.checkpoint = checkpoint
        self.model = model
        self.name: str = checkpoint.model
        self.thresholds: np.ndarray = checkpoint.thresholds
        self.modalities: tuple[str, ...] = model_modalities(self.name)
        self._lock = _MODELS_LOCK

    @property
    def encoders(self) -> dict:
        """The model's live encoders by kind ({} for a model that reads the raw plot)."""
        return self.model.encoders

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, encoders: dict | None = None) -> "Predictor":
        """Rebuild from ``path``; ``encoders`` may replace encoders by kind (tests use random ones)."""
        ckpt = load_checkpoint(path)
        return cls(ckpt, load_model(ckpt, encoders=encoders))

    def _reads(self, source: str) -> bool:
        return any(SOURCE[m] == source for m in self.modalities)

    def probabilities(self, inputs: Inputs) -> np.ndarray:
        with self._lock.hold():
            return self.model.probabilities(inputs)

    def check_modalities(self, inputs: Inputs) -> None:
        if not self._reads("poster") and not inputs.has_plot:
            raise InputError(f"model {self.name} reads the plot only, and the plot is empty")
        if not self._reads("plot") and not inputs.has_poster:
            raise InputError(f"model {self.name} reads the poster only, and no poster was given")

    def predict(self, poster=None, plot=None) -> dict:
        inputs = prepare_inputs(poster, plot)
        self.check_modalities(inputs)
        return self.format(self.probabilities(inputs), inputs)

    def format(self, probs: np.ndarray, inputs: Inputs) -> dict:
        order = np.argsort(-probs)
        return {"model": self.name,
                "probabilities": {GENRES[i]: float(probs[i]) for i in order},
                "predicted": [GENRES[i] for i in order if probs[i] >= self.thresholds[i]],
                "thresholds": {g: float(t) for g, t in zip(GENRES, self.thresholds)},
                "used": {"poster": inputs.has_poster and self._reads("poster"),
                         "plot": inputs.has_plot and self._reads("plot")}}

    def explain(self, poster=None, plot=None, genres=None, **kwargs):
        """An ``Explanation`` (Grad-CAM, word attributions, attention, modality shares); keyword
        arguments go to ``explain_prediction`` (``ig_steps``, ``faithfulness``, ``deadline`` ...)."""
        return explain_prediction(self, prepare_inputs(poster, plot), genres=genres, **kwargs)
