"""Benchmarks of the offline pipeline (``python -m train.benchmarks.<name>``): ``features``
(extraction speed and memory per encoder), ``train`` (every head from cached features). They
print figures; they are not tests."""
