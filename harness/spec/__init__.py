"""What to run: the suite schema (``suite.py``: parsing, validation, the frozen ``Suite`` and its spec hash) and
the task splits every learner and reference shares (``splits.py``)."""
