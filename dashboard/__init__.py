"""mmgenre's web front ends: a Streamlit dashboard (``dashboard/app.py``), a Gradio demo
(``dashboard/gradio_app.py``) and ``python -m dashboard.serve``, which puts both behind one
nginx origin. They reach models only through the ``mmgenre`` library."""
