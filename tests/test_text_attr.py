"""mmgenre.explain.text_attr: the fast plot attributions (IG at the text encoder output) against the
deep ones (IG at the word embeddings), on the shipped MPNet text_only checkpoint and on a tiny
random encoder."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import numpy as np
import pytest
import torch

from mmgenre.batching import live_batch
from mmgenre.encoders import build_encoder
from mmgenre.errors import InputError
from mmgenre.explain.text_attr import (IdsToLogits, TokenIntegratedGradients, TokensToLogits,
                                       WordIntegratedGradients)
from mmgenre.heads import build_head
from mmgenre.inputs import prepare_inputs
from mmgenre.predict import Predictor

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "text_only"
TINY_TRANSFORMER = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
PLOT = ("A retired detective is pulled back into a brutal murder case when a young woman vanishes from a "
        "small coastal town. As a storm closes the only road, he and a rookie officer uncover a trail of "
        "blackmail, old family secrets and a killer who seems to know their every move. Meanwhile the "
        "townsfolk prepare a wedding, and a clumsy best man keeps losing the rings, to the delight of the "
        "children who follow him singing silly songs through the rainy streets.")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def both(predictor):
    """The fast and the deep explanation of PLOT (default genres)."""
    return {m: predictor.explain(None, PLOT, text_method=m, faithfulness=True) for m in ("fast", "deep")}


def _logit(predictor, plot: str, genre: int) -> float:
    p = float(predictor.model.probabilities(prepare_inputs(None, plot))[genre])
    return float(np.log(p / (1 - p)))


def test_fast_agrees_with_deep_in_sign_and_top_words(both):
    # On the MPNet text_only the deep method is itself not complete at 32 steps (gaps up to ~55% on
    # this plot, ~16% median on long dev plots; see test_the_explanation_records_the_method), so only
    # a positive agreement is claimed: every genre's word scores correlate, and the two top-8 lists
    # share words (measured here: Pearson 0.22-0.54, overlap 2-5 of 8).
    fast, deep = both["fast"], both["deep"]
    assert fast.words == deep.words and fast.genres == deep.genres and len(fast.genres) >= 3
    overlaps = []
    for g in fast.genres:
        f, d = fast.token_scores[g], deep.token_scores[g]
        assert np.corrcoef(f, d)[0, 1] > 0.1, g
        overlaps.append(len(set(np.argsort(-f)[:8]) & set(np.argsort(-d)[:8])))
    assert min(overlaps) >= 1 and np.median(overlaps) >= 3, overlaps


def test_fast_completeness_is_over_the_same_logit_gap(predictor):
    model = predictor.model
    enc = model.encoders["text"]
    with torch.no_grad():
        batch = live_batch(model.encoders, prepare_inputs(None, PLOT), model.max_tokens)
    targets = [3, 9, 12]
    fast = TokenIntegratedGradients(model.head, enc, batch, model.max_tokens).attribute(PLOT, targets, n_steps=8)
    deep = WordIntegratedGradients(IdsToLogits(model.head, enc, batch, model.max_tokens), enc).attribute(
        PLOT, targets, n_steps=16)
    # both start from the same pad baseline, so f(x) - f(baseline) is the same logit gap
    assert np.allclose(fast.f_diff, deep.f_diff, atol=1e-4)
    # delta is over the word scores: it includes the share of [CLS]/[SEP], so it is an honest gap
    assert np.allclose(fast.scores.sum(axis=1) - fast.f_diff, fast.delta, atol=1e-4)
    # IG itself is complete at the encoder output: words + special tokens = the logit gap
    assert np.allclose(fast.scores.sum(axis=1) + fast.unassigned, fast.f_diff, rtol=0.02, atol=1e-3)
    # on this short plot [CLS]/[SEP] keep a visible share (on 200+ word plots it is ~1%, see the benchmark)
    assert np.all(np.abs(fast.delta) <= 0.25 * np.abs(fast.f_diff) + 1e-3)
    assert fast.method == "fast" and deep.method == "deep" and deep.n_steps == 16


def test_tokens_to_logits_is_the_model_on_the_encoder_output(predictor):
    model = predictor.model
    enc = model.encoders["text"]
    inputs = prepare_inputs(None, PLOT)
    toks = enc.tokenize([PLOT])
    with torch.no_grad():
        batch = live_batch(model.encoders, inputs, model.max_tokens)
        tokens = enc(toks["input_ids"], toks["attention_mask"]).tokens
        logits = TokensToLogits(model.head, enc, batch, toks["attention_mask"], model.max_tokens)(tokens)
        assert torch.allclose(logits, model.head(batch).logits, atol=1e-5)


def test_fast_word_deletion_beats_deleting_the_least_important_words(predictor, both):
    fast = both["fast"]
    from mmgenre.genres import GENRE_INDEX
    k = len(fast.words) // 5
    for g in fast.genres[:3]:
        order = np.argsort(-fast.token_scores[g])
        t = GENRE_INDEX[g]
        drop_top = " ".join(w for i, w in enumerate(fast.words) if i not in set(order[:k]))
        drop_low = " ".join(w for i, w in enumerate(fast.words) if i not in set(order[-k:]))
        assert _logit(predictor, drop_top, t) < _logit(predictor, drop_low, t), g


def test_the_explanation_records_the_method(both):
    fast, deep = both["fast"], both["deep"]
    assert fast.text_method == "fast" and fast.text_steps >= 32
    assert deep.text_method == "deep" and deep.text_steps == 32
    d = fast.to_dict()
    assert d["text_method"] == "fast" and d["text_steps"] == fast.text_steps
    for exp in (fast, deep):
        for g in exp.genres:
            c = exp.faithfulness["ig_completeness"][g]
            assert c["abs"] == pytest.approx(abs(exp.ig_delta[g]), abs=1e-4)
            assert np.isfinite(c["rel"])
    # the fast method converges (its step count adapts); the deep one at a fixed 32 steps does not
    # on MPNet (measured 2-56% here), which is why it is not the default
    fast_rel = [fast.faithfulness["ig_completeness"][g]["rel"] for g in fast.genres]
    deep_rel = [deep.faithfulness["ig_completeness"][g]["rel"] for g in deep.genres]
    assert max(fast_rel) < 0.1 and np.median(fast_rel) < 0.05
    assert np.median(fast_rel) < np.median(deep_rel)


def test_adaptive_steps_double_until_the_delta_is_small(predictor):
    model = predictor.model
    fast = TokenIntegratedGradients(model.head, model.encoders["text"], {}, model.max_tokens)
    loose = fast.attribute(PLOT, [0, 5], n_steps=2, tol=0.99)
    tight = fast.attribute(PLOT, [0, 5], n_steps=2, tol=1e-4, max_steps=64)
    # with MPNet even a 99% tolerance needs a doubling from 2 steps on this plot; a tight one needs more
    assert loose.n_steps & (loose.n_steps - 1) == 0 and loose.n_steps < tight.n_steps
    assert tight.n_steps > 2 and tight.n_steps & (tight.n_steps - 1) == 0  # doubled from 2
    assert np.allclose(loose.f_diff, tight.f_diff)
    # the step count stops growing once captum's delta is within tol (or at the cap)
    numeric = np.abs(tight.scores.sum(axis=1) + tight.unassigned - tight.f_diff)
    assert tight.n_steps == 64 or np.all(numeric <= 1e-4 * np.abs(tight.f_diff) + 1e-5)


def test_fast_runs_on_a_tiny_random_encoder():
    torch.manual_seed(0)
    enc = build_encoder("text", "minilm", pretrained=False, **TINY_TRANSFORMER)
    head = build_head("text_only", {"text": enc.dim}, hidden=16).eval()
    wa = TokenIntegratedGradients(head, enc, {}, None).attribute(PLOT, [0, 7], n_steps=4)
    assert wa.words == PLOT.split() and wa.scores.shape == (2, len(wa.words)) and np.isfinite(wa.scores).all()
    assert np.allclose(wa.scores.sum(axis=1) + wa.unassigned, wa.f_diff, rtol=0.02, atol=1e-4)


def test_bad_text_method_is_an_input_error(predictor):
    with pytest.raises(InputError, match="text_method"):
        predictor.explain(None, PLOT, text_method="shallow")
    with pytest.raises(InputError, match="ig_tolerance"):
        predictor.explain(None, PLOT, ig_tolerance=0)
    with pytest.raises(InputError, match="empty"):
        TokenIntegratedGradients(predictor.model.head, predictor.model.encoders["text"], {}, None).attribute("", [0])


def test_fast_reuses_the_prediction_pass_and_caches_the_baseline(predictor):
    """The fast method given the prediction's encoder output (and a memoised pad baseline) gives the
    same attributions as the one that runs the encoder itself."""
    from mmgenre.explain.text_attr import _BASELINES
    model = predictor.model
    enc = model.encoders["text"]
    toks = enc.tokenize([PLOT])
    with torch.no_grad():
        out = enc(toks["input_ids"], toks["attention_mask"]).tokens
    fast = TokenIntegratedGradients(model.head, enc, {}, model.max_tokens)
    _BASELINES.pop(enc, None)
    plain = fast.attribute(PLOT, [3, 9], n_steps=8)
    assert len(_BASELINES[enc]) == 1                      # the baseline's output was kept
    reused = fast.attribute(PLOT, [3, 9], n_steps=8, encoded=(toks["input_ids"], out))
    assert np.allclose(plain.scores, reused.scores, atol=1e-4) and np.allclose(plain.f_diff, reused.f_diff, atol=1e-5)
    # an encoded pass of another plot is not used
    other = enc.tokenize(["A short and different plot."])
    with torch.no_grad():
        wrong = enc(other["input_ids"], other["attention_mask"]).tokens
    again = fast.attribute(PLOT, [3, 9], n_steps=8, encoded=(other["input_ids"], wrong))
    assert np.allclose(plain.scores, again.scores, atol=1e-4)
