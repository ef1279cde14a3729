"""Views of an explanation's cross-attention entry for display: pure array maths, no drawing.

``Explanation.cross_attention`` (see ``mmgenre.explain.cross_attention``) holds, per kept plot
word, its attention over the poster regions (``text_to_image_mean``: n_words x R, regions
row-major on a ``grid`` of (h, w)). The front ends show one word's row as a heat map on the
poster; :func:`word_region_map` gives that map, :func:`min_max` the scaling it uses.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mmgenre.errors import InputError


def min_max(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] (float32); all zeros when they are constant (nothing stands out)."""
    values = np.asarray(values, dtype=np.float32)
    span = float(values.max() - values.min()) if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def word_region_map(cross_attention: Mapping, word: int) -> np.ndarray:
    """The (h, w) map of how much plot word number ``word`` (an index into
    ``cross_attention["words"]``) attends to each poster region, mean over heads, scaled to
    [0, 1] by :func:`min_max`, ready for ``mmgenre.viz.overlay_heatmap``."""
    words = cross_attention.get("words") or []
    if not 0 <= int(word) < len(words):
        raise InputError(f"word index {word} is out of range: the attention covers {len(words)} words")
    h, w = (int(n) for n in cross_attention["grid"])
    row = np.asarray(cross_attention["text_to_image_mean"][int(word)], dtype=np.float32)
    if row.size != h * w:
        raise InputError(f"attention row has {row.size} regions, the grid {h}x{w} has {h * w}")
    return min_max(row.reshape(h, w))
