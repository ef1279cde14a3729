"""The inputs of one movie as every model reads them: an upright RGB poster and a cleaned plot.

    inputs = prepare_inputs(poster="poster.jpeg", plot="A detective ...")   # InputError if bad
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmgenre.data import clean_plot
from mmgenre.errors import InputError
from mmgenre.poster import load_poster


@dataclass
class Inputs:
    """Validated inputs of one movie: an RGB poster (or None) and a cleaned plot ('' if none)."""

    poster: Image.Image | None
    plot: str

    @property
    def has_poster(self) -> bool:
        return self.poster is not None

    @property
    def has_plot(self) -> bool:
        return bool(self.plot)

    def source(self, name: str):
        """The input a modality is computed from (``mmgenre.schema.SOURCE``): "plot" or "poster"."""
        if name not in ("plot", "poster"):
            raise InputError(f"unknown input {name!r}; expected 'plot' or 'poster'")
        return getattr(self, name)


def prepare_inputs(poster=None, plot=None) -> Inputs:
    """Check and normalise user inputs; raises InputError with a clear message."""
    if isinstance(poster, np.ndarray):
        if poster.ndim not in (2, 3) or poster.size == 0:
            raise InputError(f"poster array has shape {poster.shape}; expected (H, W) or (H, W, C)")
        poster = Image.fromarray(np.ascontiguousarray(poster.astype(np.uint8)))
    img = load_poster(poster) if poster is not None else None
    text = clean_plot(plot)
    if img is None and not text:
        raise InputError("nothing to predict from: give a poster, a plot, or both")
    return Inputs(img, text)
