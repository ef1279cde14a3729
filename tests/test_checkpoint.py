"""Checkpoints load weights only and refuse what does not match their config."""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from mmgenre.checkpoint import load_checkpoint, save_checkpoint
from mmgenre.errors import InputError
from mmgenre.genres import GENRES
from mmgenre.predict import Predictor

CONFIG = {"model": "text_only", "thresholds": [0.5] * 23, "encoders": {"text": {"name": "minilm"}},
          "head": {"name": "text_only", "dims": {"text": 4}, "n_genres": 23, "hparams": {"hidden": 8}}}


def write(tmp_path, config=CONFIG, weights=None):
    weights = weights if weights is not None else {"w": np.zeros((2, 3), dtype=np.float32)}
    return save_checkpoint(tmp_path / "ck", weights=weights, config=config)


def test_round_trip(tmp_path):
    path = write(tmp_path)
    ck = load_checkpoint(path)
    assert ck.model == "text_only" and ck.config["genres"] == list(GENRES)
    assert ck.weights["w"].shape == (2, 3)
    assert not list(tmp_path.glob(".ck*")), "no staging folder is left behind"


def test_overwrite_is_atomic_and_complete(tmp_path):
    write(tmp_path)
    write(tmp_path, weights={"w": np.ones((1,), dtype=np.float32)})
    assert load_checkpoint(tmp_path / "ck").weights["w"].tolist() == [1.0]


@pytest.mark.parametrize("change,message", [
    ({"model": "evil_head"}, "unknown model"),
    ({"thresholds": [0.5] * 3}, "thresholds"),
    ({"thresholds": [2.0] * 23}, "thresholds"),
    ({"encoders": {"text": {"name": "no-such-encoder"}}}, "unknown text encoder"),
    ({"encoders": {"audio": {"name": "x"}}}, "unknown encoder kind"),
    ({"format_version": 99}, "format_version"),
    ({"genres": ["Drama"]}, "genre list"),
])
def test_bad_configs_are_refused(tmp_path, change, message):
    path = write(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_not_json_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_checkpoint(tmp_path)
    path = write(tmp_path)
    (path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(path)


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned.txt",))


def test_crafted_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path)
    (path / "model.safetensors").unlink()
    (path / "model.pt").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError, match="pickled weights are not loaded"):
        load_checkpoint(path)
    (path / "model.safetensors").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_weights_that_do_not_fit_the_head_are_refused(tmp_path):
    path = write(tmp_path)
    with pytest.raises(InputError, match="do not match"):
        Predictor.from_checkpoint(path)
