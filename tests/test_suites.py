"""Every suite shipped in suites/ is valid and its families can supply their splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec import check_splits, load_suite

SUITES = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))


def test_the_suites_directory_holds_the_quickstart() -> None:
    assert "quickstart.yaml" in [p.name for p in SUITES]


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suite_is_valid(path: Path) -> None:
    suite = load_suite(path)
    check_splits(suite)
    assert suite.name == path.stem  # results land in results/<file name>
