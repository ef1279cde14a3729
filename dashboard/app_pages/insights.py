"""Insights page: dataset-level views of the explanations stored by ``python -m mmgenre
explain-split`` in each checkpoint: how much each model relies on the poster vs the plot per
genre, the words that push each genre, the average Grad-CAM per genre and the faithfulness
figures per model. Aggregation is ``mmgenre.insights``', charts ``mmgenre.viz_insights``'."""
from __future__ import annotations

import shlex

import pandas as pd
import streamlit as st

from dashboard import downloads, loaders, views
from mmgenre import viz_insights as V
from mmgenre.insights import cams_table
from mmgenre.genres import GENRES

METHODS = views.METHOD_LABELS

st.title("Insights")
s = loaders.settings()


def download(df: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(f"Download {name} (CSV)", df.to_csv(index=False).encode("utf-8"), file_name=name,
                       mime="text/csv", key=key)


def how_to_make_one() -> None:
    data = str(s.data_dir) if s.data_dir is not None else "$MMGENRE_DATA"
    folder = s.checkpoints / (names[0] if names else "gmu")
    st.info("No explanation store found. Explain a split once per checkpoint (resumable; the Movie page "
            "then reads its explanations from the store too):")
    st.code(f"python -m mmgenre explain-split --checkpoint {shlex.quote(str(folder))} "
            f"--data {shlex.quote(data) if s.data_dir is not None else data} --split test", language="bash")


with loaders.guard():
    names = loaders.models(s.checkpoints)
    contents = loaders.stores(s.checkpoints, s.data_dir)
    for c in contents:
        for note in c.notes:
            (st.warning if not c.usable or "corrupt" in note else st.caption)(loaders.md_escape(note))
    usable = [c for c in contents if c.usable and c.explanations]
    if not names:
        st.info("No trained checkpoints in the checkpoints folder.")
    elif not usable:
        how_to_make_one()
    else:
        c = st.columns([1, 2, 3])  # the method names need the room
        splits = sorted({x.split for x in usable})
        split = c[0].selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                               key="ins_split")
        methods = [m for m in METHODS if any(x.split == split and x.text_method == m for x in usable)]
        method = c[1].selectbox("Plot attributions", methods, format_func=METHODS.get, key="ins_method")
        have = [x for x in usable if x.split == split and x.text_method == method]
        chosen = c[2].multiselect("Models", [x.model for x in have], default=[x.model for x in have],
                                  key="ins_models")
        for x in have:
            n = len(x.explanations) + len(x.errors)
            if n < x.planned:
                st.caption(loaders.md_escape(f"{x.model}: {n} of {x.planned} movies stored so far "
                                             "(the run is incomplete; rerun it to finish)."))
            if x.errors:
                st.caption(loaders.md_escape(f"{x.model}: {len(x.errors)} movies could not be explained "
                                             f"(e.g. {next(iter(x.errors.values()))})."))
        if not chosen:
            st.info("Choose at least one model.")
            st.stop()
        t = loaders.insights(s.checkpoints, s.data_dir, split, method, chosen)
        st.caption(loaders.md_escape(
            f"Aggregated over the genres each stored explanation explains (by default each movie's 3 most "
            f"probable), {split} split; 'movies' is the number of explanations behind each figure."))

        st.subheader("Poster or plot? Reliance per genre")
        measures = [m for m in V.MEASURES if m in t["modality"] and t["modality"][m].notna().any()]
        if measures:
            measure = st.selectbox("Measure", measures, format_func=V.MEASURES.get, key="ins_measure")
            downloads.chart(V.modality_figure(t["modality"], measure), f"reliance_{measure}_{split}",
                            key="ins_modality")
            st.dataframe(t["modality"], hide_index=True)
            download(t["modality"], f"modality_by_genre_{split}.csv", "dl_modality")
        else:
            st.info("The stored explanations have no removal test (ablation).")

        st.subheader("Words that push each genre")
        words = t["words"]
        c = st.columns([1, 1, 1, 1])
        wm = c[0].selectbox("Model", chosen, key="ins_word_model")
        genres = [g for g in GENRES if ((words["model"] == wm) & (words["genre"] == g)).any()]
        if genres:
            wg = c[1].selectbox("Genre", genres, key="ins_word_genre")
            min_movies = c[2].number_input("In at least ... plots", 1, 1000, 3, key="ins_min_movies")
            top = c[3].number_input("Words shown", 5, 100, 20, key="ins_top")
            keep = words[words["movies"] >= min_movies]
            one = keep[(keep["model"] == wm) & (keep["genre"] == wg)].head(int(top))
            if one.empty:
                st.info("No word occurs in that many plots; lower the minimum.")
            else:
                downloads.chart(V.words_figure(one, f"{wm}: words that push {wg} up ({split} split)"),
                                f"top_words_{wm}_{wg}_{split}", key="ins_words")
                st.dataframe(one, hide_index=True)
            download(keep, f"top_words_{split}_min{int(min_movies)}.csv", "dl_words")
        else:
            st.info(f"{wm} has no word scores (it does not read the plot).")

        st.subheader("Average Grad-CAM per genre")
        with_cams = [m for m in chosen if any(k[0] == m for k in t["cams"])]
        if with_cams:
            cm = st.selectbox("Model", with_cams, key="ins_cam_model")
            maps = {g: v for (m, g), v in t["cams"].items() if m == cm}
            downloads.chart(V.mean_cams_figure(maps, f"{cm}: mean Grad-CAM per explained genre (movies)"),
                            f"mean_gradcam_{cm}_{split}", key="ins_cams")
            download(cams_table({(cm, g): v for g, v in maps.items()}), f"mean_gradcam_{cm}_{split}.csv", "dl_cams")
        else:
            st.info("None of the chosen models has Grad-CAM maps (they do not read the poster's pixels).")

        st.subheader("Faithfulness per model")
        downloads.chart(V.faithfulness_figure(t["faithfulness"]), f"faithfulness_{split}", key="ins_faith")
        st.dataframe(t["faithfulness_summary"], hide_index=True)
        a, b = st.columns(2)
        with a:
            download(t["faithfulness_summary"], f"faithfulness_summary_{split}.csv", "dl_faith_summary")
        with b:
            download(t["faithfulness"], f"faithfulness_{split}.csv", "dl_faith")
