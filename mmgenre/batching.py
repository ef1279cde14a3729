"""Turn cached features (or live encoder outputs) into the batch dict every head reads.

Batch keys (see ``mmgenre.heads.base``): ``text`` (B,Dt), ``text_tokens`` (B,T,Dt),
``text_mask`` (B,T), ``image`` (B,Di), ``image_regions`` (B,R,Di), ``det`` (B,Dd),
``has_text`` (B,), ``has_image`` (B,).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .features import FeatureSet


@dataclass
class FeatureTable:
    """The features of a fixed list of movies, kept as float16 numpy; batches come out float32."""

    ids: list[str]
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: np.ndarray | slice | None = None) -> dict[str, torch.Tensor]:
        idx = slice(None) if idx is None else idx
        out = {}
        for key, arr in self.arrays.items():
            part = np.asarray(arr[idx])
            t = torch.from_numpy(np.ascontiguousarray(part))
            out[key] = t if t.dtype == torch.bool else t.float()
        return out

    def subset(self, rows: np.ndarray) -> "FeatureTable":
        return FeatureTable([self.ids[i] for i in rows], {k: v[rows] for k, v in self.arrays.items()})

    @property
    def has_text(self) -> np.ndarray:
        return self.arrays.get("has_text", np.ones(len(self), dtype=bool))

    @property
    def has_image(self) -> np.ndarray:
        return self.arrays.get("has_image", np.ones(len(self), dtype=bool))


def build_table(features: dict[str, FeatureSet], ids: list[str], *, sequences: bool,
                max_tokens: int | None = None) -> FeatureTable:
    """Gather the rows of ``ids`` from each encoder kind's cache (kinds: text, image, detector)."""
    arrays: dict[str, np.ndarray] = {}
    if "text" in features:
        fs = features["text"]
        rows = fs.rows(ids)
        arrays["text"] = np.asarray(fs.pooled[rows])
        arrays["has_text"] = np.asarray(fs.present[rows]).astype(bool)
        if sequences:
            t = fs.seq.shape[1] if max_tokens is None else min(max_tokens, fs.seq.shape[1])
            mask = np.asarray(fs.seq_mask[rows, :t])
            used = max(1, int(mask.any(axis=0).nonzero()[0].max() + 1) if mask.any() else 1)
            arrays["text_tokens"] = np.asarray(fs.seq[rows, :used])
            arrays["text_mask"] = mask[:, :used]
    if "image" in features:
        fs = features["image"]
        rows = fs.rows(ids)
        arrays["image"] = np.asarray(fs.pooled[rows])
        arrays["has_image"] = np.asarray(fs.present[rows]).astype(bool)
        if sequences:
            arrays["image_regions"] = np.asarray(fs.seq[rows])
    if "detector" in features:
        fs = features["detector"]
        rows = fs.rows(ids)
        arrays["det"] = np.asarray(fs.pooled[rows])
        arrays.setdefault("has_image", np.asarray(fs.present[rows]).astype(bool))
    return FeatureTable(list(ids), arrays)


def text_batch(out, max_tokens: int | None, present: list[bool]) -> dict[str, torch.Tensor]:
    """Batch entries from a live ``TextEncoder`` output (TextFeatures)."""
    t = out.tokens.shape[1] if max_tokens is None else min(max_tokens, out.tokens.shape[1])
    has = torch.tensor(present, dtype=torch.bool)
    keep = has.float()[:, None]
    return {"text": out.pooled * keep, "text_tokens": out.tokens[:, :t] * keep[:, :, None],
            "text_mask": out.mask[:, :t] & has[:, None], "has_text": has}


def image_batch(out, present: list[bool]) -> dict[str, torch.Tensor]:
    """Batch entries from a live ``ImageEncoder`` output (ImageFeatures)."""
    has = torch.tensor(present, dtype=torch.bool)
    keep = has.float()[:, None]
    return {"image": out.pooled * keep, "image_regions": out.regions * keep[:, :, None], "has_image": has}
