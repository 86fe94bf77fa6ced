"""Throughput benchmarks: each case times a harness or learner path against a baseline measured in the same
process (``bench.py``), shared by the pytest-benchmark files here and ``python -m harness bench``."""
