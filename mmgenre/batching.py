"""Cached features -> the batch dict every head reads (keys: :mod:`mmgenre.schema`).

Each encoder kind writes its own entries (``mmgenre.encoders.kinds``); this module only
gathers the rows of a fixed list of movies and hands out float32 torch batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mmgenre.encoders.kinds import KINDS
from mmgenre.features import FeatureSet
from mmgenre.genres import N_GENRES
from mmgenre.lazy_rows import LazyRows
from mmgenre.schema import MODALITIES, Batch


@dataclass
class FeatureTable:
    """The features of a fixed list of movies, kept as float16 numpy (sequence features as
    :class:`~mmgenre.lazy_rows.LazyRows` over the memory-mapped cache); batches come out float32."""

    ids: list[str]
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: np.ndarray | slice | None = None) -> Batch:
        idx = slice(None) if idx is None else idx
        out = {}
        for key, arr in self.arrays.items():
            part = np.asarray(arr[idx])
            t = torch.from_numpy(np.ascontiguousarray(part))
            out[key] = t if t.dtype == torch.bool else t.float()
        return out

    def subset(self, rows: np.ndarray) -> "FeatureTable":
        return FeatureTable([self.ids[i] for i in rows],
                            {k: v.take(rows) if isinstance(v, LazyRows) else v[rows] for k, v in self.arrays.items()})

    @property
    def dims(self) -> dict[str, int]:
        """Feature size of each modality in the table, e.g. {"text": 384, "image": 1280}."""
        return {m: int(self.arrays[m].shape[1]) for m in MODALITIES if m in self.arrays}


def build_table(features: dict[str, FeatureSet], ids: list[str], *, sequences: bool,
                max_tokens: int | None = None) -> FeatureTable:
    """Gather the rows of ``ids`` from each encoder kind's cache; ``sequences`` adds per-token /
    per-region features, at most ``max_tokens`` tokens."""
    arrays: dict[str, np.ndarray] = {}
    for kind, fs in features.items():
        arrays.update(KINDS[kind].cached_entries(fs, fs.rows(ids), sequences=sequences, max_tokens=max_tokens))
    return FeatureTable(list(ids), arrays)


@torch.no_grad()
def predict_table(head: nn.Module, table: FeatureTable, batch_size: int = 256) -> np.ndarray:
    """(N, n_genres) probabilities of ``head`` (switched to eval mode) over every row of ``table``."""
    head.eval()
    out = [torch.sigmoid(head(table.batch(slice(start, start + batch_size))).logits)
           for start in range(0, len(table), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, N_GENRES), dtype=np.float32)


def live_batch(encoders: dict, inputs, max_tokens: int | None = None) -> Batch:
    """One movie's batch (B = 1) from live encoders; gradients flow (no ``no_grad`` here).

    ``encoders``: {kind: encoder}; each reads its source of ``inputs`` (``mmgenre.inputs.Inputs``)."""
    batch: Batch = {}
    for enc in encoders.values():
        batch.update(enc.entries([inputs.source(enc.reads)], max_tokens=max_tokens))
    return batch
