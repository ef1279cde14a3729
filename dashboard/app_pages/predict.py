"""Predict page: the Gradio demo, embedded from the same origin (``/gradio/`` behind nginx)."""
from __future__ import annotations

import streamlit as st

from dashboard import core

st.title("Predict")
st.write("Upload a poster and/or type a plot, pick a trained model and get genre probabilities "
         "with a Grad-CAM overlay on the poster and the plot words that drove the prediction.")
url = core.gradio_url()
if url is None:
    # `streamlit run` alone: nothing serves /gradio/, and an iframe would show this app again.
    st.info("The prediction demo is a Gradio app. Start everything behind one address with "
            "`python -m dashboard.serve` (then it appears here), or run it alone with "
            f"`python -m dashboard.gradio_app --port 7861` and set `{core.GRADIO_URL_ENV_VAR}` "
            "to its URL before starting Streamlit.")
else:
    st.iframe(url, height=1500)
    st.caption("The demo above is the Gradio app that `python -m dashboard.serve` serves under "
               "`/gradio/` on this same address. To run it alone: "
               "`python -m dashboard.gradio_app --port 7861`.")
