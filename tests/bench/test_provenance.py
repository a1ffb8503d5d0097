import shutil

from bench.core.paths import SOURCE_DIRS
from bench.store import provenance
from bench.store.provenance import files_of, source_files, source_hash


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
    assert not any(f.startswith(provenance.PRESENTATION_ONLY) for f in maml)
