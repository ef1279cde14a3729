"""One registry of model names: every fusion/unimodal head plus the non-neural baselines.

The CLI, the dashboard and the tests take their model lists from here, never from a list
written by hand.
"""
from __future__ import annotations

from .baselines import TfidfLogReg
from .heads import HEADS, list_heads

BASELINES = {TfidfLogReg.name: TfidfLogReg}
# Head modality names -> encoder kinds.
MODALITY_KIND = {"text": "text", "image": "image", "det": "detector"}


def list_models() -> list[str]:
    return list_heads() + list(BASELINES)


def is_baseline(name: str) -> bool:
    return name in BASELINES


def model_modalities(name: str) -> tuple[str, ...]:
    if name in BASELINES:
        return BASELINES[name].modalities
    return HEADS[name].modalities


def encoder_kinds(name: str) -> list[str]:
    """Encoder kinds a model reads, e.g. ['text', 'image'] for gmu."""
    if name in BASELINES:
        return []  # baselines read raw text
    return [MODALITY_KIND[m] for m in HEADS[name].modalities]
