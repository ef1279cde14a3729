"""Word-level cross-attention maps of the ``cross_attention`` head.

The head attends between word-piece tokens (the first ``max_tokens`` of the plot, [CLS]/[SEP]
included) and poster regions. A word's row is the mean over its pieces; special tokens and
pieces past the head's token window are left out.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def word_rows(matrix: np.ndarray, positions: Sequence[Sequence[int]], axis: int) -> tuple[np.ndarray, list[int]]:
    """Mean of ``matrix`` over each word's token positions along ``axis``; also the kept word indices.

    A word is kept when at least one of its pieces is inside the matrix (the head's window).
    """
    n_tok = matrix.shape[axis]
    kept, rows = [], []
    for i, pos in enumerate(positions):
        inside = [p for p in pos if p < n_tok]
        if inside:
            kept.append(i)
            rows.append(np.take(matrix, inside, axis=axis).mean(axis=axis))
    if not rows:
        shape = list(matrix.shape)
        shape[axis] = 0
        return np.zeros(shape, dtype=np.float32), []
    return np.stack(rows, axis=axis).astype(np.float32), kept


def cross_attention_maps(extras: dict[str, torch.Tensor], words: Sequence[str],
                         positions: Sequence[Sequence[int]], grid: tuple[int, int], row: int = 0) -> dict | None:
    """The explanation's ``cross_attention`` entry, or None when the head returns no attention.

    ``text_to_image`` (heads, n_words, R) and ``image_to_text`` (heads, R, n_words), their means over
    heads, the words kept and the region grid (h, w), regions row-major.
    """
    if "attn_text_to_image" not in extras or "attn_image_to_text" not in extras:
        return None
    t2i = extras["attn_text_to_image"][row].detach().float().numpy()   # (heads, T, R)
    i2t = extras["attn_image_to_text"][row].detach().float().numpy()   # (heads, R, T)
    t2i_words, kept = word_rows(t2i, positions, axis=1)
    i2t_words, _ = word_rows(i2t, positions, axis=2)
    return {"words": [words[i] for i in kept], "word_index": kept, "grid": (int(grid[0]), int(grid[1])),
            "text_to_image": t2i_words, "image_to_text": i2t_words,
            "text_to_image_mean": t2i_words.mean(axis=0), "image_to_text_mean": i2t_words.mean(axis=0)}
