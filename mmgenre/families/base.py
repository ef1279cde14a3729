"""The one interface every model family implements, and what training lends it.

A family is one class. ``mmgenre.models`` maps model names to families; ``Predictor``,
``explain_prediction`` and ``train/`` reach every model through these methods only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np
from torch import nn

from mmgenre.batching import FeatureTable
from mmgenre.data import Movie
from mmgenre.features import FeatureSet
from mmgenre.inputs import Inputs


class Trainer(Protocol):
    """What ``train/`` lends a family while it fits (the library never imports ``train``)."""

    seed: int
    max_tokens: int | None  # plot tokens for sequence heads (None: the head's default)

    def fit_head(self, name: str, train: FeatureTable, y_train: np.ndarray, dev: FeatureTable,
                 y_dev: np.ndarray) -> tuple[nn.Module, list[dict]]:
        """A trained head ``name`` (early-stopped on ``dev``) and its per-epoch history."""


class Model(ABC):
    """One trained model: built by :meth:`fit` or :meth:`from_checkpoint`, saved with :meth:`state`."""

    name: str
    encoders: dict[str, Any]  # the live encoders it reads, by kind ({} for a model of raw inputs)

    # -- what a model name reads (the registry asks before anything is built) --------------
    @classmethod
    @abstractmethod
    def modalities_of(cls, name: str) -> tuple[str, ...]:
        """The modalities (``mmgenre.schema.MODALITIES``) model ``name`` reads."""

    @classmethod
    def encoder_kinds_of(cls, name: str) -> list[str]:
        """Encoder kinds whose cached features ``fit`` needs (a modality is named after its kind)."""
        return list(cls.modalities_of(name))

    # -- training and storage ----------------------------------------------------------------
    @classmethod
    @abstractmethod
    def fit(cls, name: str, movies: dict[str, list[Movie]], features: dict[str, FeatureSet],
            labels: dict[str, np.ndarray], trainer: Trainer) -> tuple["Model", dict[str, np.ndarray], list[dict]]:
        """Fit on ``movies["train"]`` (``"dev"`` for early stopping); returns the model, its
        probabilities on every split of ``movies`` and the training history."""

    @classmethod
    @abstractmethod
    def from_checkpoint(cls, ckpt, *, encoders: dict | None = None) -> "Model":
        """Rebuild from a ``mmgenre.checkpoint.Checkpoint``; ``encoders`` may replace encoders by
        kind (tests use small random ones). InputError when the checkpoint does not fit."""

    @abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(weights, the checkpoint's ``head`` config): what :meth:`from_checkpoint` reads back."""

    # -- one movie -------------------------------------------------------------------------
    @abstractmethod
    def probabilities(self, inputs: Inputs) -> np.ndarray:
        """(n_genres,) genre probabilities for one movie."""

    @abstractmethod
    def explanation(self, inputs: Inputs, options) -> tuple[np.ndarray, list]:
        """Probabilities for one movie and the ``mmgenre.explain.run.Stage`` list explaining them."""

    @abstractmethod
    def randomized(self, seed: int) -> "Model":
        """A copy with re-initialised weights (same encoders), for the model-randomisation check."""
