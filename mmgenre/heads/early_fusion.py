"""`early_fusion`: concatenate the normalised pooled text and image features, then an MLP."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgenre.genres import N_GENRES
from mmgenre.heads import register_head
from mmgenre.heads.base import Batch, Head, HeadOutput, input_norm


@register_head("early_fusion")
class EarlyFusionHead(Head):
    """[LN(text); LN(image)] -> Linear(hidden) -> GELU -> Dropout -> Linear(n_genres).

    A missing modality's normalised input is replaced by a learned input-space placeholder, so
    the MLP sees "no poster" / "no plot" as a distinct, learned input rather than zeros.
    """

    modalities = ("text", "image")

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        self.norms = nn.ModuleDict({m: input_norm(m, self.dims[m]) for m in self.modalities})
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(self.dims[m]) * 0.02) for m in self.modalities})
        self.mlp = nn.Sequential(
            nn.Linear(sum(self.dims.values()), self.hidden), nn.GELU(),
            nn.Dropout(self.dropout), nn.Linear(self.hidden, self.n_genres))

    def forward(self, batch: Batch) -> HeadOutput:
        parts = []
        for m in self.modalities:
            x = self.feature(batch, m, m)
            z = self.norms[m](x)
            present = self.present(batch, m, x.shape[0]).unsqueeze(-1)
            parts.append(torch.where(present, z, self.placeholders[m].to(z.dtype)))
        return HeadOutput(self.mlp(torch.cat(parts, dim=-1)))
