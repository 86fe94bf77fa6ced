"""The conformance kit (``python -m harness check-learner``, ``harness/run/conformance.py``): every registered
learner passes it, the example learner passes it, and learners broken on purpose (``broken_learners.py``)
fail it with the reason of their fault, and only where they are at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from algorithms.registry import BUILTIN_LEARNERS, learner_names
from harness.cli import main
from harness.references import TRAINED_REFERENCE_LEARNER
from harness.run.conformance import CHECKS, KitReport, check_learner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "external_learner"
QUICK = [check for check in CHECKS if check != "learns"]
#: Small settings for RL²-based broken learners (their defaults are RL²'s: slower for nothing).
SMALL_RL2 = {"hidden_size": 8, "epochs": 1}


def statuses(report: KitReport) -> dict[str, str]:
    return {result.check: result.status for result in report.results}


def reasons(report: KitReport) -> dict[str, str]:
    return {result.check: result.reason for result in report.results}


@pytest.mark.parametrize("name", [name for name in learner_names() if name in BUILTIN_LEARNERS])
def test_every_registered_learner_passes_the_quick_kit(name: str) -> None:
    """Each about 4 s on one core: a few iterations on 5-arm bandits (PEARL: point navigation)."""
    report = check_learner(name, quick=True)
    assert statuses(report) == {**dict.fromkeys(QUICK, "pass"), "learns": "skip"}, report.table()
    family = "point_nav" if name == "pearl" else "bandit"  # PEARL's squashed Gaussian needs Box actions
    assert report.setting.startswith(f"on {family} ")


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in learner_names()
                                  if name in BUILTIN_LEARNERS and name != TRAINED_REFERENCE_LEARNER])
def test_every_registered_meta_learner_learns_within_the_kits_budget(name: str) -> None:
    """The ``learns`` check with each learner's ``LEARNING`` setting: 5 to 20 s each on one core (numbers in
    ``harness/run/conformance.py``). ``mlp_ppo``, the trained references' memoryless learner, is no meta-learner:
    on bandits it cannot beat random, and the kit says so."""
    report = check_learner(name)
    assert report.ok, report.table()
    assert statuses(report)["learns"] == "pass"


def test_the_example_learner_passes_the_kit_and_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    """With its defaults: ≈ 8 s, the learning check included (100k env steps of 5-arm bandits)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    report = check_learner("metarl_example.learner:ReinforceCounts")
    assert statuses(report) == dict.fromkeys(CHECKS, "pass"), report.table()


@pytest.mark.parametrize(("learner", "failures"), [
    ("MutatingAdapt", {"adapt isolation": "adapt changed the learner's state_dict at net."}),
    ("GlobalRNG", {"seeding": "the same seed gave different rows (the global generators were seeded differently)",
                   "global RNG": "a run moved NumPy's legacy global generator (np.random.*)",
                   # a learner drawing from the global generators cannot resume exactly either
                   "resume": "the resumed run's rows differ from an uninterrupted run's"}),
    ("KeepsMemory", {"memory reset": "after reset, the first action of a trial still depends on the previous trial"}),
])
def test_a_broken_learner_fails_the_checks_of_its_fault_with_the_reason(learner: str, failures: dict[str, str]
                                                                         ) -> None:  # fmt: skip
    report = check_learner(f"broken_learners:{learner}", quick=True, config=SMALL_RL2)
    expected = {**dict.fromkeys(QUICK, "pass"), **dict.fromkeys(failures, "fail"), "learns": "skip"}
    assert statuses(report) == expected, report.table()
    for check, reason in failures.items():
        assert reasons(report)[check].startswith(reason), report.table()
    assert not report.ok


def test_check_learner_prints_the_table_and_its_exit_status_says_whether_all_passed(
    capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that lacks documentation fails ``protocol``, and the runtime checks still run."""
    assert main(["check-learner", "broken_learners:UndocumentedConfig", "--quick", "--config", "hidden_size=8",
                 "--config", "epochs=1"]) == 1
    out = capsys.readouterr().out
    assert "check-learner broken_learners:UndocumentedConfig" in out
    assert ("protocol               fail" in out and "Config has no docstring" in out
            and "Config fields without metadata={'doc': ...}: retries" in out)
    assert "seeding                pass" in out and "7 passed, 1 failed, 1 skipped" in out


def test_check_learner_refuses_a_name_that_is_not_a_learner_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-learner", "my_pkg.learners:MyLearner", "--quick"]) == 2
    assert capsys.readouterr().err == ("error: check-learner my_pkg.learners:MyLearner: cannot import "
                                       "'my_pkg.learners': No module named 'my_pkg'\n")
    assert main(["check-learner", "rl2", "--config", "hidden_size"]) == 2
    assert "--config hidden_size: expected key=value" in capsys.readouterr().err
