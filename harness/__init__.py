"""The meta-RL benchmark harness: suites, tasks, sampling, evaluation, execution, storage, reports."""

__version__ = "0.1.0"
