"""Word attributions of genre logits on the plot.

Neural models: captum ``LayerIntegratedGradients`` on the text encoder's word-embedding layer, from a
baseline in which every word piece is the pad token (special tokens such as [CLS]/[SEP] kept), with
the poster features held fixed. All genres go through one ``attribute`` call: the input is repeated
once per genre with one target per row, so the interpolation steps of all genres share batches.
Attributions are summed over the embedding dimension, then over the pieces of each word.

TF-IDF + logistic regression: exact contributions (tf-idf weight x coefficient) of each vocabulary
feature, shared out over the words that make it up, so the word scores sum to logit - intercept.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import LayerIntegratedGradients
from torch import nn

from mmgenre.batching import text_batch
from mmgenre.errors import InputError
from mmgenre.explain.gradcam import no_param_grads

TOKEN_BUDGET = 8192  # tokens per captum internal batch: bounds the memory of long plots


@dataclass
class WordAttribution:
    """Word scores of one plot for G target logits."""

    words: list[str]
    positions: list[list[int]]      # token positions of each word (empty for tf-idf)
    scores: np.ndarray              # (G, n_words)
    delta: np.ndarray               # (G,) sum(attributions) - (f(x) - f(baseline))
    f_diff: np.ndarray              # (G,) f(x) - f(baseline): logit of the plot minus the baseline's
    input_ids: torch.Tensor | None = None  # (1, T) for neural models


class IdsToLogits(nn.Module):
    """(input_ids, attention_mask) (B, T) -> logits (B, n_genres); image / detector features fixed."""

    def __init__(self, head: nn.Module, text_encoder: nn.Module, fixed: dict[str, torch.Tensor],
                 max_tokens: int | None):
        super().__init__()
        self.head, self.text_encoder, self.max_tokens = head, text_encoder, max_tokens
        text_keys = {"text", "text_tokens", "text_mask", "has_text"}
        self.fixed = {k: v.detach() for k, v in fixed.items() if k not in text_keys}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b = input_ids.shape[0]
        batch = {k: v.expand(b, *v.shape[1:]) for k, v in self.fixed.items()}
        batch.update(text_batch(self.text_encoder(input_ids, attention_mask), self.max_tokens, [True] * b))
        return self.head(batch).logits


def pad_baseline(text_encoder, input_ids: torch.Tensor, word_positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``input_ids`` with every word piece replaced by the pad token; special tokens are kept."""
    base = input_ids.clone()
    special = set(getattr(getattr(text_encoder, "tokenizer", None), "all_special_ids", []) or [])
    if special:
        keep = torch.tensor([int(t) in special for t in input_ids.reshape(-1).tolist()]).reshape(input_ids.shape)
        base[~keep] = int(text_encoder.pad_token_id)
    else:
        for pos in word_positions:
            base[..., list(pos)] = int(text_encoder.pad_token_id)
    return base


def integrated_gradients(model: IdsToLogits, plot: str, targets: Sequence[int], *, n_steps: int = 32,
                         ) -> WordAttribution:
    """Layer Integrated Gradients of each target logit, merged into one score per word."""
    if not plot:
        raise InputError("integrated_gradients: the plot is empty")
    if n_steps < 2:
        raise InputError(f"ig_steps must be at least 2, got {n_steps}")
    enc = model.text_encoder
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
    rows = max(2 * g, min(g * n_steps, TOKEN_BUDGET // max(t, 1)))
    lig = LayerIntegratedGradients(model, enc.embedding_layer)
    with no_param_grads(model):
        attr, delta = lig.attribute(ids.expand(g, -1), baselines=base.expand(g, -1), target=[int(x) for x in targets],
                                    additional_forward_args=(mask.expand(g, -1),), n_steps=n_steps,
                                    internal_batch_size=rows, return_convergence_delta=True)
    per_token = attr.sum(dim=-1).detach().double().numpy()          # (G, T)
    scores = np.stack([[per_token[k, p].sum() for p in positions] for k in range(g)]) if words \
        else np.zeros((g, 0))
    delta_np = delta.detach().double().numpy().reshape(-1)
    # captum's delta is sum(attr) - (f(x) - f(baseline)), so the logit difference comes for free.
    f_diff = per_token.sum(axis=1) - delta_np
    return WordAttribution(words, positions, scores.astype(np.float32), delta_np, f_diff, ids)


def tfidf_word_scores(model, plot: str, targets: Sequence[int]) -> WordAttribution:
    """Exact word contributions of a ``TfidfLogReg``: its logit is intercept + sum_j x_j coef_j,
    where x_j is the tf-idf weight of vocabulary feature j (a word or a bigram).

    Each feature's contribution is split equally between its occurrences and, for an n-gram,
    between its n words; stop words and words outside the vocabulary score 0.
    """
    vec = model.vectorizer
    spans = [m.group(0) for m in re.finditer(r"\S+", plot)]
    x = vec.transform([plot]).tocsr()
    contrib = {int(j): float(v) * model.coef[list(targets), j] for j, v in zip(x.indices, x.data)}  # (G,) each
    preprocess, tokenize = vec.build_preprocessor(), vec.build_tokenizer()
    stop = vec.get_stop_words() or frozenset()
    seq = [(tok, w) for w, word in enumerate(spans) for tok in tokenize(preprocess(word)) if tok not in stop]
    lo, hi = vec.ngram_range
    grams = [(" ".join(t for t, _ in seq[i:i + n]), [w for _, w in seq[i:i + n]])
             for n in range(lo, hi + 1) for i in range(len(seq) - n + 1)]
    vocab = vec.vocabulary_
    counts = Counter(gram for gram, _ in grams if gram in vocab)
    scores = np.zeros((len(targets), len(spans)), dtype=np.float64)
    for gram, owners in grams:
        j = vocab.get(gram)
        if j is None or j not in contrib:
            continue
        share = contrib[j] / (counts[gram] * len(owners))
        for w in owners:
            scores[:, w] += share
    logits = model.decision_function([plot])[0][list(targets)].astype(np.float64)
    intercept = np.asarray(model.intercept, dtype=np.float64)[list(targets)]
    delta = scores.sum(axis=1) - (logits - intercept)  # 0 up to float rounding: the scores are exact
    return WordAttribution(spans, [[] for _ in spans], scores.astype(np.float32), delta, logits - intercept)
