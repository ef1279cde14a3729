"""The Movie page's "What-if" and "Compare two models" sections (``sections`` is called at the
end of ``app_pages/movie.py``). Edits, predictions, explanations and agreement figures are the
library's (``mmgenre.explain.whatif`` / ``agreement``); this module only lays out the widgets.

Both sections use the model explained above and one genre (by default the one explained above,
so its cached explanation is reused). The what-if widgets sit in a form: no
rerun, and no model call, until the button is pressed; the last result is kept in the session
for its movie, model and genre.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import core, downloads, loaders, views
from mmgenre import analysis as A
from mmgenre.explain.agreement import agreement
from mmgenre.explain.whatif import FILLS, Edit, what_if
from mmgenre.explain.whatif_text import parse_replacements
from mmgenre.genres import GENRES
from mmgenre.errors import InputError
from mmgenre.viz_whatif import MODEL_COLOURS, grid_image, paired_probabilities_figure

KEEP_POSTER = "(this movie's poster)"
NO_MODEL = "(choose a second model)"
DROP = {"none": "nothing", "poster": "the poster", "plot": "the plot"}
MAX_SWAP_OPTIONS = 500


def sections(s, root, ds, movie, names: list[str], preds: dict, focus: str | None) -> None:
    """Both sections for ``movie``; ``names``/``preds`` as on the Movie page."""
    usable = [n for n in names if n in preds]
    if not usable:
        return
    st.subheader("What-if")
    model, genre = _pick(usable, preds, movie, focus)
    try:
        expl = loaders.explanation(s.checkpoints, model, root, movie.imdb_id, [genre])
    except InputError as exc:  # already shown as an error by the Explanation section above
        st.caption(loaders.md_escape(f"No what-if for {model} on this movie: {exc}"))
        return
    with loaders.guard():
        _what_if(s, ds, movie, model, genre, expl)
    st.subheader("Compare two models")
    with loaders.guard():
        _compare(s, root, movie, usable, model, genre, expl)


def _pick(usable: list[str], preds: dict, movie, focus: str | None) -> tuple[str, str]:
    """The model explained above and a genre (by default the one explained above)."""
    above = st.session_state.get("explain_model")
    model = above if above in usable else core.preferred_model(usable)
    genre = st.session_state.get(f"explain_genre_{movie.imdb_id}_{model}_{focus}")  # the genre shown above
    if genre not in GENRES:
        pred, _ = preds[model]
        row = pred[pred["imdb_id"] == movie.imdb_id]
        genre = focus if focus in GENRES else (
            GENRES[int(np.argmax(row[list(A.PROB_COLUMNS)].to_numpy(dtype=np.float64)[0]))]
            if not row.empty else GENRES[0])
    c = st.columns([1, 3])
    genre = c[0].selectbox("Genre", GENRES, index=GENRES.index(genre), key=f"wi_genre_{movie.imdb_id}_{model}")
    c[1].caption(loaders.md_escape(
        f"Model: {model} (the one explained above). Edit the inputs and press the button: the model "
        "predicts and explains the edited movie again. Further down, a second model explains the same genre."))
    return model, genre


def _what_if(s, ds, movie, model: str, genre: str, expl) -> None:
    reads = core.model_modalities(model)
    key = f"{movie.imdb_id}_{model}"
    has_cam = genre in expl.poster_cam
    grid = None
    if expl.poster is not None:
        n = st.select_slider("Poster grid (cells per side)", options=list(range(2, 9)), value=4, key=f"wi_grid_{key}")
        grid = (n, n)
    with st.form(f"whatif_{key}"):
        left, right = st.columns(2)
        cells, share, swap, fill = [], 0.0, KEEP_POSTER, "grey"
        with left:
            if grid is not None:
                st.image(grid_image(expl.poster, grid), caption="grid cells, numbered row by row", width=260)
                cells = st.multiselect("Grey out cells", list(range(grid[0] * grid[1])), key=f"wi_cells_{key}")
                if has_cam:
                    share = st.slider(f"... or grey out the top share of the {genre} Grad-CAM", 0.0, 1.0, 0.0,
                                      0.05, key=f"wi_share_{key}",
                                      help="0.2 with the blur fill makes the deletion test's image above")
                fill = st.radio("Fill", list(FILLS), horizontal=True, key=f"wi_fill_{key}",
                                format_func={"grey": "flat grey", "blur": "blurred copy (as the deletion test)"}.get)
            else:
                st.caption("This movie has no poster to grey out.")
            swap = _swap_picker(ds, movie, key)
        with right:
            words = expl.words
            if words:
                delete = st.multiselect("Delete words", list(range(len(words))), key=f"wi_delete_{key}",
                                        format_func=lambda i: f"{i}: {words[i]}")
                replace = st.text_input("Replace words (position=new text; ...)", key=f"wi_replace_{key}",
                                        max_chars=500, placeholder="3=happy; 10=a sad day")
            else:
                delete, replace = [], ""
                st.caption("No plot words to edit" + ("" if "text" in reads else " (the model does not read the plot)")
                           + ".")
            drop = st.radio("Drop", list(DROP), format_func=DROP.get, horizontal=True, key=f"wi_drop_{key}")
        pressed = st.form_submit_button("Re-predict and explain", type="primary")
    state = f"wi_result_{key}_{genre}"
    if pressed:
        edit = Edit(grid=grid or (4, 4), grey_cells=tuple(cells), cam_share=float(share), cam_genre=genre,
                    delete_words=tuple(delete), replace_words=parse_replacements(replace),
                    drop=None if drop == "none" else drop,
                    poster=None if swap == KEEP_POSTER else ds[swap].poster_path, fill=fill)
        with st.spinner("Predicting and explaining the edited movie ..."):
            st.session_state[state] = what_if(loaders.predictor(s.checkpoints, model), movie.poster_path,
                                              movie.plot, edit, genres=[genre], original=expl)
    result = st.session_state.get(state)
    if result is not None:
        _show_what_if(result, genre)


def _swap_picker(ds, movie, key: str) -> str:
    others = [m for m in A.find_movies(ds, split=movie.split) if m.has_poster and m.imdb_id != movie.imdb_id]
    labels = {m.imdb_id: A.movie_label(m) for m in others[:MAX_SWAP_OPTIONS]}
    return st.selectbox("Swap in the poster of", [KEEP_POSTER, *labels], key=f"wi_swap_{key}",
                        format_func=lambda i: labels.get(i, i))


def _show_what_if(result, genre: str) -> None:
    st.markdown("**Edited movie**: " + loaders.md_escape("; ".join(result.applied) or "no edit") + ".")
    for note in result.notes:
        st.info(loaders.md_escape(note))
    exp = result.explanation
    a, b = st.columns(2)
    with a:
        if result.poster is not None:
            overlay = views.cam_overlay(exp, genre) if exp is not None else None
            c1, c2 = st.columns(2)
            c1.image(result.poster, caption="edited poster", width="stretch")
            if overlay is not None:
                c2.image(overlay, caption=f"Grad-CAM: {genre} (edited)", width="stretch")
        else:
            st.caption("No poster in the edited movie.")
    with b:
        words = views.words_html(exp, genre) if exp is not None else None
        if words:
            st.markdown("**Edited plot words**")
            st.html(words)  # mmgenre.viz escapes every word
        else:
            st.markdown("**Edited plot**")
            st.text(result.plot or "(empty plot)")
    edited = None if result.edited is None else result.edited["probabilities"]
    downloads.chart(paired_probabilities_figure(result.original["probabilities"], edited), "whatif_probabilities",
                    key="whatif_probabilities")
    st.dataframe(pd.DataFrame(result.table()), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f" if c != "change" else "%+.3f")
                                for c in ("original", "edited", "change")})


def _compare(s, root, movie, usable: list[str], model: str, genre: str, expl) -> None:
    others = [n for n in usable if n != model]
    if not others:
        st.info("Only one trained checkpoint: train a second model to compare.")
        return
    second = st.selectbox(f"Compare {model} with", [NO_MODEL, *others], key="cmp_model", bind="query-params")
    if second == NO_MODEL:
        return
    other = loaders.explanation(s.checkpoints, second, root, movie.imdb_id, [genre])
    ag = agreement(expl, other, genre)
    m = st.columns(3)
    m[0].metric("Word rank correlation", _fmt(ag.word_rank_correlation),
                help=loaders.md_escape(ag.reasons.get("word_rank_correlation")
                                       or f"Spearman, over the {ag.words_compared} plot words both explanations hold"))
    m[1].metric("Top-20% Grad-CAM overlap", _fmt(ag.cam_iou),
                help=loaders.md_escape(ag.reasons.get("cam_iou") or "intersection over union of the top-20% regions "
                                       f"of the two maps, on a {ag.cam_grid[0]} x {ag.cam_grid[1]} grid"))
    m[2].metric("Mean probability gap", f"{ag.mean_abs_probability_difference:.3f}",
                help="mean absolute difference of the two models' probabilities, over every genre")
    cols = st.columns(2)
    for col, exp in zip(cols, (expl, other)):
        with col:
            st.markdown(f"**{loaders.md_escape(exp.model)}**")
            overlay = views.cam_overlay(exp, genre)
            if overlay is not None:
                st.image(overlay, caption=f"Grad-CAM: {genre}", width=260)
            words = views.words_html(exp, genre)
            if words:
                st.html(words)  # mmgenre.viz escapes every word
    downloads.chart(paired_probabilities_figure(expl.probabilities, other.probabilities, (model, second),
                                                title=f"genre probabilities: {model} vs {second}",
                                                colours=MODEL_COLOURS),
                    f"probabilities_{model}_vs_{second}", key="compare_probabilities")
    st.caption(loaders.md_escape(
        f"Predicted by both: {', '.join(ag.predicted_by_both) or 'none'}; only by {model}: "
        f"{', '.join(ag.predicted_only_by_a) or 'none'}; only by {second}: "
        f"{', '.join(ag.predicted_only_by_b) or 'none'}."))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
