"""Dataset page: split counts, genre statistics, plot/poster distributions, missing modalities,
a filterable poster gallery and the loader's validation report."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import loaders
from dashboard import downloads
from mmgenre import analysis as A
from mmgenre.errors import InputError
from mmgenre.genres import GENRES

PER_PAGE = 24
COLUMNS = 6
# One clearly distinct colour per split on every chart (Streamlit's default blues are too pale).
SPLIT_COLOURS = {"train": "#1f77b4", "dev": "#ff7f0e", "test": "#2ca02c"}
AVAILABLE_COLOURS = {"poster_and_plot": "#1f77b4", "plot_only": "#ff7f0e", "poster_only": "#9467bd"}

st.title("Dataset")
s = loaders.settings()
root = loaders.require_data(s)

with loaders.guard():
    stamp = loaders.data_stamp(root)
    ds = loaders.load_dataset(root)
    tables = loaders.dataset_tables(str(root), stamp)
    st.caption(f"Folder: {loaders.md_escape(root)}")

    counts = tables["splits"]
    total = counts[counts["split"] == "all"].iloc[0]
    c = st.columns(4)
    c[0].metric("Movies", f"{int(total['movies']):,}")
    c[1].metric("With poster", f"{int(total['with_poster']):,}")
    c[2].metric("With plot", f"{int(total['with_plot']):,}")
    c[3].metric("Mean genres per movie", f"{total['mean_genres']:.2f}")
    st.subheader("Counts per split")
    st.dataframe(counts, hide_index=True, column_config={
        "mean_genres": st.column_config.NumberColumn("mean genres", format="%.2f")})

    st.subheader("Genre frequency per split")
    freq = tables["genres"]
    as_share = st.toggle("Show the share of each split's movies (instead of counts)", value=True)
    y = "share" if as_share else "movies"
    fig = px.bar(freq, x="genre", y=y, color="split", barmode="group",
                 color_discrete_map=SPLIT_COLOURS,
                 category_orders={"genre": list(GENRES)},
                 labels={"share": "share of movies", "movies": "movies", "genre": ""})
    if as_share:
        fig.update_yaxes(tickformat=".0%")
    fig.update_layout(height=420, margin=dict(t=40, b=10), legend_title_text="split")
    downloads.chart(fig, "genre_counts")

    st.subheader("Genre co-occurrence")
    left, right = st.columns([1, 3])
    split = left.selectbox("Split", ["all", *ds.splits], key="cooc_split", bind="query-params")
    normalise = left.toggle("Row shares", value=False,
                            help="Each row divided by its diagonal: the share of the row genre's "
                                 "movies that also carry the column genre.")
    co = loaders.cooccurrence(str(root), stamp, None if split == "all" else split)
    values = co.to_numpy().astype(float)
    if normalise:
        values = values / values.diagonal().clip(min=1)[:, None]
    # The diagonal (a genre's own count) would swamp the colour scale: scale to the pairs.
    off = values[~np.eye(len(values), dtype=bool)]
    fig = px.imshow(pd.DataFrame(values, index=co.index, columns=co.columns),
                    color_continuous_scale="Blues", aspect="auto", zmin=0,
                    zmax=float(off.max()) if off.size and off.max() > 0 else None,
                    labels=dict(x="", y="", color="share" if normalise else "movies"),
                    text_auto=".2f" if normalise else True)
    fig.update_layout(height=660, margin=dict(t=40, b=10))
    fig.update_traces(textfont_size=9)
    downloads.chart(fig, "genre_cooccurrence", where=right)
    left.caption("Diagonal: movies carrying the genre. Off-diagonal: movies carrying both. "
                 "Colours are scaled to the largest off-diagonal cell.")

    st.subheader("Plot lengths and poster sizes")
    a, b = st.columns(2)
    lengths = tables["lengths"]
    fig = px.box(lengths[lengths["words"] > 0], x="split", y="words", color="split", log_y=True,
                 color_discrete_map=SPLIT_COLOURS,
                 points="outliers", labels={"words": "plot length (words, log scale)", "split": ""})
    fig.update_layout(height=360, margin=dict(t=40, b=10), title="Plot length", showlegend=False)
    downloads.chart(fig, "plot_length", where=a)
    posters = tables["posters"]
    if posters.empty:
        b.info("No posters found.")
    else:
        fig = px.scatter(posters, x="width", y="height", color="split", opacity=0.5,
                         color_discrete_map=SPLIT_COLOURS,
                         hover_data={"imdb_id": True, "kbytes": ":.0f"},
                         labels={"width": "width (px)", "height": "height (px)"})
        fig.update_layout(height=360, margin=dict(t=40, b=10), title="Poster size")
        downloads.chart(fig, "poster_size", where=b)

    st.subheader("Missing modalities")
    missing = tables["missing"]
    a, b = st.columns([2, 3])
    a.dataframe(missing, hide_index=True)
    long = missing.melt(id_vars="split", value_vars=["poster_and_plot", "plot_only", "poster_only"],
                        var_name="available", value_name="movies")
    fig = px.bar(long, x="split", y="movies", color="available", barmode="stack",
                 color_discrete_map=AVAILABLE_COLOURS)
    fig.update_layout(height=300, margin=dict(t=40, b=10))
    downloads.chart(fig, "modality_availability", where=b)

    st.subheader("Poster gallery")
    f = st.columns([1, 1, 2])
    g_split = f[0].selectbox("Split", ["all", *ds.splits], key="gallery_split", bind="query-params")
    g_genre = f[1].selectbox("Genre", ["all", *GENRES], key="gallery_genre", bind="query-params")
    g_query = f[2].text_input("Title contains", key="gallery_query", bind="query-params", max_chars=100)
    movies = [m for m in A.find_movies(ds, split=None if g_split == "all" else g_split,
                                       genre=None if g_genre == "all" else g_genre, query=g_query)
              if m.has_poster]
    if not movies:
        st.info("No movie with a poster matches these filters.")
    else:
        pages = math.ceil(len(movies) / PER_PAGE)
        st.caption(f"{len(movies):,} posters, {pages} page(s)")
        page = st.pagination(pages, key="gallery_page", bind="query-params") if pages > 1 else 1
        page = min(max(int(page), 1), pages)
        chunk = movies[(page - 1) * PER_PAGE: page * PER_PAGE]
        for row in range(0, len(chunk), COLUMNS):
            cols = st.columns(COLUMNS)
            for col, m in zip(cols, chunk[row:row + COLUMNS]):
                try:
                    thumb = A.poster_thumbnail(m.poster_path, (240, 360))
                except InputError as exc:  # a broken poster gets its message; the page goes on
                    col.warning(loaders.md_escape(str(exc)))
                    continue
                col.image(thumb, width="stretch", caption=loaders.md_escape(A.movie_label(m)))
                col.caption(loaders.md_escape(", ".join(m.genres)))

    st.subheader("Validation report")
    st.code(ds.report.summary(), language=None)
    rep = ds.report
    if rep.bad_files:
        with st.expander(f"{len(rep.bad_files)} bad files"):
            st.dataframe([{"file": p, "problem": r} for p, r in rep.bad_files], hide_index=True)
