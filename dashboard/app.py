"""mmgenre dashboard: ``streamlit run dashboard/app.py`` (or ``python -m dashboard.serve``).

Pages: ``dashboard.core.PAGES`` (Dataset, Compare, Movie explorer, Insights, Predict: the Gradio app).
Settings (data and checkpoints folders) live in the sidebar; defaults come from
``$MMGENRE_DATA`` and ``$MMGENRE_CHECKPOINTS``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only this folder on sys.path; the pages import `dashboard` and `mmgenre`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from dashboard import loaders  # noqa: E402
from dashboard.core import PAGES  # noqa: E402

st.set_page_config(page_title="mmgenre", layout="wide")
page = st.navigation([st.Page(p.file, title=p.title, url_path=p.url_path, default=i == 0)
                      for i, p in enumerate(PAGES)])
loaders.sidebar()
page.run()
