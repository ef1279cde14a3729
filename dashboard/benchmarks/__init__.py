"""Benchmarks of what a dashboard user waits for (``python -m dashboard.benchmarks.<name>``):
``pages`` (page response times), ``explain`` (explanation speed and faithfulness), ``load``
(concurrent Gradio requests behind nginx). They print figures; they are not tests."""
