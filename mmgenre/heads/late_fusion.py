"""`late_fusion`: one classifier per modality, logits averaged with learned per-genre weights."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgenre.explain.extras import modality_weights
from mmgenre.genres import N_GENRES
from mmgenre.heads import register_head
from mmgenre.heads.base import Batch, Head, HeadOutput, ModalityEncoder, masked_softmax


@register_head("late_fusion")
class LateFusionHead(Head):
    """logits = sum_m w[m, g] * logits_m[g], w = softmax over the *present* modalities.

    The weights are learned per genre (a poster may say more about Animation than about Drama)
    and are the same for every movie except that a missing modality gets weight 0 and the rest
    renormalise. A row missing both uses both classifiers' placeholder logits.

    extras: ``modality_weights`` (B, 2, n_genres) over (text, image), summing to 1 over dim 1;
    ``logits_text`` and ``logits_image`` (B, n_genres).
    """

    modalities = ("text", "image")

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(m, self.dims[m], self.hidden) for m in self.modalities})
        self.outs = nn.ModuleDict({m: nn.Sequential(nn.Dropout(self.dropout),
                                                    nn.Linear(self.hidden, self.n_genres))
                                   for m in self.modalities})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities), self.n_genres))

    def forward(self, batch: Batch) -> HeadOutput:
        logits, present = [], []
        for m in self.modalities:
            x = self.feature(batch, m, m)
            has = self.present(batch, m, x.shape[0])
            logits.append(self.outs[m](self.encoders[m](x, has)))
            present.append(has)
        stacked = torch.stack(logits, dim=1)                     # (B, M, G)
        mask = torch.stack(present, dim=1).unsqueeze(-1)         # (B, M, 1)
        scores = self.weight_logits.unsqueeze(0).expand_as(stacked)
        weights = masked_softmax(scores, mask.expand_as(stacked), dim=1)
        extras = {"modality_weights": weights}
        extras.update({f"logits_{m}": lg for m, lg in zip(self.modalities, logits)})
        return HeadOutput((weights * stacked).sum(dim=1), extras)

    def explain_extras(self, out: HeadOutput, ctx: Any) -> dict[str, Any]:
        return {"modality": modality_weights(self.modalities, out.extras["modality_weights"][ctx.row], ctx.targets)}
