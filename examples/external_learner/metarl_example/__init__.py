"""An example of a learner and a task family defined outside the harness's repository.

``metarl_example.learner:ReinforceCounts`` and ``metarl_example.family:GaussianBanditFamily`` are found by a suite
through their import paths, or, once this package is installed, through the entry points its ``pyproject.toml``
registers (``reinforce_counts``, ``gaussian_bandit``).
"""
