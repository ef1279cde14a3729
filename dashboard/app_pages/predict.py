"""Predict page: the Gradio demo, embedded from the same origin (``/gradio/`` behind nginx)."""
from __future__ import annotations

import streamlit as st

from dashboard import loaders

st.title("Predict")
st.write("Upload a poster and/or type a plot, pick a trained model and get genre probabilities "
         "with a Grad-CAM overlay on the poster and the plot words that drove the prediction.")
st.iframe(loaders.gradio_url(), height=1500)
st.caption(
    "The demo above is the Gradio app served by `python -m dashboard.serve` under `/gradio/` "
    "on this same address. To run it alone: `python -m dashboard.gradio_app --port 7861` and "
    "open http://127.0.0.1:7861 (if you started Streamlit by itself with `streamlit run`, this "
    f"frame is empty: set `{loaders.GRADIO_URL_ENV_VAR}` to the Gradio app's URL).")
