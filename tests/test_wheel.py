"""The wheel works outside the source tree: built from a copy of the repository, installed into a folder of its own,
it runs `meta-bench list` and a tiny suite from an empty directory, writing everything under that directory."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from tests.suites import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_runs_a_suite_from_an_empty_directory_and_writes_only_there(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "results", "reports", "build", "dist",
                                                                "__pycache__", "*.egg-info", ".benchmarks"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("meta_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bench/spec/data/published.yaml" in names  # the run-time data files travel with the code
    assert {"meta_bench/suites/quickstart.yaml", "meta_bench/baselines/ci.json", "meta_bench/datasets/glyphs.py",
            "meta_bench/algorithms/base.py"} <= set(names)  # the shipped suites, the gate's baseline, namespaced
    assert not [n for n in names if n.split("/")[0] in ("datasets", "algorithms")]  # no top-level `datasets`
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "meta-bench = bench.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "work"
    work.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("METABENCH_HOME", "METABENCH_CACHE")}
    environment["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install
    command = str(site / "bin" / "meta-bench")

    def meta_bench(*args):
        return subprocess.run([command, *args], cwd=work, env=environment, capture_output=True, text=True,
                              timeout=600)

    # one interpreter for what the installed copy resolves: itself, Hugging Face's `datasets` (installed beside the
    # checkout) next to meta-bench's, a shipped suite by name, the gate's baselines (the shipped one; the user's own
    # pinned under the work root)
    script = ("import bench, datasets, meta_bench.datasets as ours; from bench.core import paths; "
              "from bench.spec.suite import suite_file; print(bench.__file__, datasets.__file__, ours.__file__, "
              "datasets.load_dataset.__module__, suite_file('quickstart'), paths.GATE_BASELINE, paths.OWN_BASELINE)")
    resolved = subprocess.run([sys.executable, "-c", script], cwd=work, env=environment, capture_output=True,
                              text=True, timeout=120)
    assert resolved.returncode == 0, resolved.stderr
    mine, theirs, ours, module, quickstart, baseline, own = resolved.stdout.split()
    assert mine.startswith(str(site)), mine  # the installed copy runs, not the checkout
    assert not theirs.startswith(str(site)) and "site-packages/datasets/" in theirs and module.startswith("datasets.")
    assert ours == str(site / "meta_bench" / "datasets" / "__init__.py")
    assert quickstart == str(site / "meta_bench" / "suites" / "quickstart.yaml")
    assert (baseline, own) == (str(site / "meta_bench" / "baselines" / "ci.json"), str(work / "results" / "ci.json"))
    listed = meta_bench("list")
    assert listed.returncode == 0 and "\nmaml\n" in listed.stdout and "origin: built in" in listed.stdout
    (work / "suite.yaml").write_text(yaml.safe_dump({**TINY, "learners": ["fomaml/functional"]}))
    done = meta_bench("run", "suite.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (work / "results" / "mlflow.db").is_file() and (work / "reports" / "tiny" / "report.md").is_file()
    assert "git commit(s): installed meta-bench 0.1.0" in (work / "reports" / "tiny" / "report.md").read_text()
    assert not [p for p in site.rglob("*") if p.name in ("results", "reports", "mlflow.db")]  # nothing into the package
