"""mmgenre.explain: Grad-CAM, Integrated Gradients, cross-attention, modality, export and the CLI.

Encoder-level tests use random, shrunk encoders of every registered name; the end-to-end tests
train tiny checkpoints (2 epochs, default encoders) on the generated dataset once per session.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmgenre.encoders import build_encoder, list_encoders
from mmgenre.errors import InputError
from mmgenre.explain import Explanation, choose_genres, explain_prediction
from mmgenre.explain.export import export_explanation
from mmgenre.budget import Deadline
from mmgenre.explain.extras import ExtrasContext, modality_weights
from mmgenre.explain.gradcam import GradCam, PixelsToLogits, to_poster
from mmgenre.explain.modality import ablation_batch
from mmgenre.explain.sanity import randomisation_sanity
from mmgenre.explain.text_attr import IdsToLogits, WordIntegratedGradients, shared_encode
from mmgenre.genres import GENRES
from mmgenre.heads import HEADS, build_head
from mmgenre.heads.base import HeadOutput
from mmgenre.predict import Predictor, prepare_inputs

HOSTILE = "<script>alert(1)</script>"
TINY_TRANSFORMER = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
TINY_IMAGE = {"vit-b16": {"arch": "vit_tiny_patch16_224", "depth": 1}}
MODELS = ("gmu", "cross_attention", "text_only", "image_only", "tfidf_logreg")


def _poster(width: int = 90, height: int = 130) -> Image.Image:
    img = Image.new("RGB", (width, height), (30, 60, 140))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, height // 6], fill=(240, 220, 40))
    draw.ellipse([width // 4, height // 3, 3 * width // 4, 2 * height // 3], fill=(200, 30, 30))
    return img


# ------------------------------------------------------------------------------ every encoder
@pytest.mark.parametrize("name", list_encoders("image"))
def test_gradcam_shapes_for_every_image_encoder(name):
    enc = build_encoder("image", name, pretrained=False, **TINY_IMAGE.get(name, {}))
    head = build_head("image_only", {"image": enc.dim}, hidden=16).eval()
    poster = _poster()
    hooks = [dict(layer._forward_hooks) for layer in enc.target_layers]
    cam = GradCam(PixelsToLogits(head, enc, {}), enc.target_layers, enc.reshape_transform)
    maps = cam.attribute(enc.preprocess(poster), [0, 4, 9])
    assert maps.shape == (3, *enc.input_size)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    cam = to_poster(maps[0], enc, poster.size)
    assert cam.shape == (130, 90) and cam.dtype == np.float32
    assert [dict(layer._forward_hooks) for layer in enc.target_layers] == hooks  # ours removed


@pytest.mark.parametrize("name", list_encoders("text"))
def test_integrated_gradients_one_score_per_word_for_every_text_encoder(name):
    enc = build_encoder("text", name, pretrained=False, **TINY_TRANSFORMER)
    head = build_head("text_only", {"text": enc.dim}, hidden=16).eval()
    plot = "The unbelievably haunted lighthouse-keeper's daughter, Ana, vanishes!"
    wa = WordIntegratedGradients(IdsToLogits(head, enc, {}, None), enc).attribute(plot, [0, 7], n_steps=16)
    assert wa.words == plot.split()
    assert wa.scores.shape == (2, 7) and np.isfinite(wa.scores).all()
    assert wa.delta.shape == (2,)
    # completeness: the word scores add up to f(x) - f(baseline) up to the reported delta
    assert np.allclose(wa.scores.sum(axis=1) - wa.f_diff, wa.delta, atol=1e-4)
    assert np.all(np.abs(wa.delta) <= 0.05 * np.abs(wa.f_diff) + 1e-3)


def test_shared_encoder_gives_each_copy_its_own_gradient():
    enc = build_encoder("text", "minilm", pretrained=False, **TINY_TRANSFORMER)
    ids = enc.tokenize(["a ghost haunts the old lighthouse"])["input_ids"]
    copies, steps = 3, 2
    base = enc.embedding_layer(ids).detach()
    scale = torch.tensor([0.5, 1.0]).repeat_interleave(copies)[:, None, None]  # step-major, copies side by side
    mask = torch.ones(copies * steps, ids.shape[1], dtype=torch.long)
    weights = torch.randn(copies * steps, enc.dim, generator=torch.Generator().manual_seed(0))

    def grad(fn):
        x = (base * scale).requires_grad_(True)
        out = fn(x)
        loss = (out.pooled * weights).sum() + (out.tokens[:, 1] * weights).sum()
        return out, torch.autograd.grad(loss, x)[0]

    shared, g_shared = grad(lambda x: shared_encode(enc, x, mask, copies))
    plain, g_plain = grad(lambda x: enc.forward_embeddings(x, mask))
    assert torch.allclose(shared.pooled, plain.pooled, atol=1e-5)
    assert torch.allclose(g_shared, g_plain, atol=1e-5)
    assert not torch.allclose(g_shared[0], g_shared[1])  # same input, different output weights
    # rows that are not copies of each other fall back to the plain encoder
    odd = (base * torch.rand(copies * steps, 1, 1)).requires_grad_(True)
    assert torch.allclose(shared_encode(enc, odd, mask, copies).pooled, enc.forward_embeddings(odd, mask).pooled)


# ------------------------------------------------------------------------------ tiny checkpoints
@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory, tiny_data) -> dict[str, Path]:
    from train.config import TrainConfig
    from train.loop import fit
    out = tmp_path_factory.mktemp("explain_ckpt")
    for model in MODELS:
        fit(TrainConfig(data=str(tiny_data), model=model, out=str(out), cache=str(out / "cache"), epochs=1,
                        n_boot=0, progress=False))
    return {m: out / m for m in MODELS}


@pytest.fixture(scope="session")
def predictors(tiny_ckpts) -> dict[str, Predictor]:
    return {m: Predictor.from_checkpoint(p) for m, p in tiny_ckpts.items()}


@pytest.fixture(scope="session")
def movie(tiny_data) -> tuple[Path, str]:
    """A test movie with a poster and a plot."""
    split = json.loads((tiny_data / "split.json").read_text())
    for imdb_id in split["test"]:
        rec = json.loads((tiny_data / "dataset" / f"{imdb_id}.json").read_text())
        poster = tiny_data / "dataset" / f"{imdb_id}.jpeg"
        if poster.is_file() and rec["plot"]:
            return poster, " ".join(rec["plot"])
    raise AssertionError("the tiny dataset has no test movie with poster and plot")


def _check_common(exp: Explanation, predictor: Predictor, poster, plot):
    pred = predictor.predict(poster=poster, plot=plot)
    assert exp.predicted == pred["predicted"]
    for g, p in pred["probabilities"].items():
        assert exp.probabilities[g] == pytest.approx(p, abs=1e-5)
    d = exp.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d["modality"]["ablation"]) == set(exp.genres)


def test_gmu_explanation_has_every_part(predictors, movie):
    poster, plot = movie
    p = predictors["gmu"]
    exp = p.explain(poster=str(poster), plot=plot, genres=["Drama", "sci fi"], ig_steps=4)
    assert exp.genres == ["Drama", "Sci-Fi"]
    img = Image.open(poster)
    assert exp.poster.shape == (img.height, img.width, 3) and exp.poster.dtype == np.uint8
    for g in exp.genres:
        cam = exp.poster_cam[g]
        assert cam.shape == (img.height, img.width) and cam.dtype == np.float32
        assert 0.0 <= cam.min() and cam.max() <= 1.0
        assert exp.token_scores[g].shape == (len(exp.words),)
        assert set(exp.faithfulness["deletion"][g]) == {"top_drop", "random_drop", "beats_random"}
        assert exp.faithfulness["ig_completeness"][g]["abs"] == pytest.approx(abs(exp.ig_delta[g]), abs=1e-4)
    assert exp.words == plot.split()
    assert 0.0 <= exp.modality["gate_text_share"] <= 1.0 and exp.modality["weights"] is None
    assert exp.cross_attention is None
    for obj in exp.objects:  # the default Haar detector (gmu has none of its own)
        assert set(obj) == {"label", "box", "score"} and len(obj["box"]) == 4
    assert {"forward", "gradcam", "text_attribution", "faithfulness", "total"} <= set(exp.timings)
    _check_common(exp, p, str(poster), plot)


def test_default_genres_are_predicted_else_top3():
    probs = np.linspace(0.9, 0.1, len(GENRES))
    assert choose_genres(None, probs, ["Comedy", "Drama"]) == [1, 0]
    assert choose_genres(None, probs, []) == [0, 1, 2]
    assert choose_genres("film noir", probs, []) == [GENRES.index("Film-Noir")]
    with pytest.raises(InputError, match="unknown genre"):
        choose_genres([HOSTILE], probs, [])


def test_cross_attention_maps_are_per_word(predictors, movie):
    poster, plot = movie
    exp = predictors["cross_attention"].explain(poster=str(poster), plot=plot, genres=["Drama"], ig_steps=4,
                                                faithfulness=False)
    ca = exp.cross_attention
    h, w = ca["grid"]
    n = len(ca["words"])
    assert ca["words"] == exp.words[:n] and n > 0
    heads = ca["text_to_image"].shape[0]
    assert ca["text_to_image"].shape == (heads, n, h * w)
    assert ca["image_to_text"].shape == (heads, h * w, n)
    assert ca["text_to_image_mean"].shape == (n, h * w)
    # rows are attention weights without the null key: non-negative, summing to at most 1
    assert ca["text_to_image"].min() >= 0 and ca["text_to_image"].sum(-1).max() <= 1 + 1e-5
    assert exp.faithfulness == {}
    json.dumps(exp.to_dict(), allow_nan=False)


def test_text_only_and_poster_only_models(predictors, movie):
    poster, plot = movie
    text = predictors["text_only"].explain(poster=str(poster), plot=plot, genres=["Drama", "Comedy"], ig_steps=4)
    assert text.poster_cam == {} and len(text.words) > 0 and "deletion" not in text.faithfulness
    for g in text.genres:  # the model reads no poster: removing it changes nothing
        a = text.modality["ablation"][g]
        assert a["without_poster"] == pytest.approx(a["p"])
    image = predictors["image_only"].explain(poster=str(poster), plot=plot, genres=["Drama"])
    assert image.words == [] and image.token_scores == {} and set(image.poster_cam) == set(image.genres)
    assert "ig_completeness" not in image.faithfulness
    with pytest.raises(InputError):
        predictors["text_only"].explain(poster=str(poster), plot=None)
    with pytest.raises(InputError):
        predictors["image_only"].explain(poster=None, plot=plot)


def test_missing_poster_or_plot_on_a_multimodal_model(predictors, movie):
    poster, plot = movie
    p = predictors["gmu"]
    no_poster = p.explain(poster=None, plot=plot, genres=["Drama"], ig_steps=4)
    assert no_poster.poster is None and no_poster.poster_cam == {} and no_poster.objects == []
    assert len(no_poster.words) > 0
    no_plot = p.explain(poster=str(poster), plot="", genres=["Drama"])
    assert no_plot.words == [] and set(no_plot.poster_cam) == set(no_plot.genres)
    for exp in (no_poster, no_plot):
        json.dumps(exp.to_dict(), allow_nan=False)
    with pytest.raises(InputError):
        p.explain(poster=None, plot="   ")
    with pytest.raises(InputError):
        explain_prediction(p, {"poster": None, "plot": plot})
    with pytest.raises(InputError):
        explain_prediction(p, prepare_inputs(None, plot), ig_steps=1)


def test_heads_phrase_their_own_extras():
    targets = [0, 2]
    gmu = build_head("gmu", {"text": 4, "image": 4}, hidden=8)
    out = HeadOutput(torch.zeros(1, len(GENRES)), {"gate_text_share": torch.tensor([0.25])})
    assert gmu.explain_extras(out, ExtrasContext(targets)) == {"modality": {"gate_text_share": 0.25}}
    det = modality_weights(("text", "image", "detector"), torch.tensor([0.5, 0.3, 0.2]), targets)
    assert det["weights"] == pytest.approx({"text": 0.5, "image": 0.3, "detector": 0.2})
    late_w = torch.zeros(2, len(GENRES))
    late_w[0], late_w[1] = 0.6, 0.4
    late_w[0, 2], late_w[1, 2] = 0.2, 0.8
    late = build_head("late_fusion", {"text": 4, "image": 4}, hidden=8).explain_extras(
        HeadOutput(torch.zeros(1, len(GENRES)), {"modality_weights": late_w[None]}), ExtrasContext(targets))["modality"]
    assert late["weights"] == pytest.approx({"text": 0.4, "image": 0.6})  # mean over the explained genres
    assert late["weights_per_genre"]["Romance"] == pytest.approx({"text": 0.2, "image": 0.8})
    # cross-attention maps need the plot's words and the poster's grid
    ca = build_head("cross_attention", {"text": 4, "image": 4}, hidden=8, n_heads=2)
    assert ca.explain_extras(HeadOutput(torch.zeros(1, len(GENRES)), {}), ExtrasContext(targets)) == {}


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_explains_its_own_output(name):
    dims = {"text": 6, "image": 5, "detector": 4}
    head = build_head(name, dims, hidden=8, **({"n_heads": 2} if name == "cross_attention" else {})).eval()
    batch = {"text": torch.randn(1, 6), "text_tokens": torch.randn(1, 3, 6), "text_mask": torch.ones(1, 3, dtype=torch.bool),
             "image": torch.randn(1, 5), "image_regions": torch.randn(1, 4, 5), "detector": torch.rand(1, 4)}
    ctx = ExtrasContext([0, 1], words=["a", "b"], positions=[[1], [2]], grid=(2, 2))
    parts = head.explain_extras(head(batch), ctx)
    assert set(parts) <= {"modality", "cross_attention"}
    json.dumps(Explanation.start(name, {"probabilities": {}, "predicted": []}, None, [0]).to_dict() | parts,
               default=lambda a: np.asarray(a).tolist())


def test_ablation_batch_removes_one_modality_per_row():
    batch = {"text": torch.ones(1, 4), "text_tokens": torch.ones(1, 3, 4), "text_mask": torch.ones(1, 3, dtype=torch.bool),
             "image": torch.ones(1, 5), "image_regions": torch.ones(1, 2, 5), "detector": torch.ones(1, 6),
             "has_text": torch.tensor([True]), "has_image": torch.tensor([True])}
    rows = ablation_batch(batch)
    assert rows["has_image"].tolist() == [True, False, True] and rows["has_text"].tolist() == [True, True, False]
    assert rows["image"][1].abs().sum() == 0 and rows["detector"][1].abs().sum() == 0 and rows["image"][2].sum() == 5
    assert rows["text_tokens"][2].abs().sum() == 0 and not rows["text_mask"][2].any() and rows["text_mask"][1].all()
    assert batch["image"].sum() == 5  # the input batch is not modified


def test_tfidf_word_scores_are_exact(predictors, movie):
    poster, plot = movie
    p = predictors["tfidf_logreg"]
    exp = p.explain(poster=str(poster), plot=plot + " " + plot.split()[0])
    logits = p.model.decision_function([plot + " " + plot.split()[0]])[0]
    for g in exp.genres:
        i = GENRES.index(g)
        assert exp.token_scores[g].sum() + p.model.intercept[i] == pytest.approx(logits[i], abs=1e-5)
        assert abs(exp.ig_delta[g]) < 1e-5
    assert exp.poster_cam == {} and exp.cross_attention is None
    _check_common(exp, p, str(poster), plot + " " + plot.split()[0])


def test_randomisation_sanity_returns_correlations(predictors, movie):
    poster, plot = movie
    p = predictors["gmu"]
    inputs = prepare_inputs(str(poster), plot)
    exp = explain_prediction(p, inputs, genres=["Drama"], ig_steps=4, faithfulness=False)
    before = {k: v.clone() for k, v in p.model.head.state_dict().items()}
    res = randomisation_sanity(p, inputs, exp, ig_steps=4)
    assert set(res["cam"]) == {"Drama"} and set(res["tokens"]) == {"Drama"}
    for v in (*res["cam"].values(), *res["tokens"].values()):
        assert v is None or -1.0 <= v <= 1.0
    # the explained predictor's own head is untouched
    assert all(torch.equal(v, before[k]) for k, v in p.model.head.state_dict().items())


def test_deadline_cuts_the_optional_stages_short(predictors, movie):
    poster, plot = movie
    p = predictors["gmu"]
    full = p.explain(poster=str(poster), plot=plot, genres=["Drama", "Comedy"], ig_steps=4,
                     deadline=Deadline(60.0))  # a deadline that is never reached changes nothing
    assert full.cut_short == [] and full.genres == ["Drama", "Comedy"] and full.to_dict()["cut_short"] == []
    assert set(full.faithfulness["deletion"]) == {"Drama", "Comedy"}
    late = p.explain(poster=str(poster), plot=plot, genres=["Drama", "Comedy"], ig_steps=4, deadline=Deadline(0.0))
    assert late.cut_short == ["extra_genres", "ablation", "faithfulness", "objects"]
    assert late.to_dict()["cut_short"] == late.cut_short
    # the first genre is still explained, with the same maps as without a deadline
    assert late.genres == ["Drama"] and set(late.poster_cam) == {"Drama"} and set(late.token_scores) == {"Drama"}
    np.testing.assert_allclose(late.poster_cam["Drama"], full.poster_cam["Drama"], atol=1e-5)
    np.testing.assert_allclose(late.token_scores["Drama"], full.token_scores["Drama"], rtol=1e-4, atol=1e-6)
    assert late.faithfulness == {} and late.objects == [] and late.modality["ablation"] == {}
    assert late.probabilities == pytest.approx(full.probabilities)
    tfidf = predictors["tfidf_logreg"].explain(plot=plot, genres=["Drama"], deadline=Deadline(0.0))
    assert tfidf.cut_short == ["ablation", "faithfulness", "objects"] and set(tfidf.token_scores) == {"Drama"}
    with pytest.raises(InputError, match="deadline"):
        p.explain(plot=plot, deadline=5.0)


# ------------------------------------------------------------------------------ export, escaping, CLI
def test_export_writes_files_and_escapes_hostile_plot(predictors, tiny_ckpts, tmp_path):
    plot = f"A detective finds a ghost. {HOSTILE} \"onclick=\"x\" & the <b>end</b>"
    poster = tmp_path / "p.png"
    _poster().save(poster)
    for model in ("cross_attention", "tfidf_logreg"):
        out = tmp_path / model
        summary = export_explanation(predictors[model], poster=str(poster), plot=plot, genres=["Drama", "Comedy"],
                                     out=out, ig_steps=4, faithfulness=False)
        files = set(summary["files"])
        assert {"plot.html", "explanation.json", "poster.png", "objects.png"} <= files
        assert all((out / f).is_file() for f in files)
        if model == "cross_attention":
            assert "cross_attention.html" in files
            assert {f"gradcam_{g}.png" for g in summary["genres"]} <= files
            assert Image.open(out / f"gradcam_{summary['genres'][0]}.png").size == (90, 130)
        for page in out.glob("*.html"):
            text = page.read_text(encoding="utf-8")
            assert HOSTILE not in text and "<b>end</b>" not in text
            assert not re.search(r"<script>\s*alert", text)
        record = json.loads((out / "explanation.json").read_text(encoding="utf-8"))
        assert record["files"] == summary["files"] and record["model"] == model
        assert HOSTILE in " ".join(record["words"])  # JSON keeps the raw text; only HTML escapes


def test_cli_explain(tiny_ckpts, movie, tmp_path, capsys):
    from mmgenre.__main__ import main
    poster, plot = movie
    out = tmp_path / "cli"
    rc = main(["explain", "--checkpoint", str(tiny_ckpts["image_only"]), "--poster", str(poster),
               "--plot", plot, "--genres", "Drama,Comedy", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["genres"] == ["Drama", "Comedy"] and (out / "gradcam_Drama.png").is_file()
    rc = main(["explain", "--checkpoint", str(tiny_ckpts["image_only"]), "--plot", plot, "--out", str(out)])
    assert rc == 2 and "poster" in capsys.readouterr().err
