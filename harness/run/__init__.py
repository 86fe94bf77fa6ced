"""Running a suite: rollouts (``rollout.py``), the evaluation protocol (``evaluate.py``), the results directory
(``store.py``, the only code that reads or writes one), one run (``runner.py``), the executors that schedule
runs on local processes or Ray (``executors.py``), and a suite's cost before it runs (``estimate.py``)."""
