"""Turning stored rows into numbers, tables and figures: every statistic (``metrics.py``), the summary tables
(``summary.py``), plots, the report, the RL² paper's tables, the TrMRL paper's figures, regression against a
committed reference, published numbers and the import of legacy logs."""
