"""mmgenre.analysis: dataset tables on the generated tiny MM-IMDb, error/disagreement browsing
and comparisons on hand-made checkpoint folders whose answers are known."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmgenre import analysis as A
from mmgenre import metrics as M
from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.genres import GENRE_INDEX, GENRES, N_GENRES


@pytest.fixture(scope="module")
def ds(tiny_data) -> MMIMDb:
    return MMIMDb.load(tiny_data)


def _write_checkpoint(folder: Path, rows: list[dict], thresholds: list[float],
                      metrics: dict | None = None) -> Path:
    """A checkpoint folder with only the files the analysis reads (no weights needed)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": folder.name, "thresholds": thresholds}))
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    frame = pd.DataFrame([{"imdb_id": r["id"], "split": r.get("split", "test"),
                           "true_genres": "|".join(r["true"]), "has_poster": True, "has_plot": True,
                           **{f"p_{g}": r["p"].get(g, 0.0) for g in GENRES}} for r in rows])
    frame.to_csv(folder / "predictions.csv", index=False)
    return folder


# ------------------------------------------------------------------------------ dataset tables
def test_split_counts_and_missing_modalities_match_the_movies(ds):
    counts = A.split_counts(ds).set_index("split")
    assert list(counts.index) == ["train", "dev", "test", "all"]
    assert counts.loc["train", "movies"] == 24 and counts.loc["all", "movies"] == 48
    assert counts.loc["all", "with_poster"] == sum(m.has_poster for m in ds)
    assert counts.loc["all", "with_plot"] == sum(m.has_plot for m in ds)
    missing = A.missing_modalities(ds).set_index("split")
    assert missing[["poster_and_plot", "poster_only", "plot_only"]].to_numpy().sum() == 48
    assert missing["plot_only"].sum() == len(ds.report.missing_posters)
    assert missing["poster_only"].sum() == len(ds.report.empty_plots)


def test_genre_frequencies_and_cooccurrence_agree_with_labels(ds):
    freq = A.genre_frequencies(ds)
    assert len(freq) == 3 * N_GENRES
    train = freq[freq["split"] == "train"].set_index("genre")["movies"]
    y = ds.labels(ds.splits["train"])
    assert train.tolist() == y.sum(axis=0).astype(int).tolist()
    assert (train > 0).all()  # the generator puts every genre in train
    co = A.cooccurrence(ds)
    assert co.shape == (N_GENRES, N_GENRES) and (co.to_numpy() == co.to_numpy().T).all()
    all_y = ds.labels(list(ds.movies))
    assert np.diag(co.to_numpy()).tolist() == all_y.sum(axis=0).astype(int).tolist()
    a, b = GENRE_INDEX["Drama"], GENRE_INDEX["Comedy"]
    assert co.iloc[a, b] == int((all_y[:, a] * all_y[:, b]).sum())
    with pytest.raises(InputError, match="unknown split"):
        A.cooccurrence(ds, "validation")


def test_plot_lengths_and_poster_sizes_read_headers(ds, tiny_data):
    lengths = A.plot_lengths(ds)
    assert len(lengths) == 48 and (lengths.loc[lengths["words"] == 0, "chars"] == 0).all()
    sizes = A.poster_sizes(ds)
    assert len(sizes) == 48 - len(ds.report.missing_posters)
    assert set(sizes["width"]) == {64} and set(sizes["height"]) == {96}
    assert A.poster_size(tiny_data / "split.json") is None  # not an image: no crash


def test_poster_size_does_not_decode_pixels(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    Image.new("RGB", (30, 40)).save(path)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("pixels were decoded"))
    assert A.poster_size(path) == (30, 40)


def test_find_movies_filters_and_labels_are_plain_text(ds):
    drama = A.find_movies(ds, genre="drama")
    assert drama and all("Drama" in m.genres for m in drama)
    first = ds.split("test")[0]
    word = first.title.split()[0].upper()
    hits = A.find_movies(ds, split="test", query=word)
    assert first in hits and all(m.split == "test" for m in hits)
    assert A.find_movies(ds, ids=[first.imdb_id, "missing"]) == [first]
    assert A.movie_label(first).endswith(first.imdb_id)
    with pytest.raises(InputError, match="unknown genre"):
        A.find_movies(ds, genre="Cartoons")


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture()
def two_models(tmp_path) -> Path:
    thr = [0.5] * N_GENRES
    rows_a = [
        {"id": "0000001", "true": ["Drama"], "p": {"Drama": 0.9, "Comedy": 0.7}},      # Comedy FP
        {"id": "0000002", "true": ["Comedy", "Drama"], "p": {"Drama": 0.2, "Comedy": 0.8}},  # Drama FN
        {"id": "0000003", "true": ["Comedy"], "p": {"Comedy": 0.6}},
        {"id": "0000004", "true": ["Drama"], "p": {"Drama": 0.55, "Comedy": 0.95}},     # Comedy FP
        {"id": "0000009", "true": ["Drama"], "p": {"Drama": 0.9}, "split": "dev"},
    ]
    rows_b = [
        {"id": "0000001", "true": ["Drama"], "p": {"Drama": 0.9}},
        {"id": "0000002", "true": ["Comedy", "Drama"], "p": {"Drama": 0.8, "Comedy": 0.8}},
        {"id": "0000003", "true": ["Comedy"], "p": {"Comedy": 0.6}},
        {"id": "0000004", "true": ["Drama"], "p": {"Drama": 0.6}},
    ]
    per_genre = [{"genre": g, "f1": 0.5 if g == "Drama" else 0.0} for g in GENRES]
    _write_checkpoint(tmp_path / "gmu", rows_a, thr, {"test": {"per_genre": per_genre}})
    _write_checkpoint(tmp_path / "text_only", rows_b, thr)
    (tmp_path / "not_a_checkpoint").mkdir()
    odd = tmp_path / "<b>odd name"
    odd.mkdir()
    (odd / "config.json").write_text("{}")
    return tmp_path


def test_available_checkpoints_follow_registry_order(two_models, tmp_path):
    assert A.available_checkpoints(two_models) == ["text_only", "gmu"]
    assert A.available_checkpoints(tmp_path / "nowhere") == []


def test_training_protocols_come_from_each_config():
    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    assert A.training_protocols(shipped, A.available_checkpoints(shipped)) == ["train-holdout"]


def test_training_protocols_are_distinct_and_unknown_without_one(two_models):
    config = json.loads((two_models / "gmu" / "config.json").read_text())
    config["train"] = {"protocol": "official"}
    (two_models / "gmu" / "config.json").write_text(json.dumps(config))
    assert A.training_protocols(two_models, ["gmu", "text_only", "gmu"]) == ["official", "unknown"]


def test_read_predictions_checks_columns(two_models, tmp_path):
    pred = A.read_predictions(two_models / "gmu")
    assert pred["imdb_id"].tolist()[0] == "0000001"  # leading zeros kept
    ids, y, p = A.prediction_arrays(pred, "test")
    assert len(ids) == 4 and y.shape == p.shape == (4, N_GENRES)
    assert y[1, GENRE_INDEX["Comedy"]] == 1 and y[1, GENRE_INDEX["Drama"]] == 1
    with pytest.raises(InputError, match="no rows for split"):
        A.prediction_arrays(pred, "train")
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame({"imdb_id": ["1"], "split": ["test"]}).to_csv(bad / "predictions.csv", index=False)
    with pytest.raises(InputError, match="missing column"):
        A.read_predictions(bad)
    with pytest.raises(InputError, match="no predictions.csv"):
        A.read_predictions(tmp_path / "nowhere")


def test_genre_errors_lists_false_positives_and_negatives(two_models):
    pred, thr = A.read_predictions(two_models / "gmu"), A.read_thresholds(two_models / "gmu")
    fp = A.genre_errors(pred, thr, "Comedy", "false_positive", split="test")
    assert fp["imdb_id"].tolist() == ["0000004", "0000001"]  # most confident first
    assert fp["probability"].tolist() == [0.95, 0.7] and (fp["threshold"] == 0.5).all()
    fn = A.genre_errors(pred, thr, "Drama", "false_negative")
    assert fn["imdb_id"].tolist() == ["0000002"]
    # A higher threshold turns the 0.55 Drama hit into a false negative.
    thr2 = thr.copy()
    thr2[GENRE_INDEX["Drama"]] = 0.6
    assert A.genre_errors(pred, thr2, "Drama", "false_negative")["imdb_id"].tolist() == ["0000002", "0000004"]
    with pytest.raises(InputError, match="error kind"):
        A.genre_errors(pred, thr, "Drama", "wrong")


def test_disagreements_and_movie_predictions(two_models):
    a, ta = A.read_predictions(two_models / "gmu"), A.read_thresholds(two_models / "gmu")
    b, tb = A.read_predictions(two_models / "text_only"), A.read_thresholds(two_models / "text_only")
    dis = A.disagreements(a, ta, b, tb, split="test")
    assert set(dis["imdb_id"]) == {"0000001", "0000002", "0000004"}
    row = dis.set_index("imdb_id").loc["0000002"]
    assert row["only_b"] == "Drama" and row["only_a"] == "" and row["b_right"] == 1 and row["a_right"] == 0
    assert A.disagreements(a, ta, b, tb, split="test", genre="Drama")["imdb_id"].tolist() == ["0000002"]
    table = A.movie_predictions({"gmu": (a, ta), "text_only": (b, tb)}, "0000002").set_index("model")
    assert table.loc["gmu", "missed"] == "Drama" and table.loc["text_only", "missed"] == ""
    assert table.loc["gmu", "top_3"].startswith("Comedy 0.80")
    assert A.movie_predictions({"gmu": (a, ta)}, "no-such-id").empty


def test_per_genre_matrix_curves_and_paired_test(two_models):
    mat = A.per_genre_matrix(two_models, ["gmu", "text_only"])
    assert list(mat.index) == ["gmu"] and mat.loc["gmu", "Drama"] == 0.5
    a, ta = A.read_predictions(two_models / "gmu"), A.read_thresholds(two_models / "gmu")
    b, tb = A.read_predictions(two_models / "text_only"), A.read_thresholds(two_models / "text_only")
    _, y, p = A.prediction_arrays(a, "test")
    curves = A.genre_curves(a, "Comedy")
    assert curves["roc"] == M.curves(y, p, "Comedy")["roc"]
    res = A.paired_test(a, ta, b, tb, key="micro_f1", n_boot=200)
    _, _, pb = A.prediction_arrays(b, "test")
    assert res["n_movies"] == 4
    assert res["a"] == pytest.approx(M.compute_metrics(y, p, ta)["micro_f1"])
    assert res["b"] == pytest.approx(M.compute_metrics(y, pb, tb)["micro_f1"])
    assert res["diff"] == pytest.approx(res["a"] - res["b"]) and 0 <= res["p_value"] <= 1


def test_modality_gains_compare_with_best_unimodal():
    board = pd.DataFrame({"model": ["gmu", "text_only", "image_only", "detection_fusion", "detection_only"],
                          "modalities": ["text+image", "text", "image", "text+image+det", "det"],
                          "micro_f1": [0.6, 0.55, 0.4, 0.5, 0.58]})
    gains = A.modality_gains(board).set_index("model")
    assert gains.loc["gmu", "best_unimodal"] == "text_only"
    assert gains.loc["gmu", "gain"] == pytest.approx(0.05)
    assert gains.loc["detection_fusion", "best_unimodal"] == "detection_only"
    assert gains.loc["detection_fusion", "gain"] == pytest.approx(-0.08)
    assert A.modality_gains(board, "macro_f1").empty
