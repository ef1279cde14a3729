"""`attention_fusion`: per-movie attention weights over projected modalities."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgenre.explain.extras import modality_weights
from mmgenre.genres import N_GENRES
from mmgenre.heads import register_head
from mmgenre.heads.base import (Batch, Head, HeadOutput, ModalityEncoder, classifier,
                                masked_softmax)


@register_head("attention_fusion")
class AttentionFusionHead(Head):
    """h_m = GELU(W_m LN(x_m)); w = softmax_m(score(h_m)) over present m; fused = sum_m w_m h_m.

    A missing modality's h_m is a learned placeholder and its weight is masked to 0; a row
    missing every modality attends over the placeholders. ``fused`` goes through a small MLP.

    extras: ``modality_weights`` (B, M) in the order of ``modalities``, rows summing to 1.
    """

    modalities = ("text", "image")

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(m, self.dims[m], self.hidden) for m in self.modalities})
        self.scorer = nn.Sequential(nn.Linear(self.hidden, self.hidden), nn.Tanh(),
                                    nn.Linear(self.hidden, 1))
        self.norm = nn.LayerNorm(self.hidden)
        self.classify = classifier(self.hidden, self.hidden, self.n_genres, self.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        hs, present = [], []
        for m in self.modalities:
            x = self.feature(batch, m, m)
            has = self.present(batch, m, x.shape[0])
            hs.append(self.encoders[m](x, has))
            present.append(has)
        h = torch.stack(hs, dim=1)                                   # (B, M, H)
        weights = masked_softmax(self.scorer(h).squeeze(-1), torch.stack(present, dim=1))
        fused = self.norm((weights.unsqueeze(-1) * h).sum(dim=1))
        return HeadOutput(self.classify(fused), {"modality_weights": weights})

    def explain_extras(self, out: HeadOutput, ctx: Any) -> dict[str, Any]:
        return {"modality": modality_weights(self.modalities, out.extras["modality_weights"][ctx.row], ctx.targets)}
