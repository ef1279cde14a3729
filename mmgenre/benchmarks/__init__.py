"""Benchmark scripts (run with python -m mmgenre.benchmarks.<name>); they print figures, they are not tests."""
