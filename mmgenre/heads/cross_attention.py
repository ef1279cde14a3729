"""`cross_attention`: bidirectional cross-attention between plot tokens and poster regions."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmgenre.errors import InputError
from mmgenre.explain.cross_attention import cross_attention_maps
from mmgenre.genres import N_GENRES
from mmgenre.heads import register_head
from mmgenre.heads.base import (Batch, Head, HeadOutput, ModalityEncoder, classifier,
                                masked_mean)


class CrossBlock(nn.Module):
    """Post-norm cross-attention layer: x = LN(q + MHA(q, [kv; null])); x = LN(x + FFN(x)).

    A learned null key/value is always appended, so a query whose real keys are all masked
    (no poster / empty plot) attends to it instead of producing NaN.
    """

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        # No attention dropout: the returned weights are meant for explanation.
        self.attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.null = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, L, d), kv (B, S, d), kv_valid (B, S) bool -> (B, L, d), weights (B, h, L, S+1)."""
        b = q.shape[0]
        keys = torch.cat([kv, self.null.expand(b, 1, -1).to(kv.dtype)], dim=1)
        pad = torch.cat([~kv_valid, kv_valid.new_zeros(b, 1)], dim=1)  # True = ignore
        out, weights = self.attn(q, keys, keys, key_padding_mask=pad, need_weights=True,
                                 average_attn_weights=False)
        x = self.norm1(q + self.drop(out))
        return self.norm2(x + self.drop(self.ffn(x))), weights


@register_head("cross_attention")
class CrossAttentionHead(Head):
    """Plot tokens attend to poster regions and regions attend to tokens (1 layer each way).

    Tokens and regions are LayerNorm'ed and projected to ``hidden``; tokens get a learned
    position embedding (up to ``max_tokens``), regions a learned embedding per grid index (up to
    ``max_regions``, e.g. 7x7 = 49 or 14x14 = 196), and each stream a modality embedding. After
    the two cross-attention blocks each stream is mean-pooled over its real positions (a learned
    placeholder when there are none) and concatenated with the projected pooled text and image
    features for the classifier.

    extras (null-key column removed, so a row sums to ``1 - null share``, not to 1):
      ``attn_text_to_image`` (B, heads, T, R) and ``attn_text_to_image_null`` (B, heads, T);
      ``attn_image_to_text`` (B, heads, R, T) and ``attn_image_to_text_null`` (B, heads, R).
    Masked keys (padding, a missing modality) get weight 0; rows for padded tokens, or for the
    regions of a movie without a poster, are all zero (null share included).
    """

    modalities = ("text", "image")
    uses_sequences = True
    # 128-d and 64 plot tokens keep an epoch over ~3k movies at a few seconds on 2 CPU cores.
    default_hidden = 128
    default_max_tokens = 64

    def __init__(self, dims: dict[str, int], n_genres: int = N_GENRES, *, n_heads: int = 4,
                 max_tokens: int = 512, max_regions: int = 256, **kw: Any) -> None:
        super().__init__(dims, n_genres, **kw)
        for value, what in ((n_heads, "n_heads"), (max_tokens, "max_tokens"),
                            (max_regions, "max_regions")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"head 'cross_attention': {what} must be a positive int, got {value!r}")
        if self.hidden % n_heads:
            raise InputError(f"head 'cross_attention': hidden={self.hidden} is not divisible by "
                             f"n_heads={n_heads}")
        self._hparams.update(n_heads=n_heads, max_tokens=max_tokens, max_regions=max_regions)
        d, dt, di = self.hidden, self.dims["text"], self.dims["image"]
        self.token_proj = nn.Sequential(nn.LayerNorm(dt), nn.Linear(dt, d))
        self.region_proj = nn.Sequential(nn.LayerNorm(di), nn.Linear(di, d))
        self.token_pos = nn.Parameter(torch.randn(max_tokens, d) * 0.02)
        self.region_pos = nn.Parameter(torch.randn(max_regions, d) * 0.02)
        self.modality_emb = nn.Parameter(torch.randn(2, d) * 0.02)   # 0 = text, 1 = image
        self.text_to_image = CrossBlock(d, n_heads, self.dropout)
        self.image_to_text = CrossBlock(d, n_heads, self.dropout)
        self.stream_placeholders = nn.Parameter(torch.randn(2, d) * 0.02)
        self.pooled = nn.ModuleDict({m: ModalityEncoder(m, self.dims[m], d) for m in self.modalities})
        self.classify = classifier(4 * d, d, self.n_genres, self.dropout)

    def forward(self, batch: Batch) -> HeadOutput:
        tokens = self.feature(batch, "text_tokens", "text", ndim=3)
        regions = self.feature(batch, "image_regions", "image", ndim=3)
        b, t, r = tokens.shape[0], tokens.shape[1], regions.shape[1]
        if regions.shape[0] != b:
            raise InputError(f"head 'cross_attention': text_tokens has {b} rows, image_regions "
                             f"{regions.shape[0]}")
        if t > self.token_pos.shape[0] or r > self.region_pos.shape[0]:
            raise InputError(f"head 'cross_attention': T={t} tokens / R={r} regions exceed "
                             f"max_tokens={self.token_pos.shape[0]} / max_regions="
                             f"{self.region_pos.shape[0]}")
        has_t, has_v = self.present(batch, "text", b), self.present(batch, "image", b)
        mask = batch.get("text_mask")
        mask = torch.ones(b, t, dtype=torch.bool, device=tokens.device) if mask is None else mask.bool()
        if mask.shape != (b, t):
            raise InputError(f"head 'cross_attention': batch['text_mask'] has shape "
                             f"{tuple(mask.shape)}, expected {(b, t)}")
        tok_valid = mask & has_t.unsqueeze(1)                        # (B, T)
        reg_valid = has_v.unsqueeze(1).expand(b, r)                  # (B, R)

        tok = self.token_proj(tokens) + self.token_pos[:t] + self.modality_emb[0]
        reg = self.region_proj(regions) + self.region_pos[:r] + self.modality_emb[1]
        tok_out, w_ti = self.text_to_image(tok, reg, reg_valid)
        reg_out, w_it = self.image_to_text(reg, tok, tok_valid)

        tok_pool, any_t = masked_mean(tok_out, tok_valid)
        reg_pool, any_v = masked_mean(reg_out, reg_valid)
        tok_pool = torch.where(any_t.unsqueeze(-1), tok_pool, self.stream_placeholders[0])
        reg_pool = torch.where(any_v.unsqueeze(-1), reg_pool, self.stream_placeholders[1])
        pooled = [self.pooled[m](self.feature(batch, m, m), has)
                  for m, has in (("text", has_t), ("image", has_v))]
        logits = self.classify(torch.cat([tok_pool, reg_pool, *pooled], dim=-1))

        # Zero the rows of queries that are not real (padding tokens, regions of no poster).
        q_t = tok_valid[:, None, :, None].to(w_ti.dtype)
        q_v = reg_valid[:, None, :, None].to(w_it.dtype)
        w_ti, w_it = w_ti * q_t, w_it * q_v
        extras = {"attn_text_to_image": w_ti[..., :r], "attn_text_to_image_null": w_ti[..., r],
                  "attn_image_to_text": w_it[..., :t], "attn_image_to_text_null": w_it[..., t]}
        return HeadOutput(logits, extras)

    def explain_extras(self, out: HeadOutput, ctx: Any) -> dict[str, Any]:
        """Word-level attention maps, when the plot's words were attributed and there is a poster."""
        if ctx.words is None or ctx.grid is None:
            return {}
        return {"cross_attention": cross_attention_maps(out.extras, ctx.words, ctx.positions, ctx.grid, ctx.row)}
