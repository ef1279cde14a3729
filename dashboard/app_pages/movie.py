"""Movie page: pick a movie (by title, or among one model's errors for a genre, or where two
models disagree) and see every model's prediction for it, with the explanation of one model:
Grad-CAM on the poster, word attributions on the plot, cross-attention, modality use, detected
objects and the faithfulness figures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import core, downloads, loaders, views
from dashboard import whatif_view
from mmgenre import analysis as A
from mmgenre import viz
from mmgenre.attention_views import word_region_map
from mmgenre.genres import GENRES

MAX_OPTIONS = 2000
BROWSE = {"title": "All movies", "errors": "Errors of one model", "disagree": "Where two models disagree"}
MODALITY_COLOURS = {"model share": "#7f7f7f", "drop without poster": "#1f77b4",
                    "drop without plot": "#d62728"}
ERROR_LABELS = {"false_positive": "false positives", "false_negative": "false negatives"}

st.title("Movie explorer")
s = loaders.settings()
root = loaders.require_data(s)


def pick_movie(ds, names: list[str]) -> tuple[str | None, str | None]:
    """The filters and the movie picker: (chosen imdb_id, genre in focus or None)."""
    mode = st.segmented_control("Browse", list(BROWSE), format_func=BROWSE.get, default="title",
                                required=True, key="browse_mode", bind="query-params")
    c = st.columns(4)
    splits = ["all", *ds.splits]
    split = c[0].selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                           key="movie_split", bind="query-params")
    split = None if split == "all" else split
    ids: list[str] | None = None
    note, focus = "", None
    if mode == "errors" and names:
        model = c[1].selectbox("Model", names, key="err_model", bind="query-params")
        genre = c[2].selectbox("Genre", GENRES, key="err_genre", bind="query-params")
        kind = c[3].selectbox("Error", list(ERROR_LABELS), format_func=ERROR_LABELS.get, key="err_kind", bind="query-params")
        focus = genre
        pred, thr = loaders.predictions(s.checkpoints, model)
        errors = A.genre_errors(pred, thr, genre, kind, split=split)
        ids = errors["imdb_id"].tolist()
        note = (f"{len(ids)} {ERROR_LABELS[kind]} of {model} for {genre} "
                f"({'predicted but not true' if kind == 'false_positive' else 'true but not predicted'}), "
                "most confident first.")
        with st.expander(f"Error table ({len(errors)})"):
            st.dataframe(errors, hide_index=True,
                         column_config={"probability": st.column_config.NumberColumn(format="%.3f"),
                                        "threshold": st.column_config.NumberColumn(format="%.2f")})
    elif mode == "disagree" and len(names) >= 2:
        a = c[1].selectbox("Model A", names, index=0, key="dis_a", bind="query-params")
        b = c[2].selectbox("Model B", names, index=1, key="dis_b", bind="query-params")
        genre = c[3].selectbox("On genre", ["any", *GENRES], key="dis_genre", bind="query-params")
        focus = None if genre == "any" else genre
        pa, ta = loaders.predictions(s.checkpoints, a)
        pb, tb = loaders.predictions(s.checkpoints, b)
        dis = A.disagreements(pa, ta, pb, tb, split=split, genre=None if genre == "any" else genre)
        ids = dis["imdb_id"].tolist()
        note = f"{len(ids)} movies where {a} and {b} predict different genres, most disputed first."
        with st.expander(f"Disagreement table ({len(dis)})"):
            st.dataframe(dis, hide_index=True)
    else:
        if mode != "title":
            st.info("Needs trained checkpoints (two for disagreements) in the checkpoints folder.")
        genre = c[1].selectbox("Genre", ["any", *GENRES], key="title_genre", bind="query-params")
        if genre != "any":
            ids = [m.imdb_id for m in A.find_movies(ds, split=split, genre=genre)]
    query = st.text_input("Title contains", key="movie_query", bind="query-params", max_chars=100)
    movies = A.find_movies(ds, split=split, query=query, ids=ids)
    if note:
        st.caption(loaders.md_escape(note))
    if not movies:
        st.info("No movie matches these filters.")
        return None, focus
    shown = movies[:MAX_OPTIONS]
    label = {m.imdb_id: A.movie_label(m) for m in shown}
    chosen = st.selectbox(f"Movie ({len(movies):,} match" + (f", first {MAX_OPTIONS} listed)" if
                                                          len(movies) > MAX_OPTIONS else ")"),
                          list(label), format_func=label.get, key="movie_id", bind="query-params")
    return chosen, focus


def show_explanation(ds, movie, names: list[str], preds: dict, focus: str | None) -> None:
    usable = [n for n in names if n in preds]
    if not usable:
        st.info("No trained checkpoints to explain with.")
        return
    c = st.columns([1, 1, 2])
    browsed = st.session_state.get("err_model") if st.session_state.get("browse_mode") == "errors" else None
    first = core.preferred_model(usable, s.checkpoints, browsed=browsed)
    model = c[0].selectbox("Explain model", usable, index=usable.index(first),
                           key="explain_model", bind="query-params")
    pred, thr = preds[model]
    row = pred[pred["imdb_id"] == movie.imdb_id]
    # Default genre: the one being browsed, else the model's most probable genre for this movie.
    default = 0
    if focus in GENRES:
        default = GENRES.index(focus)
    elif not row.empty:
        probs = row[list(A.PROB_COLUMNS)].to_numpy(dtype=np.float64)[0]
        default = int(np.argmax(probs))
    genre = c[1].selectbox("Genre", GENRES, index=default, key=f"explain_genre_{movie.imdb_id}_{model}_{focus}")
    method = c[2].segmented_control("Plot attributions", list(views.METHOD_LABELS), format_func=views.METHOD_LABELS.get,
                                    default="fast", required=True, key="text_method", bind="query-params")
    with loaders.guard():
        got = loaders.explained(s.checkpoints, model, root, movie.imdb_id, [genre], text_method=method)
        expl = got.explanation
        if got.note:
            (st.warning if got.problem else st.caption)(loaders.md_escape(got.note))
        took = expl.timings.get("total", 0)
        source = (f"Precomputed in the explanation store (explaining it took {took:.1f} s when the store was "
                  "written). " if got.stored else f"Computed live in {took:.1f} s on first view (cached after). ")
        c[2].caption(loaders.md_escape(source + (views.modality_text(expl) or "")))
        left, right = st.columns([1, 1])
        with left:
            overlay = views.cam_overlay(expl, genre)
            if overlay is not None:
                a, b = st.columns(2)
                a.image(expl.poster, caption="poster", width="stretch")
                b.image(overlay, caption=f"Grad-CAM: {genre}", width="stretch")
                text = views.deletion_text(expl, genre)
                if text:
                    st.caption(loaders.md_escape(text))
            elif expl.poster is not None:
                why = ("this model reads only the objects detected on it: no Grad-CAM"
                       if "detector" in core.model_modalities(model) else "this model does not read it")
                st.image(expl.poster, caption=f"poster ({why})", width="stretch")
            else:
                st.info("This movie has no poster.")
        with right:
            html_words = views.words_html(expl, genre)
            if html_words:
                st.markdown("**Plot words** (red: supports the genre, blue: against it; hover for scores)")
                st.html(html_words)  # built by mmgenre.viz, which escapes every word
                for text in (views.method_text(expl), views.completeness_text(expl, genre)):
                    if text:
                        st.caption(loaders.md_escape(text))
            else:
                st.markdown("**Plot**")
                st.text(movie.plot or "(empty plot)")
        downloads.chart(viz.probabilities_figure(expl.probabilities, list(thr), expl.predicted),
                        f"probabilities_{movie.imdb_id}_{model}", key="probabilities")

        ca = expl.cross_attention
        if ca and ca.get("words"):
            st.subheader("Cross-attention: plot words x poster regions")
            fig = viz.cross_attention_figure(ca["words"], ca["grid"], ca["text_to_image_mean"],
                                             title="text-to-image attention (mean over heads)")
            downloads.chart(fig, f"cross_attention_{movie.imdb_id}_{model}", key="cross_attention")
            if expl.poster is not None:
                idx = st.selectbox("Regions a word looks at", range(len(ca["words"])),
                                   format_func=lambda i: f"{i}: {ca['words'][i]}", key="ca_word")
                st.image(viz.overlay_heatmap(expl.poster, word_region_map(ca, idx), alpha=0.55), width=320,
                         caption="attention of the chosen word over the poster grid")

        a, b = st.columns([3, 2])
        with a:
            if expl.modality and (expl.modality.get("ablation") or expl.modality.get("weights")
                                  or expl.modality.get("gate_text_share") is not None):
                st.subheader("Modality use")
                fig = viz.modality_figure(expl.modality)
                # The same colour for the same bars whichever panels the model has; the removal
                # panel gets the whole width when the model has no shares to show.
                fig.for_each_trace(lambda t: t.update(marker_color=MODALITY_COLOURS.get(t.name)))
                has_shares = any(t.name == "model share" for t in fig.data)
                fig.update_layout(xaxis2={"domain": [0.45, 1.0] if has_shares else [0.0, 1.0]},
                                  xaxis={"visible": has_shares}, yaxis={"visible": has_shares},
                                  margin=dict(t=40))
                downloads.chart(fig, f"modality_{movie.imdb_id}_{model}", key="modality")
        with b:
            st.subheader("Detected objects")
            img = views.objects_image(expl)
            if img is not None:
                st.image(img, width="stretch")
                st.dataframe(pd.DataFrame([{"label": o["label"], "score": o["score"]} for o in expl.objects]),
                             hide_index=True)
            else:
                st.caption("No faces or people found on the poster." if expl.poster is not None
                           else "No poster.")
        st.markdown("**Report** of this explanation: a self-contained HTML page and a PDF with its figures, "
                    "faithfulness figures and plot-attribution method")
        downloads.report_buttons(expl, movie, list(thr), key="report")


with loaders.guard():
    ds = loaders.load_dataset(root)
    names = loaders.models(s.checkpoints)
    preds = loaders.all_predictions(s.checkpoints)
    imdb_id, focus = pick_movie(ds, names)
    if imdb_id is not None and imdb_id in ds:
        movie = ds[imdb_id]
        st.divider()
        year = f" ({movie.year})" if movie.year else ""
        st.header(loaders.md_escape(f"{movie.title or '(untitled)'}{year}"))
        st.caption(loaders.md_escape(f"IMDb {movie.imdb_id} · split {movie.split} · true genres: "
                                     f"{', '.join(movie.genres) or 'none'}"))
        table = A.movie_predictions(preds, imdb_id)
        if table.empty:
            st.info("No checkpoint has a stored prediction for this movie (its predictions cover "
                    "the dev and test splits).")
        else:
            st.subheader("True vs predicted genres, every model")
            st.dataframe(table, hide_index=True)
        st.subheader("Explanation")
        show_explanation(ds, movie, names, preds, focus)
        whatif_view.sections(s, root, ds, movie, names, preds, focus)  # What-if, Compare two models
