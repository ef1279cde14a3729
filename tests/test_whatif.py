"""mmgenre.explain.whatif / agreement / whatif_text and mmgenre.viz_whatif on the tiny checkpoints
(the UI set of dashboard.testing, trained once per session and shared with the UI tests)."""
from __future__ import annotations

import inspect
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

import numpy as np
import pytest

from mmgenre.data import MMIMDb
from mmgenre.errors import InputError
from mmgenre.explain import Explanation
from mmgenre.explain.agreement import agreement, aligned_words, common_grid
from mmgenre.explain.faithfulness import blurred, grey_out
from mmgenre.explain.whatif import Edit, cam_mask, cell_boxes, edit_plot, what_if, word_spans
from mmgenre.explain.whatif_text import parse_positions, parse_replacements
from mmgenre.genres import GENRES
from mmgenre.predict import Predictor, prepare_inputs
from mmgenre.viz_whatif import grid_image, paired_probabilities_figure

FILL = inspect.signature(grey_out).parameters["fill"].default
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def models(ui_checkpoints) -> dict[str, Predictor]:
    return {m: Predictor.from_checkpoint(ui_checkpoints / m) for m in ("gmu", "text_only", "tfidf_logreg")}


@pytest.fixture(scope="module")
def movies(tiny_data):
    """Two test movies with a poster and a plot."""
    both = [m for m in MMIMDb.load(tiny_data).split("test") if m.has_poster and m.has_plot]
    assert len(both) >= 2
    return both[:2]


@pytest.fixture(scope="module")
def gmu_exp(models, movies) -> Explanation:
    m = movies[0]
    return models["gmu"].explain(poster=m.poster_path, plot=m.plot, genres=["Drama"], ig_steps=4)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_grey_cells_fill_only_the_chosen_cells(models, movies):
    m = movies[0]
    w = what_if(models["gmu"], m.poster_path, m.plot, Edit(grid=(3, 4), grey_cells=(0, 5)), explain=False)
    poster = np.asarray(prepare_inputs(m.poster_path).poster)
    boxes = cell_boxes(poster.shape[:2], (3, 4))
    cover = np.zeros(poster.shape[:2], dtype=int)
    for r0, c0, r1, c1 in boxes:
        cover[r0:r1, c0:c1] += 1
    assert len(boxes) == 12 and (cover == 1).all()  # the cells tile the poster
    inside = np.zeros(poster.shape[:2], dtype=bool)
    for i in (0, 5):
        r0, c0, r1, c1 = boxes[i]
        inside[r0:r1, c0:c1] = True
    assert (w.poster[inside] == FILL).all()
    assert np.array_equal(w.poster[~inside], poster[~inside])
    assert w.plot == m.plot and w.explanation is None and w.edited is not None
    assert w.applied == ["greyed 2 cells of a 3 x 4 grid", f"{100 * inside.mean():.1f}% of the poster greyed"]


def test_cam_top_share_reproduces_the_deletion_test(models, movies, gmu_exp):
    """With fill="blur" a CAM share of 0.2 makes the deletion test's image: the edited Drama logit
    falls by exactly the test's top_drop. The default fill greys the same pixels flat."""
    m = movies[0]
    w = what_if(models["gmu"], m.poster_path, m.plot, Edit(cam_share=0.2, fill="blur"), original=gmu_exp,
                explain=False)
    mask = cam_mask(gmu_exp.poster_cam["Drama"], 0.2)
    assert mask.mean() == pytest.approx(0.2, abs=1e-3)
    assert np.array_equal(w.poster[mask], blurred(gmu_exp.poster)[mask])
    assert np.array_equal(w.poster[~mask], gmu_exp.poster[~mask])
    assert w.applied[-1].endswith("(with a blurred copy)")
    drop = _logit(w.original["probabilities"]["Drama"]) - _logit(w.edited["probabilities"]["Drama"])
    assert drop == pytest.approx(gmu_exp.faithfulness["deletion"]["Drama"]["top_drop"], abs=1e-4)
    # without the original explanation, the CAM is computed on the spot: the same pixels
    again = what_if(models["gmu"], m.poster_path, m.plot, Edit(cam_share=0.2, cam_genre="drama", fill="blur"),
                    explain=False)
    assert np.array_equal(again.poster, w.poster)
    grey = what_if(models["gmu"], m.poster_path, m.plot, Edit(cam_share=0.2), original=gmu_exp, explain=False)
    assert (grey.poster[mask] == FILL).all() and np.array_equal(grey.poster[~mask], w.poster[~mask])
    with pytest.raises(InputError, match="fill"):
        what_if(models["gmu"], m.poster_path, m.plot, Edit(fill="smear"), explain=False)


def test_word_edits_change_the_plot_and_the_change_is_a_fresh_prediction(models, movies, gmu_exp):
    m, p = movies[0], models["gmu"]
    words = gmu_exp.words
    w = what_if(p, m.poster_path, m.plot, Edit(delete_words=(0, 2), replace_words={1: "murder at night"}),
                original=gmu_exp, ig_steps=4)
    expected = " ".join(["murder at night", *words[3:]])
    assert w.plot == expected and w.explanation.words == expected.split()
    assert w.explanation.genres == ["Drama"] and w.poster is not None
    direct = p.predict(poster=w.poster, plot=w.plot)["probabilities"]
    first = p.predict(poster=m.poster_path, plot=m.plot)["probabilities"]
    for g in GENRES:
        assert w.change[g] == pytest.approx(direct[g] - first[g], abs=1e-5)
    rows = w.table()
    assert [r["genre"] for r in rows] == list(first) and len(rows) == len(GENRES)
    json.dumps(w.explanation.to_dict(), allow_nan=False)


def test_drop_a_modality_or_swap_the_poster(models, movies):
    (m, other), p = movies, models["gmu"]
    no_plot = what_if(p, m.poster_path, m.plot, Edit(drop="plot"), explain=False)
    assert no_plot.plot == "" and no_plot.applied == ["dropped the plot"]
    assert no_plot.edited["probabilities"] == pytest.approx(p.predict(poster=m.poster_path)["probabilities"])
    no_poster = what_if(p, m.poster_path, m.plot, Edit(drop="poster"), explain=False)
    assert no_poster.poster is None and no_poster.edited["used"] == {"poster": False, "plot": True}
    swapped = what_if(p, m.poster_path, m.plot, Edit(poster=other.poster_path, grey_cells=(3,)), explain=False)
    assert swapped.poster.shape == np.asarray(prepare_inputs(other.poster_path).poster).shape
    direct = p.predict(poster=swapped.poster, plot=m.plot)["probabilities"]
    assert swapped.edited["probabilities"] == pytest.approx(direct, abs=1e-5)
    # a model that does not read what was edited: the same probabilities, and a note saying so
    text = what_if(models["text_only"], m.poster_path, m.plot, Edit(drop="poster"), explain=False)
    assert max(abs(v) for v in text.change.values()) < 1e-6
    assert any("does not read the poster" in n for n in text.notes)


def test_an_emptied_plot_or_a_fully_greyed_poster_still_gives_a_result(models, movies, gmu_exp):
    m = movies[0]
    every_word = tuple(range(len(gmu_exp.words)))
    w = what_if(models["gmu"], m.poster_path, m.plot, Edit(grid=(2, 2), grey_cells=(0, 1, 2, 3),
                                                             delete_words=every_word), original=gmu_exp, ig_steps=4)
    assert (w.poster == FILL).all() and w.plot == ""
    assert w.edited is not None and w.explanation is not None and w.explanation.words == []
    assert "The edits leave the plot empty." in w.notes and "100.0% of the poster greyed" in w.applied
    # a plot-only model with its plot gone: the original prediction, no edited one, a clear note
    for name in ("text_only", "tfidf_logreg"):
        t = what_if(models[name], m.poster_path, m.plot, Edit(delete_words=every_word))
        assert t.edited is None and t.change is None and t.explanation is None
        assert t.original["probabilities"] and any("plot" in n and "empty" in n for n in t.notes)
        assert all(r["edited"] is None for r in t.table())
    nothing = what_if(models["gmu"], None, m.plot, Edit(drop="plot"))
    assert nothing.edited is None and any("nothing to predict from" in n for n in nothing.notes)


def test_bad_edits_are_input_errors(models, movies, gmu_exp):
    m, p = movies[0], models["gmu"]
    bad = [Edit(grey_cells=(16,)), Edit(grey_cells=(True,)), Edit(grid=(0, 3), grey_cells=(0,)),
           Edit(grid=(99, 99), grey_cells=(0,)), Edit(delete_words=(10_000,)), Edit(drop="both"),
           Edit(cam_share=1.5), Edit(cam_share=0.2, cam_genre=HOSTILE),
           Edit(delete_words=(0,), replace_words={0: "x"}), Edit(replace_words={0: "x" * 201}),
           Edit(cam_share=0.2, poster=movies[1].poster_path)]
    for edit in bad:
        with pytest.raises(InputError):
            what_if(p, m.poster_path, m.plot, edit, original=gmu_exp, explain=False)
    with pytest.raises(InputError, match="no poster to grey"):
        what_if(p, None, m.plot, Edit(grey_cells=(0,)))
    with pytest.raises(InputError, match="does not read the poster"):
        what_if(models["text_only"], m.poster_path, m.plot, Edit(cam_share=0.2))
    with pytest.raises(InputError, match="this predictor's model"):
        what_if(models["text_only"], m.poster_path, m.plot, Edit(), original=gmu_exp)
    with pytest.raises(InputError, match="words of this plot"):
        what_if(p, m.poster_path, "another plot altogether", Edit(delete_words=(0,)), original=gmu_exp)
    with pytest.raises(InputError):
        what_if(p, m.poster_path, m.plot, {"drop": "plot"})


def test_word_spans_skip_words_an_explanation_left_out():
    plot = "a  b c\td b"
    assert word_spans(plot, ["a", "c", "b"]) == [(0, 1), (5, 6), (9, 10)]
    assert edit_plot(plot, ["a", "c", "b"], delete=[1], replace={2: "z"}) == "a b d z"
    with pytest.raises(InputError):
        word_spans(plot, ["c", "a"])


def test_the_text_boxes():
    words = ["The", "detective", "and", "the", "gangster"]
    assert parse_positions("0, 2-3; gangster the", words=words) == [0, 2, 3, 4]
    assert parse_positions("") == [] and parse_positions(None) == []
    for text in ("x", "5-2", "1" * 6000):
        with pytest.raises(InputError):
            parse_positions(text)
    assert parse_replacements("3=happy; 10 = a sad day\n4=") == {3: "happy", 10: "a sad day", 4: ""}
    with pytest.raises(InputError):
        parse_replacements("happy")


# ------------------------------------------------------------------------------ agreement
def test_an_explanation_agrees_with_itself(gmu_exp):
    ag = agreement(gmu_exp, gmu_exp)
    assert ag.genre == "Drama" and ag.word_rank_correlation == pytest.approx(1.0) and ag.cam_iou == 1.0
    assert ag.words_compared == len(gmu_exp.words) and ag.reasons == {}
    assert ag.mean_abs_probability_difference == 0.0 and ag.predicted_only_by_a == ag.predicted_only_by_b == []
    json.dumps(ag.to_dict(), allow_nan=False)


def test_two_models_agree_where_both_have_the_part(models, movies, gmu_exp):
    m = movies[0]
    text = models["text_only"].explain(poster=m.poster_path, plot=m.plot, genres=["Drama"], ig_steps=4)
    ag = agreement(gmu_exp, text, "drama")
    assert -1.0 <= ag.word_rank_correlation <= 1.0 and ag.words_compared == len(text.words)
    assert ag.cam_iou is None and "text_only has no Grad-CAM" in ag.reasons["cam_iou"]
    first, second = gmu_exp.probabilities, text.probabilities
    assert ag.probability_difference == pytest.approx({g: second[g] - first[g] for g in GENRES})
    assert set(ag.predicted_only_by_a) <= set(gmu_exp.predicted) and set(ag.predicted_only_by_b) <= set(text.predicted)
    other = agreement(gmu_exp, text, "Comedy")  # a genre neither explained
    assert other.word_rank_correlation is None and "did not explain Comedy" in other.reasons["word_rank_correlation"]


def test_agreement_of_different_movies_is_an_input_error(models, movies, gmu_exp):
    other = movies[1]
    exp = models["gmu"].explain(poster=other.poster_path, plot=other.plot, genres=["Drama"], ig_steps=4,
                                faithfulness=False)
    with pytest.raises(InputError, match="different posters"):
        agreement(gmu_exp, exp)
    text = models["tfidf_logreg"].explain(poster=None, plot=other.plot + " " + other.plot[::-1], genres=["Drama"])
    with pytest.raises(InputError, match="different plots"):
        agreement(gmu_exp, text)
    for a, b, kwargs in ((gmu_exp, {"words": []}, {}), (gmu_exp, gmu_exp, {"top_share": 1.0}),
                         (gmu_exp, gmu_exp, {"genre": HOSTILE})):
        with pytest.raises(InputError):
            agreement(a, b, **kwargs)


def test_words_align_across_windows_and_cams_on_a_common_grid():
    assert aligned_words(["a", "b", "c", "d"], ["a", "c", "d"]) == [(0, 0), (2, 1), (3, 2)]
    assert common_grid((130, 90), (64, 44), 64) == (64, 44)
    assert common_grid((600, 400), (900, 600), 64) == (64, 43)


def test_whatif_pictures_escape_and_number(gmu_exp):
    fig = paired_probabilities_figure(gmu_exp.probabilities, gmu_exp.probabilities, (HOSTILE, "b"))
    assert len(fig.data) == 2 and "<script>" not in fig.to_json()
    assert len(paired_probabilities_figure(gmu_exp.probabilities, None).data) == 1
    h, w = gmu_exp.poster.shape[:2]
    img = grid_image(gmu_exp.poster, (4, 4), selected=[0, 15])
    assert min(img.size) >= min(w, h, 360) and img.size[0] / img.size[1] == pytest.approx(w / h, rel=0.02)


def test_deleting_the_top_attributed_words_lowers_the_genre_more_often_than_not(models, tiny_data):
    p = models["text_only"]
    lowered, n = 0, 0
    for m in (m for m in MMIMDb.load(tiny_data).split("test") if m.has_plot):
        exp = p.explain(plot=m.plot, faithfulness=False)
        g = exp.genres[0]
        top = tuple(int(i) for i in np.argsort(-exp.token_scores[g])[:3])
        w = what_if(p, None, m.plot, Edit(delete_words=top), original=exp, explain=False)
        lowered += w.change[g] < 0
        n += 1
    assert n >= 5 and lowered > n / 2, (lowered, n)
