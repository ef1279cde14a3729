"""Genre-classification heads over (cached or live) encoder features, and their registry.

Usage::

    head = build_head("gmu", {"text": 384, "image": 1280})
    out = head(batch)          # HeadOutput(logits=(B, 23), extras={...})
    rebuilt = build_head(head.name, head.dims, head.n_genres, **head.hparams())

See :mod:`mmgenre.heads.base` for the batch format.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES
from mmgenre.heads.base import Head, HeadOutput, modality_dropout

HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: adds the class to HEADS under ``name`` and sets ``cls.name``."""

    def decorate(cls: type[Head]) -> type[Head]:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head name {name!r} is already registered to {HEADS[name].__name__}")
        cls.name = name
        HEADS[name] = cls
        return cls

    return decorate


def list_heads() -> list[str]:
    """Registered head names, in registration order."""
    return list(HEADS)


def build_head(name: str, dims: dict[str, int], n_genres: int = N_GENRES, **hparams: Any) -> Head:
    """A new head ``name`` for feature sizes ``dims`` ({"text": Dt, "image": Di, "detector": Dd})."""
    if name not in HEADS:
        raise InputError(f"unknown head {name!r}; known heads: {', '.join(HEADS)}")
    return HEADS[name](dims, n_genres, **hparams)


# The head modules import register_head from this package, so they are imported after it exists.
# Every module of the package is a head (base.py excepted): these first, in this order (the
# registration order the CLI, the UI and the leaderboard show), then any other, by name; so a new
# head is one new file.
_ORDER = ("text_only", "image_only", "detection_only", "early_fusion", "late_fusion", "attention_fusion",
          "gmu", "cross_attention", "detection_fusion")
_FOUND = {m.name for m in pkgutil.iter_modules(__path__)} - {"base"}
for _module in (*[m for m in _ORDER if m in _FOUND], *sorted(_FOUND - set(_ORDER))):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["HEADS", "Head", "HeadOutput", "build_head", "list_heads", "modality_dropout",
           "register_head"]
