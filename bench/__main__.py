"""meta-bench command line: run, tune, list, verify, datasets, report."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.core import paths

EXIT_FAILURES, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


MAX_MESSAGE_CHARS = 2000


def _progress(args) -> bool:
    """Progress bars only on a terminal: redirected output (a log, CI) gets one line per cell instead."""
    return not args.no_progress and sys.stderr.isatty()


def refuse(message: str) -> int:
    if len(message) > MAX_MESSAGE_CHARS:  # one readable paragraph, even when a message quotes something huge
        message = f"{message[:MAX_MESSAGE_CHARS]} ... ({len(message) - MAX_MESSAGE_CHARS} more characters)"
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_run(args) -> int:
    import contextlib

    from bench.consumers.summary import summary_table
    from bench.core import tags
    from bench.core.config import ConfigError
    from bench.run import executors
    from bench.consumers.sequential.running import record_plan, run_documents
    from bench.spec.suite import MAX_CELLS, describe, load_suites
    from bench.store import tracking
    from bench.store.claims import DamagedStore
    from bench.store.ownership import OwnershipLost
    from bench.store.provenance import CodeChangedError

    notes: list[str] | None = [] if args.dry_run else None
    try:
        suites = load_suites(args.suite, notes, max_cells=None if args.allow_large_grid else MAX_CELLS)
        for suite in suites:  # a store that cannot be opened is refused before anything is written
            tracking.resolve_uri(suite.tracking.uri, args.tracking_uri, create=False)
        executor = executors.from_arguments(args, suites, progress=_progress(args))  # its flags checked: not started
        if args.dry_run:
            print("\n".join([f"note: {note}" for note in dict.fromkeys(notes)] + sum(map(describe, suites), [])))
            return 0
        by_name = {name: [s for s in suites if s.suite == name] for name in dict.fromkeys(s.suite for s in suites)}
        for named in by_name.values():  # a seeds plan that differs from the one its looks were run under: refused
            record_plan(tracking.client_for(tracking.resolve_uri(named[0].tracking.uri, args.tracking_uri)), named)
    except ConfigError as error:  # refused before anything is written
        return refuse(str(error))
    outcomes = []
    with contextlib.ExitStack() as stack:
        try:  # the executor's lifecycle: Ray is started or joined here, before anything is written, and left at the end
            stack.enter_context(executor)
        except ConnectionError as error:
            return refuse(str(error))
        try:
            for named in by_name.values():
                uri = tracking.resolve_uri(named[0].tracking.uri, args.tracking_uri)
                options = dict(force=args.force, reuse_other_code=args.reuse_other_code, progress=_progress(args),
                               executor=executor, max_wait_s=args.max_wait)
                outcomes += run_documents(named, uri, **options)  # a seeds plan: look by look
        except KeyboardInterrupt:
            print("\ninterrupted: finished cells are in MLflow; rerun the same command to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (CodeChangedError, OwnershipLost, DamagedStore) as error:
            print(f"stopped: {error}; finished cells are in MLflow", file=sys.stderr)
            return EXIT_FAILURES
    print(summary_table(outcomes))
    if not args.no_report:
        from bench.consumers.report import build_reports
        for report in build_reports(suites, args.tracking_uri):
            print(f"report: {report}")
    failures = [o for o in outcomes if o.outcome in (tags.OUTCOME_FAILED, tags.OUTCOME_HELD)]
    if failures:
        print(f"{len(failures)} cell(s) failed or left to a later run:", file=sys.stderr)
        for o in failures:
            print(f"  {o.outcome} {o.cell.title}: {o.detail}", file=sys.stderr)
        return EXIT_FAILURES
    return 0


def cmd_tune(args) -> int:
    from bench.store import tracking
    from bench.core.config import ConfigError
    from bench.spec.suite import load_suites
    from bench.consumers.tune import TuneOptions
    from bench.run import executors

    try:
        suites = load_suites(args.suite)
    except ConfigError as error:
        return refuse(str(error))
    suite = suites[0]
    if suite.search is None:
        return refuse(f"{args.suite}: the suite has no 'search' section: nothing to tune (see docs/suites.md)")
    if args.n_trials is not None and args.n_trials <= 0:
        return refuse(f"--n-trials must be positive, got {args.n_trials}")
    if args.workers <= 0 or (args.heartbeat is not None and args.heartbeat <= 0):
        return refuse(f"--workers and --heartbeat must be positive, got {args.workers}, {args.heartbeat}")
    worker = args.worker_shares is not None  # one of the processes `--workers` starts
    try:
        uri = tracking.resolve_uri(suite.tracking.uri, args.tracking_uri)
        options = TuneOptions(storage=tracking.anchored_sqlite(args.storage), study=args.study or "",
                              n_trials=args.n_trials, timeout=args.timeout, workers=1 if worker else args.workers,
                              executor=args.executor, heartbeat=args.heartbeat)
        launch = executors.launcher_from_arguments(args, cuda=suite.grid.devices[0].startswith("cuda"))
    except ConfigError as error:
        return refuse(str(error))
    from bench.consumers.tune import optimise, run_workers

    try:
        if worker:
            optimise(suite, options, uri, json.loads(args.worker_shares))
            return 0
        problems = run_workers(args.suite, suite, options, uri, launch)
    except ConfigError as error:  # a storage that cannot be opened: refused before anything is written
        return refuse(str(error))
    except KeyboardInterrupt:
        print("\ninterrupted: the study keeps every finished trial; rerun the same command to continue it",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_FAILURES if problems else _tuned(args, suite, options, uri)


def _tuned(args, suite, options, uri) -> int:
    """Best configurations: printed, written as a suite file, evaluated on the test episodes, reported."""
    from bench.consumers.report import build_report
    from bench.consumers.report.tuning import build_tuning_report
    from bench.consumers.sequential.running import run_documents
    from bench.spec.suite import suites_from_text
    from bench.consumers.summary import summary_table
    from bench.consumers.tune import FINISHED_STATES, best_suite_documents, charged, open_study, write_best
    from bench.core import tags
    from bench.run import executors

    studies = {spec.display: open_study(suite, options, spec.display) for spec in suite.learners}
    for label, study in studies.items():
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        if not done:
            return refuse(f"study {study.study_name}: no trial completed, so there is no best configuration")
        best = study.best_trials[0]
        print(f"{label}: best of {charged(study, FINISHED_STATES)} trial(s) is trial {best.number}, values "
              f"{best.values}, params {best.params}")
    name = options.study or suite.suite
    path = Path(args.best) if args.best else paths.RESULTS / name / "best.yaml"
    documents = best_suite_documents(suite.text, suite, options)
    write_best(path, documents)
    print(f"best configurations: {path} (run it with: python -m bench run {path})")
    folder = paths.WORK_ROOT / suite.report.output_dir / (name + ".tuning")
    print(f"tuning report: {build_tuning_report(studies, name, folder)}")
    if args.no_evaluate:
        return 0
    best_suites = suites_from_text(path.read_text(encoding="utf-8"), str(path))
    with executors.from_arguments(args, best_suites, progress=_progress(args)) as executor:  # as the workers ran
        outcomes = run_documents(best_suites, uri, progress=_progress(args), executor=executor)
    print(summary_table(outcomes))
    print(f"report: {build_report(best_suites[0].suite, uri, best_suites)}")
    return EXIT_FAILURES if any(o.outcome == tags.OUTCOME_FAILED for o in outcomes) else 0


def cmd_list(args) -> int:
    import dataclasses

    from meta_bench.algorithms import LEARNERS
    from bench.core.registry import UnknownNameError

    names = args.names or LEARNERS.names()
    try:
        learners = [(name, LEARNERS[name]) for name in names]
    except UnknownNameError as error:
        return refuse(str(error))
    for name, cls in learners:
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        defaults = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config) if f.init)
        fixed = ", ".join(f"{key}={value!r}" for key, value in getattr(cls.Config, "FIXED", {}).items())
        print(f"{name}\n    {doc}\n    defaults: {defaults}" + (f"\n    fixed: {fixed}" if fixed else "")
              + f"\n    origin: {LEARNERS.origin(name)}")
    if not args.names:  # and the datasets, built in and installed (`bench datasets NAME` for their statistics)
        from meta_bench.datasets import DATASETS

        print("\ndatasets:")
        for name in DATASETS.names():
            print(f"{name}\n    origin: {DATASETS.origin(name)}")
    return 0


def cmd_suites(args) -> int:
    from bench.spec.suite import shipped_suites

    for name, path in shipped_suites().items():
        comment = next((line.lstrip("# ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                        if line.startswith("#")), "")
        print(f"{name}\n    {comment}\n    {path}")
    print("run one by name (`python -m bench run quickstart`), or copy its file and edit the copy")
    return 0


def cmd_check_learner(args) -> int:
    from bench.consumers.contract import check_learner
    from bench.core.registry import UnknownNameError

    try:
        problems = check_learner(args.name, args.tolerance)
    except UnknownNameError as error:
        return refuse(str(error))
    for line in problems:
        print(f"BROKEN {line}", file=sys.stderr)
    print(f"{args.name} keeps the learner contract" if not problems else
          f"{args.name}: {len(problems)} contract check(s) failed")
    return EXIT_FAILURES if problems else 0


def cmd_verify(args) -> int:
    from bench.consumers.verify import run_checks

    from bench.core.registry import UnknownNameError

    try:
        ok = run_checks(args.tolerance, extra=args.names)
    except UnknownNameError as error:
        return refuse(str(error))
    print("all checks passed" if ok else "DISAGREEMENT: see the lines marked above")
    return 0 if ok else EXIT_FAILURES


def cmd_ci_check(args) -> int:
    from bench.consumers import gate
    from bench.consumers.verify import run_checks

    # an installed copy compares with the baseline it ships, and pins its own under the work root
    path = Path(args.baseline or (paths.OWN_BASELINE if args.update_baseline else paths.GATE_BASELINE))
    if not path.exists() and not args.update_baseline:  # said before minutes of checks, not after
        return refuse(f"no baseline at {path}: create one with `python -m bench ci-check --update-baseline`")
    print("1/3 gradients (bench verify)")
    verified = run_checks(1e-6)
    print("2/3 pinned float64 scores and saved-for-backward bytes" + (", speed ratios" if args.perf else ""))
    figures = gate.measure(args.perf, echo=lambda line: print(line, flush=True))
    if args.update_baseline:
        gate.write_baseline(path, figures)
        print(f"baseline written: {path} (review its diff)")
        return 0 if verified else EXIT_FAILURES
    baseline = json.loads(path.read_text())
    failures = gate.compare(baseline, figures)
    for name in gate.unpinned(baseline, figures):
        print(f"note: {name} has no pinned figures yet (added since the baseline): pin them with --update-baseline")
    if gate.same_torch(baseline, figures):
        print("3/3 memory flat over 20 meta-iterations")
        failures += gate.flatness_failures(echo=lambda line: print(line, flush=True))
    if not verified:
        failures.insert(0, "bench verify: implementation variants disagree (lines marked above)")
    for line in failures:
        print(f"REGRESSION {line}", file=sys.stderr)
    print("ci-check passed" if not failures else f"ci-check failed: {len(failures)} regression(s)")
    return EXIT_FAILURES if failures else 0


def cmd_datasets(args) -> int:
    from bench.core.config import ConfigError
    from meta_bench.datasets import DATASETS, DataRequestError, load_dataset
    from meta_bench.datasets.registry import parse_options, presence

    if not args.names:  # every registered dataset: where it comes from, what it expects, whether it is there
        for name in DATASETS.names():
            entry = DATASETS[name]
            print(f"{name}\n    origin: {DATASETS.origin(name)}\n    files: {entry.layout or 'none (generated)'}\n"
                  f"    data: {presence(name)}")
        return 0
    problems = 0
    for name in args.names:
        try:
            entry = DATASETS[name]
            options = parse_options(name, dict(_key_values(args.option, "--option")))
            if args.verify:
                if entry.verify is None:
                    print(f"{name}: no published checksums to verify; its files: {entry.layout or 'none (generated)'}")
                    continue
                found = entry.verify(options)
                problems += len(found)
                print("\n".join(f"{name}: {problem}" for problem in found) or f"{name}: verified")
                continue
            stats = load_dataset(name, options).statistics()
        except (KeyError, ConfigError, DataRequestError) as error:
            return refuse(str(error))
        print(json.dumps(stats, indent=2))
    return EXIT_FAILURES if problems else 0


def _key_values(pairs: list[str] | None, flag: str) -> list[tuple[str, object]]:
    """``KEY=VALUE`` strings as (key, value) with the value read as YAML (numbers, booleans, lists)."""
    import yaml

    from bench.core.config import ConfigError

    parsed = []
    for pair in pairs or []:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        parsed.append((key, yaml.safe_load(value)))
    return parsed


def cmd_report(args) -> int:
    from bench.store import tracking
    from bench.core.config import ConfigError
    from bench.consumers.report import build_report
    from bench.spec.suite import DEFAULT_TRACKING_URI, load_suites

    name, suites, suite_uri = args.suite, None, DEFAULT_TRACKING_URI  # None: the suite logged with the runs
    try:
        if args.suite.endswith((".yaml", ".yml")):
            suites = load_suites(args.suite, notes=[])
            name, suite_uri = suites[0].suite, suites[0].tracking.uri
            suites = [s for s in suites if s.suite == name]
        path = build_report(name, tracking.resolve_uri(suite_uri, args.tracking_uri), suites)
    except (ConfigError, LookupError) as error:
        return refuse(str(error))
    print(f"report: {path}")
    return 0


# commands that never run a cell: their processes skip the executors' import (the training code, torch: seconds)
NO_CELLS = {"report", "suites", "list", "datasets"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = _parser(executor_flags=command not in NO_CELLS).parse_args(argv)
    return args.func(args)


def _parser(executor_flags: bool) -> argparse.ArgumentParser:
    """The command line; ``executor_flags``: with ``run``'s and ``tune``'s ``--executor`` and its flags."""
    if executor_flags:
        from bench.run import executors  # their flags are generated from their options
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a suite: every cell measured the same way, logged to MLflow")
    run.add_argument("suite", help="suite YAML file, or the name of a shipped suite (`bench suites`)")
    run.add_argument("--dry-run", action="store_true", help="print the expanded grid and exit")
    run.add_argument("--force", action="store_true", help="rerun cells already FINISHED")
    run.add_argument("--allow-large-grid", action="store_true",
                     help="run a grid above the cell limit (bench.spec.suite.MAX_CELLS), refused without it as more "
                          "often a slip than a plan")
    run.add_argument("--reuse-other-code", action="store_true",
                     help="reuse FINISHED cells even when other code made them (the report flags mixed code)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (overrides MLFLOW_TRACKING_URI and the suite)")
    run.add_argument("--max-wait", type=float, default=None, metavar="SECONDS",
                     help="how long a cell that another live invocation runs is waited for before it is left to a "
                          "later run (default 12 h)")
    run.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    if executor_flags:
        executors.add_arguments(run)  # --executor and each executor's flags, from its options dataclass
    run.set_defaults(func=cmd_run)
    tune = commands.add_parser("tune", help="Optuna searches over the suite's search space, one study per learner")
    tune.add_argument("suite", help="suite YAML file with a 'search' section (or a shipped one's name)")
    tune.add_argument("--n-trials", type=int, help="each learner's study's total budget (overrides search.n_trials); "
                                                   "a rerun only tops a study up to it")
    tune.add_argument("--timeout", type=float, help="seconds per learner's study")
    tune.add_argument("--workers", type=int, default=1,
                      help="workers on the same storage: processes here, or jobs of --executor slurm")
    tune.add_argument("--storage", default=paths.OPTUNA_STORAGE,
                      help="Optuna storage URL (sqlite:///, postgresql://..., journal:PATH)")
    tune.add_argument("--study", help="study name prefix (default: the suite's name)")
    tune.add_argument("--tracking-uri", help="MLflow tracking URI")
    tune.add_argument("--no-evaluate", action="store_true", help="do not evaluate the best configurations")
    tune.add_argument("--best", help="where the best configurations go (default results/<study>/best.yaml)")
    tune.add_argument("--heartbeat", type=int,
                      help="seconds between trial heartbeats (RDB storages only, default 10); a dead worker's trial is "
                           "retried after 2")
    tune.add_argument("--no-progress", action="store_true")
    tune.add_argument("--worker-shares", help=argparse.SUPPRESS)  # a worker: JSON label -> its trials at most
    if executor_flags:
        executors.add_arguments(tune)  # what runs the workers: --executor and its flags
    tune.set_defaults(func=cmd_tune)
    listing = commands.add_parser("list", help="every learner (built in and installed plugins) with its doc, defaults "
                                               "and origin")
    listing.add_argument("names", nargs="*", help="only these (also plugins by import path, package.module:Class)")
    listing.set_defaults(func=cmd_list)
    shipped = commands.add_parser("suites", help="the suites meta-bench ships (an installed copy too), by name")
    shipped.set_defaults(func=cmd_suites)
    contract = commands.add_parser("check-learner", help="the learner contract for one learner (a plugin's too): "
                                                          "config, meta-gradient, predict, agreement with variants")
    contract.add_argument("name", help="a registered name, an entry point's, or an import path package.module:Class")
    contract.add_argument("--tolerance", type=float, default=1e-6)
    contract.set_defaults(func=cmd_check_learner)
    verify = commands.add_parser("verify", help="gradient agreement of variants; finite differences for 2nd order")
    verify.add_argument("names", nargs="*", help="learners to check besides the registered and installed ones "
                                                 "(plugins by import path, package.module:Class)")
    verify.add_argument("--tolerance", type=float, default=1e-6)
    verify.set_defaults(func=cmd_verify)
    check = commands.add_parser("ci-check", help="the regression gate: gradients, float64 scores, memory, --perf speed")
    check.add_argument("--baseline", help=f"the pinned figures (default: {paths.GATE_BASELINE}; with "
                       f"--update-baseline, {paths.OWN_BASELINE})")
    check.add_argument("--update-baseline", action="store_true", help="write the measured figures as the baseline")
    check.add_argument("--perf", action="store_true", help="also time every learner against a reference workload")
    check.set_defaults(func=cmd_ci_check)
    data = commands.add_parser("datasets", help="every registered dataset, its origin, files and whether its data is "
                                                "there; with names, their statistics (or --verify)")
    data.add_argument("names", nargs="*")
    data.add_argument("--option", action="append", metavar="KEY=VALUE",
                      help="a dataset option (repeatable): --option root=data/birds --option image_size=84")
    data.add_argument("--verify", action="store_true",
                      help="check the named datasets' files against their published checksums")
    data.set_defaults(func=cmd_datasets)
    report = commands.add_parser("report", help="build the comparison report of a suite from MLflow")
    report.add_argument("suite", help="suite name or suite YAML file")
    report.add_argument("--tracking-uri")
    report.set_defaults(func=cmd_report)
    return parser


if __name__ == "__main__":
    sys.exit(main())
