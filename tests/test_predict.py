"""Predictor: rebuilt from a checkpoint alone, live features agree with the cached ones, bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmgenre.__main__ import main as cli
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.genres import GENRES
from mmgenre.families.tfidf import TfidfLogReg
from mmgenre.models import list_models
from mmgenre.predict import Predictor


@pytest.fixture(scope="module")
def tiny(tiny_data):
    return MMIMDb.load(tiny_data)


def _movie_with_both(ds, split="test"):
    return next(m for m in ds.split(split) if m.has_poster and m.has_plot)


@pytest.mark.parametrize("model", list_models())
def test_live_prediction_matches_saved_prediction(tiny_checkpoints, tiny, model):
    pred = Predictor.from_checkpoint(tiny_checkpoints / model)
    saved = pd.read_csv(tiny_checkpoints / model / "predictions.csv", dtype={"imdb_id": str})
    checked = 0
    for movie in tiny.split("test"):
        if not (movie.has_plot and movie.has_poster):
            continue
        out = pred.predict(poster=movie.poster_path, plot=movie.plot)
        assert list(out["probabilities"]) == sorted(GENRES, key=lambda g: -out["probabilities"][g])
        row = saved[saved["imdb_id"] == movie.imdb_id].iloc[0]
        live = np.array([out["probabilities"][g] for g in GENRES])
        # cached features are float16, live ones float32: close, not bit-identical
        np.testing.assert_allclose(live, row[[f"p_{g}" for g in GENRES]].to_numpy(float), atol=0.02)
        thr = pred.thresholds
        assert out["predicted"] == [g for g in out["probabilities"] if out["probabilities"][g] >= thr[GENRES.index(g)]]
        checked += 1
    assert checked >= 3


def test_poster_forms_are_equivalent(tiny_checkpoints, tiny):
    pred = Predictor.from_checkpoint(tiny_checkpoints / "gmu")
    movie = _movie_with_both(tiny)
    img = Image.open(movie.poster_path)
    by_path = pred.predict(poster=str(movie.poster_path), plot=movie.plot)["probabilities"]
    by_pil = pred.predict(poster=img, plot=movie.plot)["probabilities"]
    by_bytes = pred.predict(poster=movie.poster_path.read_bytes(), plot=movie.plot)["probabilities"]
    by_array = pred.predict(poster=np.asarray(img.convert("RGB")), plot=movie.plot)["probabilities"]
    for other in (by_pil, by_bytes, by_array):
        assert other == pytest.approx(by_path, abs=1e-6)


def test_missing_modalities(tiny_checkpoints, tiny):
    movie = _movie_with_both(tiny)
    gmu = Predictor.from_checkpoint(tiny_checkpoints / "gmu")
    assert gmu.predict(plot=movie.plot)["used"] == {"poster": False, "plot": True}
    assert gmu.predict(poster=movie.poster_path)["used"] == {"poster": True, "plot": False}
    with pytest.raises(InputError, match="give a poster, a plot, or both"):
        gmu.predict(poster=None, plot="   ")
    with pytest.raises(InputError, match="reads the plot only"):
        Predictor.from_checkpoint(tiny_checkpoints / "text_only").predict(poster=movie.poster_path)
    with pytest.raises(InputError, match="reads the poster only"):
        Predictor.from_checkpoint(tiny_checkpoints / "image_only").predict(plot="a plot")


def test_bad_poster_raises_input_error(tiny_checkpoints, tmp_path):
    pred = Predictor.from_checkpoint(tiny_checkpoints / "early_fusion")
    bad = tmp_path / "poster.jpeg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(InputError, match="poster.jpeg"):
        pred.predict(poster=bad, plot="A heist.")


def test_predict_cli_prints_json(tiny_checkpoints, tiny, capsys):
    movie = _movie_with_both(tiny)
    rc = cli(["predict", "--checkpoint", str(tiny_checkpoints / "late_fusion"), "--poster", str(movie.poster_path),
              "--plot", movie.plot])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "late_fusion" and len(out["probabilities"]) == 23


def test_predict_cli_reports_errors_without_traceback(tiny_checkpoints, tmp_path, capsys):
    rc = cli(["predict", "--checkpoint", str(tmp_path), "--plot", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err


def test_baseline_predictor(tiny_checkpoints):
    pred = Predictor.from_checkpoint(tiny_checkpoints / "tfidf_logreg")
    assert isinstance(pred.model, TfidfLogReg) and pred.encoders == {}
    out = pred.predict(plot="A detective hunts a killer in the city.")
    assert set(out["probabilities"]) == set(GENRES)


def test_checkpoint_naming_the_detector_det_still_loads(tiny_checkpoints, tiny, tmp_path):
    """Checkpoints written before the batch schema call the detector modality "det"."""
    from mmgenre.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(tiny_checkpoints / "detection_fusion")
    config = json.loads(json.dumps(ckpt.config))
    config["head"]["dims"] = {("det" if m == "detector" else m): d for m, d in config["head"]["dims"].items()}
    weights = {k.replace(".detector.", ".det."): v for k, v in ckpt.weights.items()}
    assert any(".det." in k for k in weights)
    old = save_checkpoint(tmp_path / "detection_fusion", weights=weights, config=config)
    movie = _movie_with_both(tiny)
    new = Predictor.from_checkpoint(tiny_checkpoints / "detection_fusion").predict(poster=movie.poster_path, plot=movie.plot)
    legacy = Predictor.from_checkpoint(old).predict(poster=movie.poster_path, plot=movie.plot)
    assert legacy["probabilities"] == pytest.approx(new["probabilities"], abs=1e-6)
