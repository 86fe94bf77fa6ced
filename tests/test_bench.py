"""``python -m harness bench`` end to end on a tiny configuration.

A smoke test: it runs every case for a few steps and one round through ``register`` and argparse, and
checks the table's structure, not the numbers (timings belong to the benchmarks, never to assertions).
"""

from __future__ import annotations

import argparse

import pytest

from benchmarks import bench

TINY = ["--tasks", "2", "--episode-steps", "5", "--metaworld-tasks", "2", "--metaworld-episode-steps", "5",
        "--cache-steps", "4", "--update-epochs", "1", "--rounds", "1",
        "--pearl-gradient-steps", "1", "--maml-trials-per-task", "2"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness")
    bench.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def test_bench_smoke_every_case_gives_one_row_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(TINY)
    assert args.handler(args) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("case "))
    assert lines[header].split()[:6] == ["case", "rate", "baseline", "ratio", "target", "met"]
    rows = {line.split()[0]: line.split() for line in lines[header + 1: header + 1 + len(bench.CASES)]}
    assert list(rows) == list(bench.CASES)
    for name, cells in rows.items():
        assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0, name
        assert float(cells[3]) > 0, name
    assert rows["mlp"][4:7] == ["≥", "0.8", rows["mlp"][6]] and rows["mlp"][6] in ("yes", "no")
    assert rows["trmrl_cache"][4:6] == ["≤", "0.2"]
    assert rows["random"][4:6] == ["—", "—"]  # no target
    assert "with 1 intra-op thread(s); acting: each learner where it says" in out and "targets missed:" in lines[-1]
    for name in bench.CASES:  # progress went to stderr, case by case
        assert f"] {name}:" in err


def test_bench_rejects_unknown_cases_and_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["--cases", "mlp,nope"])
    assert args.handler(args) == 2
    assert "unknown case(s) nope" in capsys.readouterr().err
    args = _parse(["--cases", "mlp", "--rounds", "0"])
    assert args.handler(args) == 2
    assert "--rounds: must be >= 1" in capsys.readouterr().err
    args = _parse(["--cases", "mlp", "--device", "gpu0"])
    assert args.handler(args) == 2
    assert "--device: 'gpu0' is not a torch device" in capsys.readouterr().err


def test_bench_acting_moves_every_learner_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse([*TINY, "--cases", "gru,trmrl", "--acting", "device"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "acting: device" in out and "device='cpu', acting='device'" in out
    with pytest.raises(SystemExit):
        _parse(["--acting", "gpu"])


def test_bench_is_a_subcommand_of_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["bench", "--cases", "nope"]) == 2
    assert "unknown case(s) nope" in capsys.readouterr().err
