"""One registry of model names: every registered head (a ``NeuralModel``) plus the baselines.

The CLI, the dashboard and the tests take their model lists from here, never from a list
written by hand. Each name maps to its family, one class with the ``mmgenre.families.base.Model``
interface; a new family is a new class and one entry in ``FAMILIES``.
"""
from __future__ import annotations

from mmgenre.errors import InputError
from mmgenre.families.base import Model
from mmgenre.families.neural import NeuralModel
from mmgenre.families.tfidf import TfidfLogReg
from mmgenre.heads import list_heads

FAMILIES: dict[str, type[Model]] = {**{name: NeuralModel for name in list_heads()},
                                    TfidfLogReg.name: TfidfLogReg}


def list_models() -> list[str]:
    return list(FAMILIES)


def model_family(name: str) -> type[Model]:
    """The family class of model ``name``; InputError naming the known models otherwise."""
    if name not in FAMILIES:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


def model_modalities(name: str) -> tuple[str, ...]:
    return model_family(name).modalities_of(name)


def encoder_kinds(name: str) -> list[str]:
    """Encoder kinds whose features a model trains on, e.g. ['text', 'image'] for gmu."""
    return model_family(name).encoder_kinds_of(name)


def load_model(ckpt, *, encoders: dict | None = None) -> Model:
    """The model of a loaded ``mmgenre.checkpoint.Checkpoint``."""
    return model_family(ckpt.model).from_checkpoint(ckpt, encoders=encoders)
