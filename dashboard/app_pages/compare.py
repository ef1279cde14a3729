"""Compare page: the leaderboard, metric bars with bootstrap intervals, per-genre F1, PR/ROC
curves, a paired bootstrap test, unimodal-vs-multimodal gains and complete-pair figures.
Reads checkpoint folders only; no data folder needed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import core, downloads, loaders
from mmgenre import analysis as A
from mmgenre.errors import InputError
from mmgenre.genres import GENRES
from mmgenre.leaderboard import F1_KEYS
from mmgenre.metrics import LEADERBOARD_KEYS, METRIC_KEYS

DEFAULT_METRICS = ["micro_f1", "macro_f1", "samples_f1", "map_macro"]


@st.cache_data(ttl=15, show_spinner=False)  # a run still training changes its store: re-read soon
def _runs(store: str) -> pd.DataFrame:
    from mmgenre.runs import read_runs
    return read_runs(store)


def tracked_runs() -> None:
    """The runs of ``$MMGENRE_MLRUNS`` (``python -m train --track mlflow``); nothing without a store."""
    from mmgenre.runs import is_store
    store = core.default_mlruns()
    if not is_store(store):
        return
    st.subheader("Tracked runs (MLflow)")
    with loaders.guard():
        runs = _runs(str(store))
        if runs.empty:
            st.info(f"No runs of the experiment `mmgenre` in {loaders.md_escape(store)}.")
            return
        metric = [c for c in runs.columns if c.startswith(("dev/", "test/"))]
        st.dataframe(runs, hide_index=True, column_config={
            **{c: st.column_config.NumberColumn(format="%.4f") for c in metric},
            "train_seconds": st.column_config.NumberColumn("train s", format="%.0f"),
            "start_time": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm")})
        st.caption(f"{len(runs)} runs in {loaders.md_escape(store)}, newest first (set `{core.MLRUNS_ENV_VAR}` "
                   "to read another store). `mlflow ui --backend-store-uri` on that folder shows their curves.")

st.title("Compare models")
s = loaders.settings()
with loaders.guard():
    board = loaders.leaderboard(s.checkpoints)
    names = loaders.models(s.checkpoints)
    if board.empty or not names:
        st.info(f"No trained checkpoints in {loaders.md_escape(s.checkpoints)}. Train some with "
                "`python -m train --data $MMGENRE_DATA --models all --out checkpoints/` or set "
                "the **Checkpoints folder** in the sidebar.")
        tracked_runs()
        st.stop()
    board = board[board["model"].isin(names)].reset_index(drop=True)
    protocols = ", ".join(f"`{p}`" for p in A.training_protocols(s.checkpoints, list(board["model"])))
    st.caption(f"Test-split figures of {len(board)} models in {loaders.md_escape(s.checkpoints)}; "
               f"per-genre thresholds were tuned under the {protocols} protocol (see README). "
               "Click a column header to sort.")

    st.subheader("Leaderboard")
    number = {c: st.column_config.NumberColumn(format="%.4f") for c in board.columns
              if c not in ("model", "modalities", "n_movies", "train_seconds")}
    number["train_seconds"] = st.column_config.NumberColumn("train s", format="%.0f")
    st.dataframe(board, hide_index=True, column_config=number)

    st.subheader("Metrics")
    metric_options = [k for k in LEADERBOARD_KEYS if k in board.columns]
    chosen = st.multiselect("Metrics", metric_options,
                            default=[k for k in DEFAULT_METRICS if k in metric_options])
    if chosen:
        rows = []
        for r in board.itertuples(index=False):
            rec = r._asdict()
            for k in chosen:
                lo, hi = rec.get(f"{k}_ci_low"), rec.get(f"{k}_ci_high")
                v = rec[k]
                has_ci = lo is not None and hi is not None and pd.notna(lo) and pd.notna(hi)
                rows.append({"model": r.model, "metric": k, "value": v,
                             "plus": (hi - v) if has_ci else None, "minus": (v - lo) if has_ci else None})
        long = pd.DataFrame(rows)
        fig = px.bar(long, x="model", y="value", color="metric", barmode="group",
                     error_y="plus", error_y_minus="minus", labels={"model": "", "value": ""})
        fig.update_layout(height=420, margin=dict(t=40, b=10))
        downloads.chart(fig, "metrics")
        st.caption("Error bars: 95% bootstrap intervals over test movies (where the checkpoint "
                   "stored them).")

    st.subheader("Per-genre F1")
    mat = loaders.per_genre(s.checkpoints, list(board["model"]))
    if mat.empty:
        st.info("No per-genre tables in these checkpoints' metrics.json.")
    else:
        fig = px.imshow(mat, color_continuous_scale="Viridis", zmin=0, zmax=1, aspect="auto",
                        text_auto=".2f", labels=dict(x="", y="", color="F1"))
        fig.update_traces(textfont_size=9)
        fig.update_layout(height=max(280, 34 * len(mat) + 160), margin=dict(t=40, b=10))
        downloads.chart(fig, "per_genre_f1")

    st.subheader("Precision-recall and ROC curves")
    c1, c2 = st.columns([1, 3])
    genre = c1.selectbox("Genre", GENRES, key="curve_genre", bind="query-params")
    picked = c2.multiselect("Models", list(board["model"]), default=list(board["model"][:3]),
                            key="curve_models")
    pr, roc = go.Figure(), go.Figure()
    problems = []
    for model in picked:
        pred, _ = loaders.predictions(s.checkpoints, model)
        try:
            cur = A.genre_curves(pred, genre, "test")
        except InputError as exc:
            problems.append(f"{model}: {exc}")
            continue
        precision, recall, _ = cur["pr"]
        fpr, tpr, _ = cur["roc"]
        pr.add_scatter(x=recall, y=precision, mode="lines", name=model, line_shape="hv")
        roc.add_scatter(x=fpr, y=tpr, mode="lines", name=model)
    roc.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                    line=dict(dash="dot", color="grey"))
    pr.update_layout(height=380, margin=dict(t=40, b=10), title=f"Precision-recall: {genre}",
                     xaxis_title="recall", yaxis_title="precision", xaxis_range=[0, 1],
                     yaxis_range=[0, 1.02])
    roc.update_layout(height=380, margin=dict(t=40, b=10), title=f"ROC: {genre}",
                      xaxis_title="false positive rate", yaxis_title="true positive rate")
    a, b = st.columns(2)
    downloads.chart(pr, f"precision_recall_{genre}", where=a)
    downloads.chart(roc, f"roc_{genre}", where=b)
    for p in problems:
        st.warning(loaders.md_escape(p))

    st.subheader("Paired significance test")
    c = st.columns([1, 1, 1])
    model_a = c[0].selectbox("Model A", list(board["model"]), index=0, key="paired_a", bind="query-params")
    model_b = c[1].selectbox("Model B", list(board["model"]), index=min(1, len(board) - 1),
                             key="paired_b", bind="query-params")
    key = c[2].selectbox("Metric", METRIC_KEYS, index=METRIC_KEYS.index("micro_f1"), key="paired_key", bind="query-params")
    if model_a == model_b:
        st.info("Choose two different models.")
    else:
        res = loaders.paired_test(s.checkpoints, model_a, model_b, key)
        m = st.columns(4)
        m[0].metric(f"A: {model_a}", f"{res['a']:.4f}")
        m[1].metric(f"B: {model_b}", f"{res['b']:.4f}")
        m[2].metric("A - B", f"{res['diff']:+.4f}",
                    help="95% interval of the paired bootstrap differences below")
        m[3].metric("p-value (two-sided)", f"{res['p_value']:.3f}")
        verdict = ("significant at the 5% level" if res["p_value"] < 0.05
                   else "not significant at the 5% level")
        st.write(f"Paired bootstrap over the same {res['n_movies']} test movies (1000 resamples): "
                 f"difference {res['diff']:+.4f}, 95% interval [{res['ci_low']:+.4f}, "
                 f"{res['ci_high']:+.4f}], {verdict}.")

    st.subheader("Does fusion help? Multimodal vs best unimodal")
    gain_metric = st.selectbox("Metric", metric_options,
                               index=metric_options.index("micro_f1") if "micro_f1" in metric_options else 0,
                               key="gain_metric", bind="query-params")
    gains = A.modality_gains(board, gain_metric)
    if gains.empty:
        st.info("Needs at least one multimodal and one unimodal checkpoint.")
    else:
        helps = gains.assign(effect=np.where(gains["gain"] >= 0, "fusion helps", "fusion hurts"))
        fig = px.bar(helps, x="model", y="gain", color="effect", text="gain",
                     color_discrete_map={"fusion helps": "#1f77b4", "fusion hurts": "#d62728"},
                     hover_data=["best_unimodal", "unimodal_value"],
                     labels={"model": "", "gain": f"{gain_metric} gain", "effect": ""})
        fig.update_traces(texttemplate="%{text:+.3f}", textposition="outside", cliponaxis=False)
        fig.update_layout(height=340, margin=dict(t=40, b=10))
        downloads.chart(fig, f"fusion_gain_{gain_metric}")
        st.dataframe(gains, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="%+.4f" if c == "gain" else "%.4f")
            for c in (gain_metric, "unimodal_value", "gain")})
        st.caption("Gain: the multimodal model's figure minus that of the best unimodal model "
                   "among those reading one of its modalities (positive: fusion helps).")

    st.subheader("All test movies vs complete pairs (plot and poster both present)")
    complete_cols = [f"{k}_complete" for k in F1_KEYS if f"{k}_complete" in board.columns]
    if not complete_cols:
        st.info("These checkpoints stored no complete-pair figures.")
    else:
        pair_key = st.selectbox("F1", [c.removesuffix("_complete") for c in complete_cols],
                                key="complete_key", bind="query-params")
        long = pd.concat([
            pd.DataFrame({"model": board["model"], "movies": "all test movies", "value": board[pair_key]}),
            pd.DataFrame({"model": board["model"], "movies": "complete pairs",
                          "value": board[f"{pair_key}_complete"]})])
        fig = px.bar(long, x="model", y="value", color="movies", barmode="group",
                     labels={"model": "", "value": pair_key})
        fig.update_layout(height=340, margin=dict(t=40, b=10))
        downloads.chart(fig, f"all_vs_complete_{pair_key}")

tracked_runs()
