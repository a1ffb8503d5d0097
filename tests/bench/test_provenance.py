import shutil
import sys
from pathlib import Path

from bench.core.paths import SOURCE_DIRS
from bench.store import provenance
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from bench.store import result_code
from bench.store.provenance import files_of, source_files, source_hash
from tests.suites import TINY


def copy_packages(tmp_path):
    for package in provenance.RESULT_PACKAGES:
        shutil.copytree(SOURCE_DIRS[package], tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_editing_code_that_makes_results_changes_the_identity_and_presentation_does_not(tmp_path):
    root = copy_packages(tmp_path)
    files = source_files(root)
    before = source_hash(files, root)
    assert source_hash(source_files()) == before  # content, not location
    report = root / "bench" / "consumers" / "report" / "__init__.py"
    report.write_text(report.read_text() + "\n# a presentation change\n")
    assert source_hash(source_files(root), root) == before
    learner = root / "algorithms" / "functional.py"
    learner.write_text(learner.read_text() + "\n# an uncommitted edit\n")
    assert source_hash(source_files(root), root) != before
    new = root / "algorithms" / "reptile.py"  # a new learner file is code too
    new.write_text("X = 1\n")
    assert "algorithms/reptile.py" in {f.as_posix() for f in source_files(root)}


def test_a_learner_depends_on_its_own_modules_and_the_shared_ones_not_on_other_learners():
    maml = {f.as_posix() for f in files_of("maml")}
    finetune = {f.as_posix() for f in files_of("finetune")}
    assert {"algorithms/presets.py", "algorithms/functional.py", "algorithms/fast_plan.py", "algorithms/inner_loop.py"} <= maml
    assert "algorithms/finetune.py" not in maml and "algorithms/functional.py" not in finetune
    shared = {"algorithms/base.py", "algorithms/backbones.py", "bench/run/training.py", "bench/run/measure.py",
              "datasets/glyphs.py"}
    assert shared <= maml and shared <= finetune
    assert not any(f.startswith(("bench/consumers/", "bench/store/", "bench/__main__.py")) for f in maml)


# every module of bench/, by whether it can change a cell's numbers; the derivation (bench.store.result_code) must
# agree, so a new module fails this test until someone decides where it belongs
RESULT_CODE = {"bench/__init__.py", "bench/core/__init__.py", "bench/core/config.py", "bench/core/dependencies.py",
               "bench/core/hardware.py",
               "bench/core/interrupts.py", "bench/core/metrics.py", "bench/core/paths.py", "bench/core/plugins.py",
               "bench/core/registry.py", "bench/core/seeding.py", "bench/run/__init__.py", "bench/run/autotune.py", "bench/run/batches.py",
               "bench/run/checkpoint.py",
               "bench/run/evaluation.py", "bench/run/factory.py", "bench/run/measure.py", "bench/run/phases.py",
               "bench/run/problems.py",
               "bench/run/test_time.py", "bench/run/training.py", "bench/spec/__init__.py", "bench/spec/suite.py"}
NOT_RESULT_CODE = {
    # the command line and what consumes results: reports, searches, gates, checks, calibration
    "bench/__main__.py", "bench/consumers/__init__.py", "bench/consumers/calibration.py",
    "bench/consumers/contract.py", "bench/consumers/gate.py", "bench/consumers/summary.py",
    "bench/consumers/tune/__init__.py", "bench/consumers/tune/accounting.py", "bench/consumers/tune/best.py",
    "bench/consumers/tune/objective.py", "bench/consumers/tune/optimisation.py",
    "bench/consumers/tune/options.py", "bench/consumers/tune/storage.py", "bench/consumers/tune/studies.py",
    "bench/consumers/tune/trial_cell.py", "bench/consumers/tune/workers.py", "bench/consumers/verify.py",
    "bench/consumers/report/__init__.py", "bench/consumers/report/ablations.py",
    "bench/consumers/report/conclusions.py", "bench/consumers/report/conditions.py",
    "bench/consumers/report/figures.py", "bench/consumers/report/loading.py", "bench/consumers/report/render.py",
    "bench/consumers/report/reproduction.py", "bench/consumers/report/statistics.py",
    "bench/consumers/report/tables.py", "bench/consumers/report/tuning.py",
    "bench/consumers/sequential/__init__.py", "bench/consumers/sequential/boundaries.py",
    "bench/consumers/sequential/calibration.py",
    "bench/consumers/sequential/design.py", "bench/consumers/sequential/running.py",
    "bench/consumers/sequential/walk.py",
    # orchestration: which cells run where, claims, recording
    "bench/run/execution.py", "bench/run/runner.py", "bench/run/executors/__init__.py",
    "bench/run/executors/attempt.py", "bench/run/executors/in_process.py", "bench/run/executors/ray_tasks.py",
    "bench/run/executors/slurm_jobs.py",
    # the suite's documents beyond one cell: conditions across cells, published numbers, tune's search space
    "bench/spec/conditions.py", "bench/spec/published.py", "bench/spec/search.py", "bench/core/tags.py",
    # the store layer: records results and names their identity
    "bench/store/__init__.py", "bench/store/claims.py", "bench/store/fresh_store.py", "bench/store/ownership.py",
    "bench/store/provenance.py",
    "bench/store/result_code.py", "bench/store/tracking.py"}


def test_every_module_of_bench_is_classified_and_the_derived_result_code_agrees():
    every = {f for f in result_code.every_source(provenance._folders(None)) if f.startswith("bench/")}
    unclassified = every - RESULT_CODE - NOT_RESULT_CODE
    assert not unclassified, f"classify these modules in this test: {sorted(unclassified)}"
    assert not RESULT_CODE & NOT_RESULT_CODE
    derived = {f.as_posix() for f in source_files() if f.as_posix().startswith("bench/")}
    assert derived == RESULT_CODE
    everything = {f.as_posix() for f in source_files()}  # the learner and dataset packages whole
    assert {"algorithms/reptile.py", "datasets/omniglot.py", "datasets/cache.py"} <= everything


def test_editing_the_tuner_or_the_search_space_keeps_the_identity_and_editing_training_changes_it(tmp_path):
    root = copy_packages(tmp_path)
    before = source_hash(source_files(root), root)
    for consumer in ("consumers/tune/objective.py", "consumers/gate.py", "consumers/contract.py", "spec/search.py",
                     "run/runner.py"):
        path = root / "bench" / consumer
        path.write_text(path.read_text() + "\n# an edit that changes no cell's number\n")
    assert source_hash(source_files(root), root) == before
    training = root / "bench" / "run" / "measure.py"  # reached from the cell's work through its imports
    training.write_text(training.read_text() + "\n# an edit\n")
    assert source_hash(source_files(root), root) != before


def test_a_module_the_cell_work_starts_to_import_becomes_result_code(tmp_path):
    """Derived, not listed: a new helper imported by the training module is hashed without anyone adding it."""
    root = copy_packages(tmp_path)
    (root / "bench" / "run" / "helper.py").write_text("SCALE = 1\n")
    assert "bench/run/helper.py" not in {f.as_posix() for f in source_files(root)}
    training = root / "bench" / "run" / "training.py"
    training.write_text("from bench.run import helper  # noqa\n" + training.read_text())
    assert "bench/run/helper.py" in {f.as_posix() for f in source_files(root)}


def test_every_function_a_cell_executes_is_result_code_or_the_store_layer():
    """What the derivation claims, checked on a real cell: a profiler records the source file of every function
    called while a cell trains and is tested; each of meta-bench's must be hashed (or be the store layer, which
    only names the identity)."""
    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    called: set[str] = set()

    def record(frame, event, arg):
        if event == "call":
            called.add(frame.f_code.co_filename)

    sys.setprofile(record)
    try:
        run_cell(cell)
    finally:
        sys.setprofile(None)
    ours = set()
    for filename in called:
        try:
            ours.add(provenance.relative_name(Path(filename)))
        except ValueError:  # not meta-bench's source (torch, the standard library, ...)
            pass
    hashed = {f.as_posix() for f in source_files()}
    outside = {f for f in ours - hashed if not f.startswith("bench/store/")}
    assert not outside, f"executed by a cell but in no code identity: {sorted(outside)}"
    assert {"bench/run/training.py", "bench/run/measure.py", "algorithms/functional.py"} <= ours
