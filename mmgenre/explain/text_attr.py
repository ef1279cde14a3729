"""Word attributions of genre logits on the plot: ``WordIntegratedGradients(forward, encoder)``.

captum ``LayerIntegratedGradients`` on the text encoder's word-embedding layer, from a baseline in
which every word piece is the pad token (special tokens such as [CLS]/[SEP] kept); ``forward``
maps (input_ids, attention_mask) to logits, e.g. ``IdsToLogits`` (a head over the text encoder,
the poster features held fixed). All genres go through one ``attribute`` call: the input is
repeated once per genre with one target per row, and the text encoder runs once per
interpolation step for all genres (``_SharedEncoder``), with one backward pass per genre.
Attributions are summed over the embedding dimension, then over the pieces of each word.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from mmgenre import schema
from mmgenre.encoders.kinds import TextFeatures
from mmgenre.errors import InputError
from mmgenre.explain.gradcam import no_param_grads

TOKEN_BUDGET = 4096  # distinct tokens per captum internal batch (~1 GB of activations for MiniLM)


@dataclass
class WordAttribution:
    """Word scores of one plot for G target logits."""

    words: list[str]
    positions: list[list[int]]      # token positions of each word (empty without tokens, e.g. tf-idf)
    scores: np.ndarray              # (G, n_words)
    delta: np.ndarray               # (G,) sum(attributions) - (f(x) - f(baseline))
    f_diff: np.ndarray              # (G,) f(x) - f(baseline): logit of the plot minus the baseline's
    input_ids: torch.Tensor | None = None  # (1, T) for neural models


class IdsToLogits(nn.Module):
    """(input_ids, attention_mask) (B, T) -> logits (B, n_genres); image / detector features fixed.

    ``copies`` > 1 declares that the batch holds groups of ``copies`` adjacent identical rows (the
    layout of a captum call with the input repeated once per genre): the text encoder then runs
    once per group (see ``_SharedEncoder``). Rows that turn out not to be identical are all run.
    """

    def __init__(self, head: nn.Module, text_encoder: nn.Module, fixed: dict[str, torch.Tensor],
                 max_tokens: int | None, copies: int = 1):
        super().__init__()
        self.head, self.text_encoder, self.max_tokens, self.copies = head, text_encoder, max_tokens, copies
        text_keys = schema.keys(text_encoder.kind)
        self.fixed = {k: v.detach() for k, v in fixed.items() if k not in text_keys}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b = input_ids.shape[0]
        batch = {k: v.expand(b, *v.shape[1:]) for k, v in self.fixed.items()}
        enc = self.text_encoder
        if self.copies > 1 and b % self.copies == 0 and hasattr(enc, "forward_embeddings"):
            # The word-embedding layer is called here, so captum's layer hook swaps in the
            # interpolated embeddings; the rest of the encoder runs from them.
            feats = shared_encode(enc, enc.embedding_layer(input_ids), attention_mask, self.copies)
        else:
            feats = enc(input_ids, attention_mask)
        batch.update(enc.feature_entries(feats, [True] * b, self.max_tokens))
        return self.head(batch).logits


def _repeat(t: torch.Tensor, copies: int) -> torch.Tensor:
    """(S, ...) -> (S * copies, ...), each row repeated ``copies`` times in a row."""
    return t.unsqueeze(1).expand(t.shape[0], copies, *t.shape[1:]).reshape(t.shape[0] * copies, *t.shape[1:])


class _SharedEncoder(torch.autograd.Function):
    """Text encoder on groups of ``copies`` identical embedding rows: one forward per group,
    then one backward per copy, each with that copy's own output gradient.

    With the plot repeated once per genre, every IG step holds G identical rows whose gradients
    differ only through their target logit. This runs the encoder forward once instead of G times
    (about a third less work for 3 genres) and still gives each row its exact gradient.
    """

    @staticmethod
    def forward(ctx, emb, mask, encoder, copies):
        with torch.enable_grad():
            x = emb.detach()[::copies].clone().requires_grad_(True)
            out = encoder.forward_embeddings(x, mask[::copies])
        ctx.x, ctx.outs, ctx.copies = x, (out.pooled, out.tokens), copies
        return _repeat(out.pooled.detach(), copies), _repeat(out.tokens.detach(), copies)

    @staticmethod
    def backward(ctx, grad_pooled, grad_tokens):
        s, c = ctx.x.shape[0], ctx.copies
        grads = []
        for k in range(c):
            outs = (grad_pooled.reshape(s, c, *grad_pooled.shape[1:])[:, k],
                    grad_tokens.reshape(s, c, *grad_tokens.shape[1:])[:, k])
            (gx,) = torch.autograd.grad(ctx.outs, ctx.x, outs, retain_graph=k < c - 1)
            grads.append(gx)
        ctx.x = ctx.outs = None
        return torch.stack(grads, dim=1).reshape(s * c, *grads[0].shape[1:]), None, None, None


def shared_encode(encoder, emb: torch.Tensor, mask: torch.Tensor, copies: int) -> TextFeatures:
    """``encoder.forward_embeddings(emb, mask)``, computed once per group of ``copies`` identical rows."""
    grouped, m = emb.reshape(-1, copies, *emb.shape[1:]), mask.reshape(-1, copies, mask.shape[-1])
    identical = torch.equal(grouped, grouped[:, :1].expand_as(grouped)) and torch.equal(m, m[:, :1].expand_as(m))
    if not identical:
        return encoder.forward_embeddings(emb, mask)
    if not (torch.is_grad_enabled() and emb.requires_grad):
        out = encoder.forward_embeddings(emb[::copies], mask[::copies])
        return TextFeatures(_repeat(out.pooled, copies), _repeat(out.tokens, copies), mask.bool())
    pooled, tokens = _SharedEncoder.apply(emb, mask, encoder, copies)
    return TextFeatures(pooled, tokens, mask.bool())


def pad_baseline(text_encoder, input_ids: torch.Tensor, word_positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``input_ids`` (1, T) with every word piece replaced by the pad token.

    A token is replaced when it belongs to a word (so an [UNK] piece of a word is too) or is not a
    special token of the tokenizer; [CLS]/[SEP]/<s>/</s> stay, so only the words change.
    """
    base = input_ids.clone()
    replace = torch.zeros(input_ids.shape[-1], dtype=torch.bool)
    for pos in word_positions:
        replace[list(pos)] = True
    special = set(getattr(getattr(text_encoder, "tokenizer", None), "all_special_ids", None) or [])
    if special:
        replace |= torch.tensor([int(t) not in special for t in input_ids[0].tolist()])
    base[..., replace] = int(text_encoder.pad_token_id)
    return base


class WordIntegratedGradients:
    """Layer Integrated Gradients of ``forward``'s target logits, merged into one score per word.

    ``forward``: (input_ids, attention_mask) (B, T) -> logits; when it has a ``copies`` attribute
    (``IdsToLogits``) it is told how many copies of the plot each step holds.
    """

    def __init__(self, forward: nn.Module, text_encoder):
        self.forward, self.encoder = forward, text_encoder

    def attribute(self, plot: str, targets: Sequence[int], *, n_steps: int = 32) -> WordAttribution:
        if not plot:
            raise InputError("Integrated Gradients: the plot is empty")
        if n_steps < 2:
            raise InputError(f"ig_steps must be at least 2, got {n_steps}")
        enc = self.encoder
        toks = enc.tokenize([plot])
        ids, mask = toks["input_ids"], toks["attention_mask"]
        word_list = enc.words(plot, ids[0])
        words, positions = [w for w, _ in word_list], [list(p) for _, p in word_list]
        base = pad_baseline(enc, ids, positions)
        g = len(targets)
        if g == 0:
            empty = np.zeros(0, dtype=np.float32)
            return WordAttribution(words, positions, np.zeros((0, len(words)), np.float32), empty, empty, ids)
        t = ids.shape[1]
        # captum's internal batch counts every row; the G copies of a step cost one encoder pass
        rows = g * max(2, min(n_steps, TOKEN_BUDGET // max(t, 1)))
        lig = LayerIntegratedGradients(self.forward, enc.embedding_layer)
        shares = hasattr(self.forward, "copies")
        if shares:
            self.forward.copies = g  # captum's rows: for each step, the G copies of the plot side by side
        try:
            with no_param_grads(self.forward):
                attr, delta = lig.attribute(ids.expand(g, -1), baselines=base.expand(g, -1),
                                            target=[int(x) for x in targets],
                                            additional_forward_args=(mask.expand(g, -1),), n_steps=n_steps,
                                            internal_batch_size=rows, return_convergence_delta=True)
        finally:
            if shares:
                self.forward.copies = 1
        per_token = attr.sum(dim=-1).detach().double().numpy()          # (G, T)
        scores = np.stack([[per_token[k, p].sum() for p in positions] for k in range(g)]) if words \
            else np.zeros((g, 0))
        delta_np = delta.detach().double().numpy().reshape(-1)
        # captum's delta is sum(attr) - (f(x) - f(baseline)), so the logit difference comes for free.
        f_diff = per_token.sum(axis=1) - delta_np
        return WordAttribution(words, positions, scores.astype(np.float32), delta_np, f_diff, ids)
