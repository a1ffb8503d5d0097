"""Learners from a researcher's own package: named by import path (the package on PYTHONPATH) or by an entry point of
a distribution that pip installs, run in a suite, listed with their origin, and rerun when edited."""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from bench.core.config import ConfigError
from bench.spec.suite import parse_suite
from tests.suites import TINY, cell_runs

PLUGIN = textwrap.dedent('''
    """A nearest-centroid learner: class means of the backbone's features, logits their negative distances over a
    temperature (ProtoNet with a temperature option): what a researcher's own package might hold."""
    from dataclasses import dataclass

    import torch
    from torch.nn import functional as F

    from meta_bench.algorithms.base import MetaLearner, StepResult


    @dataclass(frozen=True)
    class CentroidConfig:
        temperature: float = 1.0


    class Centroid(MetaLearner):
        """Nearest centroid with a temperature (a plugin)."""

        Config = CentroidConfig
        kinds = ("classification",)
        algorithm = "centroid"

        def meta_parameters(self):
            return list(self.model.features.parameters())

        def _logits(self, support_x, support_y, query_x):
            support, query = self.model.features(support_x), self.model.features(query_x)
            one_hot = F.one_hot(support_y, self.task.n_way).to(support.dtype)
            centroids = one_hot.T @ support / one_hot.sum(dim=0).unsqueeze(1)
            return -(query.unsqueeze(1) - centroids.unsqueeze(0)).pow(2).sum(dim=-1) / self.config.temperature

        def meta_gradient(self, batch):
            losses = [F.cross_entropy(self._logits(batch.support_x[b], batch.support_y[b], batch.query_x[b]),
                                      batch.query_y[b]) for b in range(len(batch))]
            loss = torch.stack(losses).mean()
            loss.backward()
            return StepResult(loss.detach())

        def predict(self, episode):
            with torch.no_grad():
                return self._logits(episode.support_x, episode.support_y, episode.query_x)
''')


def write_plugin(folder, distribution=False):
    package = folder / "mb_plugin_demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "learners.py").write_text(PLUGIN)
    if distribution:
        write_distribution(folder, "mb-plugin-demo 0.1", "learners", "centroid = \"mb_plugin_demo.learners:Centroid\"",
                           "mb_plugin_demo")
    return package / "learners.py"


def write_distribution(folder, name_version, group, entry_point, package):
    """A pyproject.toml that makes ``folder`` a distribution offering one ``meta_bench.<group>`` entry point."""
    name, version = name_version.split()
    (folder / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
        [project.entry-points."meta_bench.{group}"]
        {entry_point}
        [tool.setuptools]
        packages = ["{package}"]
    '''))


def bench(args, path, cwd):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.getcwd()])}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def suite(tmp_path, learner, tracking_uri):
    raw = {**TINY, "learners": [{"name": learner, "label": "centroid"}, "protonet"],
           "tracking": {"uri": tracking_uri}, "report": {"output_dir": str(tmp_path / "reports")}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_check_learner_holds_a_plugin_to_the_contract_and_to_its_algorithm(tmp_path):
    """The centroid learner at temperature 1 is ProtoNet: registered as an implementation of it, it passes; at
    temperature 2 its meta-gradient differs from ProtoNet's and the check says so; a learner that never calls
    backward breaks the contract."""
    source = write_plugin(tmp_path)
    source.write_text(source.read_text().replace('algorithm = "centroid"', 'algorithm = "protonet"') + textwrap.dedent('''

        class Lazy(Centroid):
            """Forgets to compute its gradient."""
            def meta_gradient(self, batch):
                return StepResult(torch.zeros(()))
    '''))
    kept = bench(["check-learner", "mb_plugin_demo.learners:Centroid"], tmp_path, os.getcwd())
    assert kept.returncode == 0 and "keeps the learner contract" in kept.stdout, kept.stderr
    verified = bench(["verify", "mb_plugin_demo.learners:Centroid"], tmp_path, os.getcwd())  # and in bench verify
    assert verified.returncode == 0, verified.stdout
    assert re.search(r"protonet +glyphs .* protonet +vs mb_plugin_demo.learners:Centroid .* ok", verified.stdout)
    lazy = bench(["check-learner", "mb_plugin_demo.learners:Lazy"], tmp_path, os.getcwd())
    assert lazy.returncode == 1 and "meta_gradient must fill finite, non-zero .grad" in lazy.stderr
    source.write_text(source.read_text().replace("temperature: float = 1.0", "temperature: float = 2.0"))
    differs = bench(["check-learner", "mb_plugin_demo.learners:Centroid"], tmp_path, os.getcwd())
    assert differs.returncode == 1 and "mb_plugin_demo.learners:Centroid vs protonet (classification): " \
        "meta-gradients differ" in differs.stderr
    disagrees = bench(["verify", "mb_plugin_demo.learners:Centroid"], tmp_path, os.getcwd())
    assert disagrees.returncode == 1 and re.search(r"protonet +vs mb_plugin_demo.learners:Centroid .* DISAGREE",
                                                   disagrees.stdout), disagrees.stdout


def printed(script, folder):
    """What ``script`` prints in a fresh interpreter with ``folder`` on its path (a process's identities are those
    of the code it loaded)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.getcwd()])}
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_namespace_package_plugin_is_part_of_its_cells_code_identity(tmp_path):
    """A plugin package without __init__.py (a PEP 420 namespace package) is read like any other: its files enter
    the identity of its learner's cells, and an edit changes it."""
    source = write_plugin(tmp_path)
    (source.parent / "__init__.py").unlink()
    script = textwrap.dedent('''
        import sys
        from bench.store import provenance
        from meta_bench.algorithms import LEARNERS
        LEARNERS["mb_plugin_demo.learners:Centroid"]
        files = {f.as_posix() for f in provenance.files_of("mb_plugin_demo.learners:Centroid", "glyphs")}
        print("plugin/mb_plugin_demo/learners.py" in files, provenance.code_identity(
            "mb_plugin_demo.learners:Centroid", "glyphs"))
    ''')
    included, before = printed(script, tmp_path).split()
    source.write_text(source.read_text() + "\n# edited\n")
    assert (included, printed(script, tmp_path).split()[1] != before) == ("True", True)


def test_a_plugin_identity_covers_the_local_modules_it_imports_and_names_installed_ones_by_version(tmp_path):
    """A helper module beside the plugin's package (imported before the plugin, so its import is no news), a config
    file in the package, and an installed distribution: an edit of the helper or the config changes the identity,
    the distribution enters it by name and version."""
    source = write_plugin(tmp_path)
    (tmp_path / "mb_helper_demo.py").write_text("SCALE = 1\n")
    (source.parent / "defaults.yaml").write_text("temperature: 1.0\n")
    source.write_text("import yaml\nimport mb_helper_demo\n" + source.read_text())
    script = textwrap.dedent('''
        import mb_helper_demo  # loaded first: the plugin's import brings nothing new
        from bench.store import provenance
        from meta_bench.algorithms import LEARNERS
        LEARNERS["mb_plugin_demo.learners:Centroid"]
        files = {f.as_posix() for f in provenance.files_of("mb_plugin_demo.learners:Centroid", "glyphs")}
        print(sorted(f for f in files if not f.startswith(("algorithms/", "datasets/", "bench/"))))
        print(provenance.code_identity("mb_plugin_demo.learners:Centroid", "glyphs"))
    ''')
    def identity():
        return printed(script, tmp_path).splitlines()

    files, before = identity()
    assert "plugin/mb_helper_demo.py" in files and "plugin/mb_plugin_demo/defaults.yaml" in files
    assert re.search(r"distribution/PyYAML \d", files), files
    (tmp_path / "mb_helper_demo.py").write_text("SCALE = 100\n")
    edited_helper = identity()[1]
    (source.parent / "defaults.yaml").write_text("temperature: 2.0\n")
    edited_config = identity()[1]
    assert len({before, edited_helper, edited_config}) == 3


def outcomes(uri):
    return sorted((r.data.tags["label"], r.data.tags["outcome"]) for r in cell_runs(uri))


def test_a_learner_by_import_path_runs_is_reported_with_its_origin_and_reruns_when_edited(tmp_path, tracking_uri):
    source = write_plugin(tmp_path / "src")
    path = suite(tmp_path, "mb_plugin_demo.learners:Centroid", tracking_uri)
    done = bench(["run", str(path), "--no-progress"], tmp_path / "src", os.getcwd())
    assert done.returncode == 0, done.stderr
    assert outcomes(tracking_uri) == [("centroid", "finished"), ("protonet", "finished")]
    report = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "learners from outside this repository: centroid: import path mb_plugin_demo.learners:Centroid (" \
           f"{source.resolve()})" in report
    assert "| centroid |" in report  # a row of its own in the results
    listed = bench(["list", "mb_plugin_demo.learners:Centroid"], tmp_path / "src", os.getcwd())
    assert "Nearest centroid with a temperature" in listed.stdout and "origin: import path" in listed.stdout
    # the plugin's source is part of its cells' code identity: an edit of its code (not of its options, which the
    # configuration hash holds) reruns them, and only them
    source.write_text(source.read_text().replace("/ self.config.temperature", "/ (2 * self.config.temperature)"))
    again = bench(["run", str(path), "--no-progress"], tmp_path / "src", os.getcwd())
    assert again.returncode == 0, again.stderr
    assert outcomes(tracking_uri) == [("centroid", "finished"), ("centroid", "finished"), ("protonet", "finished")]
    assert re.search(r"protonet .* reused", again.stdout), again.stdout  # the built-in learner's cell is reused


def test_an_installed_entry_point_is_listed_and_named_by_a_suite(tmp_path, tracking_uri):
    write_plugin(tmp_path / "dist", distribution=True)
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--target", str(tmp_path / "site"), str(tmp_path / "dist")],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    listed = bench(["list"], tmp_path / "site", tmp_path)
    assert "\ncentroid\n    Nearest centroid with a temperature" in listed.stdout
    assert "origin: entry point of mb-plugin-demo 0.1: mb_plugin_demo.learners:Centroid" in listed.stdout
    # a suite names it as it names a built-in learner (the import-path test above runs one for real)
    planned = bench(["run", str(suite(tmp_path, "centroid", tracking_uri)), "--dry-run"], tmp_path / "site", tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "centroid 3-way 1-shot cpu seed=0" in planned.stdout and "CentroidConfig(temperature=1.0)" in planned.stdout


def test_an_entry_point_named_like_a_built_in_or_like_another_distribution_is_refused(tmp_path, tracking_uri):
    """Never one chosen silently: a name offered by two distributions, or by a distribution and the built-ins, is
    refused with exit 2 naming the distributions."""
    write_plugin(tmp_path / "a")
    write_distribution(tmp_path / "a", "mb-plugin-a 0.1", "learners",
                       "centroid = \"mb_plugin_demo.learners:Centroid\"\nmaml = \"mb_plugin_demo.learners:Centroid\"",
                       "mb_plugin_demo")
    other = tmp_path / "b" / "mb_plugin_other"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    (other / "learners.py").write_text(PLUGIN)
    write_distribution(tmp_path / "b", "mb-plugin-b 0.2", "learners",
                       "centroid = \"mb_plugin_other.learners:Centroid\"", "mb_plugin_other")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--target", str(tmp_path / "site"), str(tmp_path / "a"),
                                str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    both = bench(["run", str(suite(tmp_path, "centroid", tracking_uri)), "--dry-run"], tmp_path / "site", tmp_path)
    assert both.returncode == 2, both.stdout + both.stderr
    assert "learner 'centroid' is offered by the entry points of mb-plugin-a 0.1 and mb-plugin-b 0.2" in both.stderr
    shadow = bench(["run", str(suite(tmp_path, "maml", tracking_uri)), "--dry-run"], tmp_path / "site", tmp_path)
    assert shadow.returncode == 2, shadow.stdout + shadow.stderr
    assert "learner 'maml': the entry point of mb-plugin-a 0.1 has the name of a built-in one" in shadow.stderr
    by_path = bench(["run", str(suite(tmp_path, "mb_plugin_other.learners:Centroid", tracking_uri)), "--dry-run"],
                    tmp_path / "site", tmp_path)
    assert by_path.returncode == 0, by_path.stderr  # the way out the message names


@pytest.mark.parametrize("name, message", [
    ("no_such_package.learners:Mine", r"learners\[0\].name: learner 'no_such_package.learners:Mine': no module named "
                                      r"'no_such_package' \(install its package, or put the folder"),
    ("os.path:join", r"learners\[0\].name: learner 'os.path:join' names <function join.*which is not a subclass of "
                     r"meta_bench.algorithms.base.MetaLearner"),
    ("broken_plugin:Mine", r"learners\[0\].name: learner 'broken_plugin:Mine': importing broken_plugin failed: "
                           r"ZeroDivisionError: division by zero"),
    ("mb_plugin_demo.learners:Centroidd", r"module mb_plugin_demo.learners has no attribute 'Centroidd'"),
    ("mb_plugin_demo.learners:", r"learner 'mb_plugin_demo.learners:': not an import path; expected "
                                 r"'package.module:Class'"),
])
def test_bad_plugin_input_names_the_key_and_the_cause(name, message, tmp_path, monkeypatch):
    write_plugin(tmp_path)
    (tmp_path / "broken_plugin.py").write_text("RATE = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        parse_suite({**TINY, "learners": [name]}, "s.yaml")


DATASET_PLUGIN = textwrap.dedent('''
    """Regression on lines y = a x + b: a dataset of a researcher's own package."""
    from dataclasses import dataclass

    import numpy as np
    import torch

    from meta_bench.datasets.base import Dataset, TaskSource, check_episode_shape, check_split, episode_rng
    from meta_bench.datasets.episode import Episode
    from meta_bench.datasets.registry import DatasetEntry


    @dataclass(frozen=True)
    class LinesOptions:
        slope: tuple = (-2.0, 2.0)


    class LineTasks(TaskSource):
        def __init__(self, o, split, k_shot, q_query, seed):
            self.o, self.split, self.k_shot, self.q_query, self.seed = o, split, k_shot, q_query, seed

        def episode(self, index):
            u = episode_rng(self.seed, self.split, index).random(2 + self.k_shot + self.q_query)
            slope = self.o.slope[0] + (self.o.slope[1] - self.o.slope[0]) * u[0]
            x = torch.from_numpy(10 * u[2:] - 5).float().unsqueeze(1)
            y = slope * x + float(u[1])
            k = self.k_shot
            return Episode(x[:k], y[:k], x[k:], y[k:], torch.tensor([-1]))


    class Lines(Dataset):
        name = "lines"
        task_kind = "regression"
        input_shape = (1,)

        def __init__(self, o):
            self.o = o

        def num_classes(self, split):
            check_split(split)
            return 1

        def min_examples(self, split):
            check_split(split)
            return 2**31 - 1

        def sampler(self, split, n_way, k_shot, q_query, seed):
            check_episode_shape(n_way, k_shot, q_query)
            self.check_request(split, n_way, k_shot, q_query)
            return LineTasks(self.o, split, k_shot, q_query, seed)

        def statistics(self):
            return {"dataset": "lines", "task": "regression", "slope": list(self.o.slope)}


    ENTRY = DatasetEntry(LinesOptions, Lines, backbone="mlp", learner_defaults={"inner_lr": 0.01})
''')


def test_a_dataset_by_import_path_runs_is_reported_with_its_origin_and_listed_as_an_entry_point(tmp_path,
                                                                                                tracking_uri):
    """A dataset of the user's package, named by import path, trains and tests a learner, and the report names where
    it came from; the same dataset installed as a `meta_bench.datasets` entry point is listed by `bench list`."""
    package = tmp_path / "src" / "mb_lines"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text(DATASET_PLUGIN)
    raw = {**TINY, "dataset": {"name": "mb_lines.data:ENTRY", "options": {"slope": [-1.0, 1.0]}}, "learners": ["maml"],
           "grid": {**TINY["grid"], "n_way": [1], "k_shot": [5]}, "tracking": {"uri": tracking_uri},
           "report": {"output_dir": str(tmp_path / "reports")}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    # a bare `tuple` in its options class is the plugin author's slip: said with the key, exit 2, nothing written
    refused = bench(["run", str(path), "--no-progress"], tmp_path / "src", os.getcwd())
    assert refused.returncode == 2 and "dataset.options (mb_lines.data:ENTRY).slope: its class declares the type " \
        "<class 'tuple'>, which a suite cannot be read into" in refused.stderr, refused.stderr
    assert cell_runs(tracking_uri) == []
    source = package / "data.py"
    source.write_text(source.read_text().replace("slope: tuple = ", "slope: tuple[float, float] = "))
    done = bench(["run", str(path), "--no-progress"], tmp_path / "src", os.getcwd())
    assert done.returncode == 0, done.stderr
    (run,) = cell_runs(tracking_uri)
    assert run.info.status == "FINISHED" and run.data.metrics["test_mse"] >= 0
    assert run.data.tags["dataset_origin"].startswith("import path mb_lines.data:ENTRY (")
    report = (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert "dataset from outside this repository: mb_lines.data:ENTRY: import path mb_lines.data:ENTRY (" in report
    assert "slope: [-1.0, 1.0]" in report  # its own statistics, with the suite's options
    write_distribution(tmp_path / "src", "mb-lines 0.2", "datasets", "lines = \"mb_lines.data:ENTRY\"", "mb_lines")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                                "--no-build-isolation", "--target", str(tmp_path / "site"), str(tmp_path / "src")],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    listed = bench(["list"], tmp_path / "site", tmp_path)
    assert "\nlines\n    origin: entry point of mb-lines 0.2: mb_lines.data:ENTRY" in listed.stdout, listed.stdout
