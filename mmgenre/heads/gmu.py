"""`gmu`: Gated Multimodal Unit (Arevalo et al. 2017, "Gated Multimodal Units for Information
Fusion"), the MM-IMDb paper's fusion layer, followed by a maxout MLP as in the paper."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgenre.errors import InputError
from mmgenre.genres import N_GENRES
from mmgenre.heads import register_head
from mmgenre.heads.base import Batch, Head, HeadOutput, ModalityEncoder


class Maxout(nn.Module):
    """Linear to ``out * pieces`` units, then the max over each group of ``pieces``."""

    def __init__(self, in_dim: int, out_dim: int, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_dim, out_dim * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(*y.shape[:-1], -1, self.pieces).amax(dim=-1)


@register_head("gmu")
class GMUHead(Head):
    """h_t = tanh(W_t x_t), h_v = tanh(W_v x_v), z = sigmoid(W_z [x_t; x_v]), h = z h_t + (1-z) h_v.

    x_t, x_v are the LayerNorm'ed pooled text / image features. Missing modality: its h is a
    learned placeholder and z is forced to 1 (no image) or 0 (no text); with both missing z is
    left as computed. h -> Dropout -> Maxout(hidden, pieces) -> Dropout -> Linear(n_genres).

    extras: ``gate`` (B, hidden) the z values in [0, 1] (1 = text), ``gate_text_share`` (B,)
    the mean of z, i.e. how much of the fused vector comes from the plot.
    """

    modalities = ("text", "image")

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, *, maxout_pieces: int = 2,
                 **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        if isinstance(maxout_pieces, bool) or not isinstance(maxout_pieces, int) or maxout_pieces < 1:
            raise InputError(f"head 'gmu': maxout_pieces must be a positive int, got {maxout_pieces!r}")
        self._hparams["maxout_pieces"] = maxout_pieces
        self.encoders = nn.ModuleDict({m: ModalityEncoder(m, self.dims[m], self.hidden, nn.Tanh())
                                       for m in self.modalities})
        self.gate = nn.Linear(self.dims["text"] + self.dims["image"], self.hidden)
        self.classify = nn.Sequential(
            nn.Dropout(self.dropout), Maxout(self.hidden, self.hidden, maxout_pieces),
            nn.Dropout(self.dropout), nn.Linear(self.hidden, self.n_genres))

    def forward(self, batch: Batch) -> HeadOutput:
        xt, xv = self.feature(batch, "text", "text"), self.feature(batch, "image", "image")
        has_t = self.present(batch, "text", xt.shape[0])
        has_v = self.present(batch, "image", xv.shape[0])
        ht, hv = self.encoders["text"](xt, has_t), self.encoders["image"](xv, has_v)
        z = torch.sigmoid(self.gate(torch.cat([self.encoders["text"].norm(xt),
                                               self.encoders["image"].norm(xv)], dim=-1)))
        z = torch.where((has_t & ~has_v).unsqueeze(-1), torch.ones_like(z), z)
        z = torch.where((has_v & ~has_t).unsqueeze(-1), torch.zeros_like(z), z)
        h = z * ht + (1.0 - z) * hv
        return HeadOutput(self.classify(h), {"gate": z, "gate_text_share": z.mean(dim=-1)})

    def explain_extras(self, out: HeadOutput, ctx: Any) -> dict[str, Any]:
        return {"modality": {"gate_text_share": float(out.extras["gate_text_share"][ctx.row].detach())}}
