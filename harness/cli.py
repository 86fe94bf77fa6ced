"""``python -m harness``: run, validate, estimate, reuse, status, report, regress, figures, import-garage, bench, tasks,
check-learner."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from harness.references import references_for
from harness.spec.splits import check_splits
from harness.spec.suite import SpecError, Suite, load_suite


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _checked_suite(path: str) -> Suite | None:
    """The suite at ``path`` with its splits checked, or None after printing why not (every problem with its
    key path)."""
    try:
        suite = load_suite(path)
        check_splits(suite)
    except SpecError as e:
        print(e, file=sys.stderr)
        return None
    return suite


def _build_errors(suite: Suite) -> list[str]:
    """Build one environment per family, set its first training task, reset it and take one step; then build
    every learner that runs on the family (and its trained references) once on the family's spaces."""
    from algorithms.base import MetaEnvInfo
    from harness.run.runner import is_trained, reference_keys, training
    from harness.run.store import RunKey
    from harness.spec.splits import build_splits

    errors = []
    splits = build_splits(suite)
    for i, family in enumerate(suite.families):
        try:
            env = family.family.make_env()
            family.family.set_task(env, splits[family.key]["train"][0])
            env.reset(seed=0)
            env.step(env.action_space.sample())
            spaces = {family.family: (env.observation_space, env.action_space)}
            env.close()
        except Exception as e:  # any failure to build is reported, with its type, before anything runs
            errors.append(f"families[{i}] ({family.key}): cannot build its environment: {type(e).__name__}: {e}")
            continue
        keys = [k for k in reference_keys(suite) if k.family == family.key and k.seed == suite.spec.seeds[0]
                and is_trained(suite, k)]
        keys += [RunKey(a.key, family.key, suite.spec.seeds[0]) for a in suite.algorithms if a.runs_on(family.key)]
        for key in keys:
            plan = training(suite, key)
            where = (f"algorithms[{[a.key for a in suite.algorithms].index(key.algorithm)}] ({key.algorithm})"
                     if key.kind == "learner" else f"families[{i}].references ({key.algorithm})")
            try:
                if plan.view not in spaces:  # the oracle's told view: one more environment
                    view = plan.view.make_env()
                    spaces[plan.view] = (view.observation_space, view.action_space)
                    view.close()
                plan.cls(MetaEnvInfo(*spaces[plan.view], family.episodes_per_trial, family.family.max_episode_steps),
                         plan.config, seed=0, device="cpu")
            except Exception as e:  # e.g. a continuous-action learner on a discrete family
                message = str(e).splitlines()[0] if str(e) else ""
                errors.append(f"{where}: cannot be built on {family.key}'s spaces: {type(e).__name__}: {message}")
    return errors


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.suites:
        try:
            suite = load_suite(path)
            check_splits(suite)
        except SpecError as e:
            print(e, file=sys.stderr)
            status = 2
            continue
        errors = _build_errors(suite)
        if errors:
            print(f"{path}:\n" + "\n".join(f"  {line}" for line in errors), file=sys.stderr)
            status = 2
            continue
        from harness.run.runner import learner_keys

        runs = len(learner_keys(suite))
        grid = len(suite.algorithms) * len(suite.families) * len(suite.spec.seeds)
        shape = f"{len(suite.algorithms)} algorithms × {len(suite.families)} families × {len(suite.spec.seeds)} seeds"
        print(f"{path}: ok — {runs} learner runs ({shape}" + (", some restricted by `only`" if runs < grid else "")
              + f"), splits drawn and environments built, spec hash {suite.spec_hash}")
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from harness.run.executors import InfeasibleResourcesError, MissingRayError, run_local, run_ray
    from harness.run.store import LockedError, SuiteMismatchError

    suite = _checked_suite(args.suite)
    if suite is None:
        return 2
    if args.workers is not None and args.workers < 1:
        return _fail("--workers: must be >= 1")
    if args.max_retries is not None and args.max_retries < 0:
        return _fail("--max-retries: must be >= 0")
    if args.executor == "ray" and args.workers is not None:
        return _fail("--workers: applies to --executor local; on Ray, runs ask for their algorithm's `resources`")
    if args.executor == "local" and args.address is not None:
        return _fail("--address: applies to --executor ray")
    if args.executor == "local" and suite.spec.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return _fail(f"device: {suite.spec.device} asked for, but this machine has no CUDA device "
                         "(use device: auto to run on the CPU where there is none)")
    errors = _build_errors(suite)  # a learner that cannot run on a family fails here, before any run starts
    if errors:
        print(f"{args.suite}:\n" + "\n".join(f"  {line}" for line in errors), file=sys.stderr)
        return 2
    results_dir = Path(args.results or Path("results") / suite.name)
    try:
        if args.executor == "ray":
            outcome = run_ray(suite, results_dir, args.address, args.retry_failed, max_retries=args.max_retries)
        else:
            outcome = run_local(suite, results_dir, args.workers, args.retry_failed, max_retries=args.max_retries)
    except LockedError as e:
        return _fail(f"{e}; wait for it to finish, or choose another --results directory")
    except (SuiteMismatchError, MissingRayError, InfeasibleResourcesError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept and running ones checkpointed; run the same command again "
              "to resume them", file=sys.stderr)
        return 130
    print(f"{len(outcome.done)} runs finished, {len(outcome.skipped)} already done, {len(outcome.failed)} failed"
          + (f", {sum(outcome.retries.values())} retries" if outcome.retries else ""))
    for key, error in outcome.failed.items():
        last = error.strip().splitlines()[-1] if error.strip() else "unknown error"
        print(f"  FAILED {key.label}: {last}")
    for key, error in outcome.locked.items():
        print(f"  NOT RUN {key.label}: {error}; run the command again once it is finished")
    for key in outcome.interrupted:
        print(f"  INTERRUPTED {key.label}: stopped by a signal after a checkpoint; run the command again to resume")
    if outcome.failed:
        print(f"tracebacks are in the runs' manifest.json files under {results_dir}/runs; "
              "`--retry-failed` runs them again")
    print(f"results: {results_dir}   next: python -m harness report {results_dir}")
    return 0 if outcome.ok else 1


def cmd_estimate(args: argparse.Namespace) -> int:
    from harness.run.estimate import estimate_suite, format_estimate
    from harness.run.executors import default_workers
    from harness.run.runner import resolve_device

    try:
        suite = load_suite(args.suite)
        splits_start = time.process_time()  # the first draw of the splits: every worker pays it once
        check_splits(suite)
        splits_s = time.process_time() - splits_start
    except SpecError as e:
        print(e, file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        return _fail("--workers: must be >= 1")
    if args.iterations < 1:
        return _fail("--iterations: must be >= 1")
    device = resolve_device(args.device or suite.spec.device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return _fail(f"--device {device}: this machine has no CUDA device")
    errors = _build_errors(suite)
    if errors:
        print(f"{args.suite}:\n" + "\n".join(f"  {line}" for line in errors), file=sys.stderr)
        return 2
    estimate = estimate_suite(suite, args.workers or default_workers(suite), device, args.iterations, args.cached,
                              log=lambda line: print(f"estimate: {line}", file=sys.stderr, flush=True),
                              splits_s=splits_s)
    print(format_estimate(estimate))
    return 0


def cmd_reuse(args: argparse.Namespace) -> int:
    from harness.run.reuse import reuse
    from harness.run.store import LockedError, SuiteMismatchError

    suite = _checked_suite(args.suite)
    if suite is None:
        return 2
    results_dir = Path(args.results or Path("results") / suite.name)
    try:
        outcome = reuse(suite, results_dir, args.earlier)
    except LockedError as e:
        return _fail(f"{e}; wait for it to finish, or choose another --results directory")
    except (SuiteMismatchError, FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    for entry in outcome:
        print(f"  {entry.action:<10}  {entry.key.label:<40}  {entry.detail}")
    adopted = sum(e.action == "adopted" for e in outcome)
    print(f"{adopted} of {len(outcome)} runs reused from {args.earlier} into {results_dir}; "
          f"`python -m harness run {args.suite}" + (f" --results {args.results}" if args.results else "")
          + "` runs the rest")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.run.store import RunKey, RunStatus, RunStore, SuiteDir

    results_dir = Path(args.results_dir)
    if not SuiteDir(results_dir).exists():
        return _fail(f"{results_dir} is not a results directory (no suite.yaml)")
    manifests = SuiteDir(results_dir).manifests()
    counts = Counter(m.get("status", "?") for m in manifests)
    started = {(m["algorithm"], m["family"], int(m["seed"])) for m in manifests}
    not_started = [key for key in _planned_learner_runs(SuiteDir(results_dir).resolved_spec())
                   if (key.algorithm, key.family, key.seed) not in started]
    print(f"{results_dir}: {len(manifests)} runs — " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f"; {len(not_started)} learner run(s) not started" if not_started else ""))
    for m in sorted(manifests, key=lambda m: (m["kind"], m["algorithm"], m["family"], m["seed"])):
        steps = f"{m.get('env_steps', 0)}/{m['env_steps_budget']}" if "env_steps_budget" in m else "-"
        line = f"  {m['status']:<11} {m['algorithm']}/{m['family']}/seed={m['seed']}  env steps {steps}"
        if m.get("status") in (RunStatus.FAILED, RunStatus.INTERRUPTED) and m.get("error"):
            line += f"  ({m['error'].strip().splitlines()[-1]})"
        if m.get("status") == RunStatus.RUNNING:
            key = RunKey(m["algorithm"], m["family"], int(m["seed"]), m.get("kind", "learner"))
            writer = RunStore(results_dir, key).writer()
            # "running" with nobody holding the run's lock: its process died; re-running resumes it
            line += f"  (written by {writer})" if writer else "  (no process is running it: killed? re-run to resume)"
        if m.get("attempts", 1) > 1:
            line += f"  [{m['attempts']} attempts]"
        if m.get("reused_from"):  # adopted by `harness reuse` from a results directory of an earlier spec
            line += f"  [reused from spec {m['reused_from'].get('spec_hash')}]"
        print(line)
    for key in not_started:
        print(f"  {'not started':<11} {key.algorithm}/{key.family}/seed={key.seed}")
    print(_status_eta(results_dir, manifests))
    return 1 if counts.get(RunStatus.FAILED) else 0


def _planned_learner_runs(resolved: dict[str, Any]) -> list[Any]:
    """The learner runs a resolved spec (``suite.yaml``'s ``spec``) plans: algorithms × the families each has a
    budget on × seeds (empty when the spec has no resolved budgets)."""
    from harness.run.store import RunKey

    try:
        return [RunKey(a["id"], f["id"], seed) for a in resolved["algorithms"] for f in resolved["families"]
                if f["id"] in a["budgets"] for seed in resolved["seeds"]]
    except (KeyError, TypeError):
        return []


def _status_eta(results_dir: Path, manifests: list[dict[str, Any]]) -> str:
    """The ETA of a suite being run, from its manifests (each run kind's measured seconds per env step) and the
    costs ``harness estimate`` cached on this machine, with the runs running now as the workers."""
    from harness.run.estimate import cached_run_seconds
    from harness.run.executors import estimate_remaining, observe
    from harness.run.runner import resolve_device
    from harness.run.store import REFERENCE_PREFIX, RunKey, RunStatus, RunStore, SuiteDir

    resolved = SuiteDir(results_dir).resolved_spec()
    by_key = {RunKey(m["algorithm"], m["family"], int(m["seed"]), m.get("kind", "learner")): m for m in manifests}
    keys = [k for k in by_key if k.kind == "reference"]  # references not started yet are not known here: seconds
    try:
        budgets = {(a["id"], family): int(budget) for a in resolved["algorithms"]
                   for family, (budget, _every) in a["budgets"].items()}
        keys += _planned_learner_runs(resolved)
        budgets.update({(key.algorithm, key.family): int(f["reference_training"]["budget"][0])
                        for f in resolved["families"] if "reference_training" in f
                        for key in keys if key.kind == "reference" and key.family == f["id"]
                        and key.algorithm.removeprefix(REFERENCE_PREFIX) in f["reference_training"]["references"]})
    except (KeyError, TypeError, ValueError):
        return "ETA: unknown (suite.yaml has no resolved budgets)"
    now, runs, workers = time.time(), [], 0
    for key in keys:
        manifest = by_key.get(key)
        reference = (key.algorithm, key.family) not in budgets  # one evaluation, no training
        measured = None
        if manifest and manifest.get("status") == RunStatus.RUNNING:
            workers += RunStore(results_dir, key).writer() is not None
            rows = RunStore(results_dir, key).rows() if int(manifest.get("attempts", 1)) > 1 else None
            if rows is not None and len(rows) and rows["env_steps"].max() > 0:  # resumed: its rows carry the time
                last = rows.loc[rows["env_steps"].idxmax()]
                measured = (float(last["wall_s"]), int(last["env_steps"]))
        budget = 0 if reference else budgets[(key.algorithm, key.family)]
        runs.append(observe((key.algorithm, key.family), reference, budget, manifest, now, measured=measured))
    if all(run.status in (RunStatus.DONE, RunStatus.FAILED) for run in runs):
        return "ETA: nothing left to run"
    if not workers:
        return "ETA: no run is being written now (re-run the suite to go on)"
    device = next((m["device"] for m in manifests if m.get("device")), resolve_device(resolved.get("device", "auto")))
    checkpoint_every_s = float((resolved.get("execution") or {}).get("checkpoint_every_s", 60.0))
    eta = estimate_remaining(runs, workers, cached_run_seconds(resolved, device, checkpoint_every_s=checkpoint_every_s))
    return f"{eta.text()} (the runs left, {workers} at a time as now)"


def cmd_report(args: argparse.Namespace) -> int:
    from harness.analysis.report import FORMATS, report
    from harness.run.store import SuiteDir

    results_dir = Path(args.results_dir)
    if not SuiteDir(results_dir).exists():
        return _fail(f"{results_dir} is not a results directory (no suite.yaml)")
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        return _fail(f"--format: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(FORMATS)}")
    out = Path(args.out) if args.out else results_dir / "report"
    path = report(results_dir, out, formats)
    print(f"report: {path}" + (f" (and {', '.join(f for f in formats if f != 'md')} tables in {out})"
                               if len(formats) > 1 or formats != ["md"] else ""))  # fmt: skip
    return 0


#: The file that marks a directory as regress's own scratch results (which its next run deletes).
_REGRESS_SCRATCH = ".regress-scratch"


def cmd_regress(args: argparse.Namespace) -> int:
    import shutil

    from harness.analysis.regress import compare, format_table
    from harness.run.executors import run_local
    from harness.run.store import SuiteDir

    suite = _checked_suite(args.suite)
    if suite is None:
        return 2
    against = Path(args.against)
    if not args.update and SuiteDir(against).tasks_hash() is None:
        return _fail(f"--against {against}: no reference results there (make them with --update)")
    if args.candidate is not None:  # results run already (elsewhere, or by `harness run`): compare them as they are
        if args.update or args.results or args.workers:
            return _fail("--candidate: compares existing results; it takes no --update, --results or --workers")
        candidate = SuiteDir(args.candidate)
        if candidate.spec_hash() is None or candidate.spec_hash() != suite.spec_hash:
            return _fail(f"--candidate {candidate.path}: holds no results of {args.suite} (its spec hash "
                         f"{candidate.spec_hash()}, the suite's {suite.spec_hash})")
        results_dir = candidate.path
    else:
        results_dir = Path(args.results or Path("results") / "regress" / suite.name)
        marker = results_dir / _REGRESS_SCRATCH
        if results_dir.exists() and args.results and any(results_dir.iterdir()) and not marker.exists():
            return _fail(f"--results {results_dir}: holds files regress did not write, and regress empties its "
                         "scratch directory before every run; choose another directory (or compare results "
                         f"already there with --candidate {results_dir})")
        if results_dir.exists():  # scratch: every regression runs the suite afresh
            shutil.rmtree(results_dir)
        results_dir.mkdir(parents=True)
        marker.write_text("scratch results of `harness regress`, deleted by its next run\n")
        outcome = run_local(suite, results_dir, args.workers)
    if args.update:
        if not outcome.ok:
            return _fail(f"{len(outcome.failed)} run(s) failed; the reference was not updated")
        runs = SuiteDir(results_dir).copy_to(SuiteDir(against))
        print(f"reference updated: {runs} runs written to {against} (commit them)")
        return 0
    result = compare(results_dir, against, args.margin)
    print(format_table(result))
    verdict = "passed" if result.ok else "FAILED"
    print(f"regression {verdict}: {int((result.table['status'] == 'ok').sum())}/{len(result.table)} checks within "
          f"the reference's band (margin {args.margin}); candidate results in {results_dir}")
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from harness.run.store import RunStatus, SuiteDir

    source, target = SuiteDir(args.results_dir), SuiteDir(args.out)
    if not source.exists():
        return _fail(f"{source.path} is not a results directory (no suite.yaml)")
    if target.path.resolve() == source.path.resolve():
        return _fail("--out: must differ from the results directory")
    if target.path.exists() and not target.exists():
        return _fail(f"--out {target.path}: exists and is not a results directory; choose another")
    unfinished = [m for m in source.manifests() if m.get("status") != RunStatus.DONE]
    if unfinished and not args.partial:
        return _fail(f"{len(unfinished)} run(s) not done (e.g. {unfinished[0]['algorithm']}/{unfinished[0]['family']}"
                     f"/seed={unfinished[0]['seed']}: {unfinished[0].get('status')}); finish them, or pass --partial")
    runs = source.copy_to(target, timings=True)
    size = sum(path.stat().st_size for path in target.path.rglob("*") if path.is_file())
    elided = "; task parameters left out of tasks.json, the suite re-draws them" if "elided" in target.tasks() else ""
    print(f"{runs} runs exported to {target.path} ({size / 2**20:.1f} MiB, no checkpoints{elided})")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from harness.analysis.figures import make_figures

    results_dir = Path(args.results)
    out = Path(args.out) if args.out else results_dir / "figures"
    try:
        written, missing = make_figures(results_dir, out)
    except FileNotFoundError as e:
        return _fail(str(e))
    for path in written:
        print(f"figure: {path}")
    for line in missing:
        print(f"missing: {line}")
    print(f"index: {out / 'figures.md'} ({len(written)} figures, {len(missing)} with missing results)")
    return 0


def cmd_import_garage(args: argparse.Namespace) -> int:
    from harness.analysis.legacy import import_garage

    try:
        store, count = import_garage(args.progress_csv, args.results, args.algorithm, args.family, args.seed,
                                     args.force)  # fmt: skip
    except (OSError, ValueError) as e:
        return _fail(str(e))
    print(f"imported {count} rows into {store.dir}   next: python -m harness report {args.results}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.tasks import family_class, family_names

    if args.family is None:
        for name in family_names():
            cls = family_class(name)
            print(f"{name:<12} {(cls.__doc__ or '').strip().splitlines()[0]}")
        return 0
    try:
        cls = family_class(args.family)
    except KeyError as e:
        return _fail(e.args[0])
    family = cls(cls.Params())
    info = family.describe()
    info["parameters"] = {name: {"default": json.loads(json.dumps(f.default, default=str)), "doc": f.description}
                          for name, f in cls.Params.model_fields.items()}
    # Offered at the default parameters; a suite evaluates the standard ones unless its family entry names its own.
    info["references"] = {name: ("" if getattr(ref, "standard", True) else "(run when named) ") + ref.description
                          for name, ref in references_for(family).items()}
    doc = textwrap.dedent(info.pop("doc", ""))
    print(f"{info['family']} (version {info['version']})\n\n{doc.strip()}\n")
    print(yaml.safe_dump(info, sort_keys=False, allow_unicode=True, width=120))
    return 0


def cmd_check_learner(args: argparse.Namespace) -> int:
    from harness.run.conformance import check_learner

    config: dict[str, Any] = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return _fail(f"--config {item}: expected key=value (the value in YAML, e.g. hidden_sizes=[16,16])")
        config[key] = yaml.safe_load(value)
    if args.learn_env_steps is not None and args.learn_env_steps < 1:
        return _fail("--learn-env-steps: must be >= 1")

    def progress(result: Any) -> None:
        print(f"check-learner: {result.check}: {result.status}", file=sys.stderr, flush=True)

    try:
        report = check_learner(args.learner, args.family, args.quick, args.preset,
                               config if args.config or args.preset else None, args.learn_env_steps, log=progress)
    except KeyError as e:  # the name does not import, or is not a learner class: one line
        return _fail(f"check-learner {args.learner}: {e.args[0]}")
    print(report.table())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Meta-RL benchmark harness.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a suite (resumes interrupted runs, skips finished ones)")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    run.add_argument("--results", default=None, help="results directory (default: results/<suite name>)")
    run.add_argument("--retry-failed", action="store_true", help="run again the runs marked failed")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local worker processes (default), or Ray tasks on a cluster (needs the `ray` extra)")
    run.add_argument("--address", default=None,
                     help="Ray cluster address (`auto`: the cluster started on this machine; default: a new local "
                     "Ray instance)")
    run.add_argument("--max-retries", type=int, default=None,
                     help="retries of a failed run from its checkpoint (default: the suite's execution.max_retries)")
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser("validate", help="check suite files without running anything")
    validate.add_argument("suites", nargs="+")
    validate.set_defaults(handler=cmd_validate)

    estimate = commands.add_parser(
        "estimate", help="time each run kind of a suite on this machine and predict the suite's wall time and cost")
    estimate.add_argument("suite", help="suite YAML file")
    estimate.add_argument("--workers", type=int, default=None,
                          help="workers (or a Ray cluster's CPUs) to schedule the runs on (default: one per core)")
    estimate.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"),
                          help="device of the learners' networks and updates (default: the suite's)")
    estimate.add_argument("--iterations", type=int, default=2,
                          help="training iterations timed per run kind, the first included (default: %(default)s)")
    estimate.add_argument("--cached", action="store_true",
                          help="reuse the costs cached on this machine by an earlier estimate, timing only the others "
                          "(a plain estimate times every kind and refreshes the cache)")
    estimate.set_defaults(handler=cmd_estimate)

    reuse = commands.add_parser(
        "reuse", help="copy into a suite's results directory the runs of an earlier one whose own inputs are "
        "unchanged (a changed learner config re-runs that learner only)")
    reuse.add_argument("suite", help="suite YAML file")
    reuse.add_argument("--from", dest="earlier", required=True,
                       help="an earlier results directory (of the suite before its change)")
    reuse.add_argument("--results", default=None, help="results directory (default: results/<suite name>)")
    reuse.set_defaults(handler=cmd_reuse)

    status = commands.add_parser("status", help="state of every run in a results directory")
    status.add_argument("results_dir")
    status.set_defaults(handler=cmd_status)

    report = commands.add_parser("report", help="tables and plots from stored results")
    report.add_argument("results_dir")
    report.add_argument("--out", default=None, help="output directory (default: RESULTS_DIR/report)")
    report.add_argument("--format", default="md", help="comma-separated: md (markdown + PNGs), latex, csv")
    report.set_defaults(handler=cmd_report)

    regress = commands.add_parser("regress", help="run a suite and compare it with reference results")
    regress.add_argument("suite", help="suite YAML file (e.g. suites/ci.yaml)")
    regress.add_argument("--against", required=True, help="reference results directory (e.g. results/reference/ci)")
    regress.add_argument("--results", default=None, help="scratch results directory (default: results/regress/<suite>)")
    regress.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    regress.add_argument("--margin", type=float, default=0.25,
                         help="band widening: a fraction of the reference's learning progress (default: %(default)s)")
    regress.add_argument("--update", action="store_true", help="write the new results as the reference instead")
    regress.add_argument("--candidate", default=None,
                         help="compare these results of the suite (run already, e.g. by `harness run` or on a "
                         "cluster) instead of running it")
    regress.set_defaults(handler=cmd_regress)

    export = commands.add_parser("export", help="copy a results directory's rows, manifests, spec and splits "
                                                "(no checkpoints) to commit them, e.g. under results/reference/")
    export.add_argument("results_dir")
    export.add_argument("out", help="where to write the copy (replaced if it is a results directory)")
    export.add_argument("--partial", action="store_true", help="export even if some runs are not done")
    export.set_defaults(handler=cmd_export)

    figures = commands.add_parser("figures", help="regenerate the TrMRL paper's figures from suites/paper.yaml results")
    figures.add_argument("--results", default="results/paper", help="results directory (default: %(default)s)")
    figures.add_argument("--out", default=None, help="output directory (default: RESULTS/figures)")
    figures.set_defaults(handler=cmd_figures)

    legacy = commands.add_parser("import-garage", help="turn a garage/dowel progress.csv into a run's result rows")
    legacy.add_argument("progress_csv")
    legacy.add_argument("--algorithm", required=True, help="algorithm name for the run (e.g. maml-garage)")
    legacy.add_argument("--family", required=True, help="task family id, as in the suite")
    legacy.add_argument("--seed", type=int, required=True)
    legacy.add_argument("--results", default="results/imported", help="results directory (default: %(default)s)")
    legacy.add_argument("--force", action="store_true", help="overwrite a run of the same name")
    legacy.set_defaults(handler=cmd_import_garage)

    from benchmarks.bench import register as register_bench

    register_bench(commands)  # `bench`: throughput ratios on this machine (benchmarks/bench.py)

    check = commands.add_parser(
        "check-learner", help="the conformance kit: does a learner keep the contract (algorithms/base.py) and learn?")
    check.add_argument("learner", help="a registered learner name (rl2) or an import path (my_pkg.learners:MyLearner)")
    check.add_argument("--family", default=None,
                       help="family to run on (default: bandit, or point_nav for a learner of continuous actions)")
    check.add_argument("--quick", action="store_true", help="skip the learning check (seconds, not a minute)")
    check.add_argument("--preset", default=None, help="the learner's preset (default: a small built-in setting)")
    check.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, repeatable (the value in YAML: lr=0.01, hidden_sizes=[16,16])")
    check.add_argument("--learn-env-steps", type=int, default=None,
                       help="the learning check's budget (default: 100000, or the built-in learner's)")
    check.set_defaults(handler=cmd_check_learner)

    tasks = commands.add_parser("tasks", help="list task families, or describe one")
    tasks.add_argument("family", nargs="?")
    tasks.set_defaults(handler=cmd_tasks)

    args = parser.parse_args(argv)
    return int(args.handler(args))
