"""Word attributions of genre logits on the plot: ``WordIntegratedGradients(forward, encoder)``.

captum ``LayerIntegratedGradients`` on the text encoder's word-embedding layer, from a baseline in
which every word piece is the pad token (special tokens such as [CLS]/[SEP] kept); ``forward``
maps (input_ids, attention_mask) to logits, e.g. ``IdsToLogits`` (a head over the text encoder,
the poster features held fixed). All genres go through one ``attribute`` call: the input is
repeated once per genre with one target per row, and the text encoder runs once per
interpolation step for all genres (``_SharedEncoder``), with one backward pass per genre.
Attributions are summed over the embedding dimension, then over the pieces of each word.

``TokenIntegratedGradients(head, encoder, fixed, max_tokens)`` is the fast method: Integrated
Gradients at the encoder's output (the token features the head pools and reads), from the
encoder's output on the same pad baseline. The encoder runs twice (plot and baseline); every IG
step only runs the head, so the step count adapts to the convergence delta at almost no cost.
f(x) - f(baseline) is the same as the deep method's; each word gets the attributions of its own
pieces' output features. [CLS]/[SEP] outputs also change with the plot, and their share is left in
the delta (so completeness over the word scores stays honest).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from torch import nn

from mmgenre import schema
from mmgenre.encoders.kinds import TextFeatures
from mmgenre.errors import InputError
from mmgenre.explain.gradcam import no_param_grads

TOKEN_BUDGET = 4096  # distinct tokens per captum internal batch (~1 GB of activations for MiniLM)
TEXT_METHODS = ("fast", "deep")  # fast: IG at the encoder output; deep: IG at the word embeddings
# How reports and pages name each method (one wording everywhere)
TEXT_METHOD_DESCRIPTIONS = {"fast": "fast: Integrated Gradients at the text encoder's output",
                            "deep": "exact: Integrated Gradients at the word embeddings, through the whole encoder"}
MAX_FAST_STEPS = 256             # cap of the fast method's adaptive step count
BASELINE_CACHE = 16              # pad-baseline encoder outputs kept per encoder (see baseline_tokens)


@dataclass
class WordAttribution:
    """Word scores of one plot for G target logits."""

    words: list[str]
    positions: list[list[int]]      # token positions of each word (empty without tokens, e.g. tf-idf)
    scores: np.ndarray              # (G, n_words)
    delta: np.ndarray               # (G,) sum(attributions) - (f(x) - f(baseline))
    f_diff: np.ndarray              # (G,) f(x) - f(baseline): logit of the plot minus the baseline's
    input_ids: torch.Tensor | None = None  # (1, T) for neural models
    method: str | None = None       # "deep" (word embeddings), "fast" (encoder output); None: not said
    n_steps: int = 0                # IG steps used (0: not IG)
    unassigned: np.ndarray | None = None  # (G,) fast method: attributions of the [CLS]/[SEP] outputs


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


_BASELINES: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def baseline_tokens(enc, base_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The encoder's output tokens (1, T, D) on a pad baseline (``pad_baseline``), memoised.

    A pad baseline is [CLS] pad ... pad [SEP]: it depends only on the plot's length, and long
    plots are all cut at ``max_length``, so most movies share one. An encoder with trainable
    weights (being fine-tuned) is never cached, since its outputs change.
    """
    if enc.training or any(p.requires_grad for p in enc.parameters()):
        with torch.no_grad():
            return enc(base_ids, mask).tokens
    cache = _BASELINES.setdefault(enc, OrderedDict())
    key = base_ids.cpu().numpy().tobytes() + mask.cpu().numpy().tobytes()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with torch.no_grad():
        out = enc(base_ids, mask).tokens.detach()
    cache[key] = out
    while len(cache) > BASELINE_CACHE:
        cache.popitem(last=False)
    return out


def _tokenized_words(enc, plot: str, n_steps: int):
    """The plot's ``input_ids`` / ``attention_mask`` (1, T), its words and their token positions."""
    if not plot:
        raise InputError("Integrated Gradients: the plot is empty")
    if n_steps < 2:
        raise InputError(f"ig_steps must be at least 2, got {n_steps}")
    toks = enc.tokenize([plot])
    ids, mask = toks["input_ids"], toks["attention_mask"]
    word_list = enc.words(plot, ids[0])
    return ids, mask, [w for w, _ in word_list], [list(p) for _, p in word_list]


def _no_targets(words, positions, ids, *, method: str, n_steps: int) -> "WordAttribution":
    empty = np.zeros(0, dtype=np.float32)
    return WordAttribution(words, positions, np.zeros((0, len(words)), np.float32), empty, empty, ids,
                           method=method, n_steps=n_steps)


class WordIntegratedGradients:
    """Layer Integrated Gradients of ``forward``'s target logits, merged into one score per word.

    ``forward``: (input_ids, attention_mask) (B, T) -> logits; when it has a ``copies`` attribute
    (``IdsToLogits``) it is told how many copies of the plot each step holds.
    """

    def __init__(self, forward: nn.Module, text_encoder):
        self.forward, self.encoder = forward, text_encoder

    def attribute(self, plot: str, targets: Sequence[int], *, n_steps: int = 32) -> WordAttribution:
        enc = self.encoder
        ids, mask, words, positions = _tokenized_words(enc, plot, n_steps)
        base = pad_baseline(enc, ids, positions)
        g = len(targets)
        if g == 0:
            return _no_targets(words, positions, ids, method="deep", n_steps=n_steps)
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
        return WordAttribution(words, positions, scores.astype(np.float32), delta_np, f_diff, ids,
                               method="deep", n_steps=n_steps)


def _word_scores(per_token: np.ndarray, positions: list[list[int]]) -> np.ndarray:
    """(G, T) token attributions -> (G, n_words): the sum over each word's pieces."""
    if not positions:
        return np.zeros((per_token.shape[0], 0))
    return np.stack([[row[p].sum() for p in positions] for row in per_token])


class TokensToLogits(nn.Module):
    """Output token features (B, T, D) of the text encoder -> logits (B, n_genres).

    Pools them as the encoder does (``_features``) and feeds the head the same entries as the live
    batch; the image / detector features stay fixed.
    """

    def __init__(self, head: nn.Module, text_encoder, fixed: dict[str, torch.Tensor], mask: torch.Tensor,
                 max_tokens: int | None):
        super().__init__()
        self.head, self.text_encoder, self.mask, self.max_tokens = head, text_encoder, mask, max_tokens
        text_keys = schema.keys(text_encoder.kind)
        self.fixed = {k: v.detach() for k, v in fixed.items() if k not in text_keys}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        batch = {k: v.expand(b, *v.shape[1:]) for k, v in self.fixed.items()}
        feats = self.text_encoder._features(tokens, self.mask.expand(b, -1))
        batch.update(self.text_encoder.feature_entries(feats, [True] * b, self.max_tokens))
        return self.head(batch).logits


class TokenIntegratedGradients:
    """The fast method: IG of the head's target logits at the text encoder's output token features.

    The step count starts at ``n_steps`` and doubles (up to ``max_steps``) until captum's
    convergence delta is at most ``tol`` * max(|f(x) - f(baseline)|, 1) for every target genre.
    """

    def __init__(self, head: nn.Module, text_encoder, fixed: dict[str, torch.Tensor], max_tokens: int | None):
        if not hasattr(text_encoder, "_features"):
            raise InputError(f"text encoder {getattr(text_encoder, 'name', '?')!r} does not expose its pooling "
                             "(_features), so the fast method cannot run on it; use text_method='deep'")
        self.head, self.encoder, self.fixed, self.max_tokens = head, text_encoder, fixed, max_tokens

    def attribute(self, plot: str, targets: Sequence[int], *, n_steps: int = 16, tol: float = 0.01,
                  max_steps: int = MAX_FAST_STEPS, encoded: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> WordAttribution:
        """``encoded``: (input_ids (1, T), output tokens (1, T, D)) of this plot from a pass the caller
        already ran (the prediction's); used when its ids are this plot's, so the encoder does not
        run on the plot again."""
        enc = self.encoder
        ids, mask, words, positions = _tokenized_words(enc, plot, n_steps)
        g = len(targets)
        if g == 0:
            return _no_targets(words, positions, ids, method="fast", n_steps=0)
        if encoded is not None and torch.equal(encoded[0].to(ids.device), ids) \
                and encoded[1].shape[:2] == ids.shape:
            plot_tokens = encoded[1].detach()
        else:
            with torch.no_grad():
                plot_tokens = enc(ids, mask).tokens
        base_tokens = baseline_tokens(enc, pad_baseline(enc, ids, positions), mask)
        x, base = plot_tokens.expand(g, -1, -1), base_tokens.expand(g, -1, -1)
        forward = TokensToLogits(self.head, enc, self.fixed, mask, self.max_tokens)
        target = [int(t) for t in targets]
        ig = IntegratedGradients(forward)
        steps = max(int(n_steps), 2)
        rows = max(g * 2, TOKEN_BUDGET * 8 // max(ids.shape[1], 1))  # head-only steps are cheap
        with no_param_grads(forward):
            with torch.no_grad():
                f_diff = (forward(x[:1]) - forward(base[:1]))[0, target].double().numpy()
            while True:
                attr, delta = ig.attribute(x, baselines=base, target=target, n_steps=steps,
                                           internal_batch_size=rows, return_convergence_delta=True)
                delta_np = delta.detach().double().numpy().reshape(-1)
                # a gap under 1 logit only has to converge to tol logits: float32 noise would
                # otherwise drive tiny gaps to the cap
                if steps >= max_steps or np.all(np.abs(delta_np) <= tol * np.maximum(np.abs(f_diff), 1.0)):
                    break
                steps = min(2 * steps, max_steps)
        per_token = attr.sum(dim=-1).detach().double().numpy()          # (G, T)
        scores = _word_scores(per_token, positions)
        # completeness over the words: what the special tokens took is part of the gap
        word_delta = scores.sum(axis=1) - f_diff
        return WordAttribution(words, positions, scores.astype(np.float32), word_delta, f_diff, ids,
                               method="fast", n_steps=steps, unassigned=per_token.sum(axis=1) - scores.sum(axis=1))
