"""Encoder weight digests: recorded in describe() (so in caches and checkpoints) and checked when a
checkpoint rebuilds its encoders, so a head never silently reads another weights file's features."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from mmgenre.checkpoint import save_checkpoint
from mmgenre.encoders import build_encoder
from mmgenre.errors import InputError
from mmgenre.families.neural import NeuralModel, _shared_encoder
from mmgenre.genres import GENRES
from mmgenre.heads import build_head
from mmgenre.predict import Predictor


@pytest.fixture(scope="module")
def lite0():
    return _shared_encoder("image", "efficientnet-lite0", None, True)  # the instance checkpoints share


def test_the_digest_is_stable_per_weights_file_and_tells_files_apart(lite0):
    again = build_encoder("image", "efficientnet-lite0")
    assert again is not lite0 and again.weights_digest() == lite0.weights_digest()
    assert lite0.describe()["weights_digest"] == lite0.weights_digest()
    assert len(lite0.weights_digest()) == 16
    random_init = build_encoder("image", "efficientnet-lite0", pretrained=False)
    assert random_init.weights_digest() != lite0.weights_digest()
    nudged = copy.deepcopy(lite0)
    with torch.no_grad():
        next(nudged.parameters()).mul_(1.01)  # one tensor scaled: a (slightly) different weights file
    assert nudged.weights_digest() != lite0.weights_digest()


def _image_only_checkpoint(path, encoder, info):
    torch.manual_seed(0)
    head = build_head("image_only", {"image": encoder.dim}, len(GENRES), hidden=16).eval()
    weights, head_cfg = NeuralModel(head, {"image": encoder}, None).state()
    config = {"model": "image_only", "head": head_cfg, "thresholds": [0.5] * len(GENRES),
              "encoders": {"image": info}}
    return save_checkpoint(path, weights=weights, config=config)


def test_a_checkpoint_trained_on_other_weights_is_refused_and_left_intact(lite0, tmp_path):
    info = lite0.describe()
    good = _image_only_checkpoint(tmp_path / "good", lite0, info)
    assert Predictor.from_checkpoint(good).encoders["image"] is lite0  # same weights: loads, shares
    other = _image_only_checkpoint(tmp_path / "other", lite0, info | {"weights_digest": "0123456789abcdef"})
    before = {f.name: f.read_bytes() for f in other.iterdir()}
    with pytest.raises(InputError, match=r"other weights \(digest '0123456789abcdef'\).*retrain"):
        Predictor.from_checkpoint(other)
    assert {f.name: f.read_bytes() for f in other.iterdir()} == before
    # a checkpoint from before digests were recorded, or on a random-init encoder, is not checked
    old = {k: v for k, v in info.items() if k != "weights_digest"}
    assert Predictor.from_checkpoint(_image_only_checkpoint(tmp_path / "old", lite0, old)) is not None
    unchecked = info | {"weights_digest": "0123456789abcdef", "pretrained": False}
    cfg = json.loads((other / "config.json").read_text())
    assert cfg["encoders"]["image"]["weights_digest"] == "0123456789abcdef"
    ckpt = _image_only_checkpoint(tmp_path / "random", lite0, unchecked)
    rebuilt = Predictor.from_checkpoint(ckpt)  # a random-init encoder is built, and not checked
    assert rebuilt.encoders["image"] is not lite0 and np.isfinite(rebuilt.thresholds).all()


def test_a_tuned_encoder_describes_the_weights_it_was_tuned_from(lite0):
    from mmgenre.tuning import TuningSpec, prepare_for_tuning
    enc = copy.deepcopy(lite0)
    base = enc.weights_digest()
    prepare_for_tuning({"image": enc}, TuningSpec("full"))
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.01)  # as an optimiser step would
    assert enc.weights_digest() != base
    assert enc.describe()["weights_digest"] == base  # what loading rebuilds from the base and checks
