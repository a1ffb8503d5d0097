"""Bad input is refused before anything runs or is written: exit 2, one bounded message naming the key."""
import dataclasses
import math
import re
import time
from typing import Annotated

import pytest

from bench.spec import suite as suite_module
from bench.__main__ import MAX_MESSAGE_CHARS, refuse, main
from bench.core.config import NON_FINITE_ALLOWED, ConfigError, Within, from_mapping, yaml_documents
from bench.core.seeding import seeded
from bench.spec.suite import expand, grid_size, load_suites, parse_suite
from tests.suites import TINY

SINUSOID = {**TINY, "dataset": {"name": "sinusoid"}, "learners": ["maml"],
            "grid": {**TINY["grid"], "n_way": [1]}}


def run_exit(path, capsys, *flags):
    """Exit status and stderr of `bench run`; a traceback would raise here instead."""
    status = main(["run", str(path), *flags])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--dry-run"], ["--no-progress", "--no-report"]], ids=["dry-run", "run"])
@pytest.mark.parametrize("changes, message", [
    ({"training": {**TINY["training"], "lr": math.nan}}, r"training\.lr: nan is not allowed; expected a finite"),
    ({"training": {**TINY["training"], "lr": math.inf}}, r"training\.lr: inf is not allowed"),
    ({"training": {**TINY["training"], "lr": 10**400}}, r"training\.lr: 1000.* is too large for a float"),
    ({"training": {**TINY["training"], "meta_grad_clip": math.nan}}, r"training\.meta_grad_clip: nan is not allowed"),
    ({"learners": [{"name": "maml", "config": {"inner_lr": math.nan}}]},
     r"learners\[0\]\.config \(maml\)\.inner_lr: nan is not allowed"),
    ({"grid": {**TINY["grid"], "options": {"inner_lr": [0.1, -math.inf]}}}, r"inner_lr: -inf is not allowed"),
    ({"grid": {**TINY["grid"], "seeds": [-1]}}, r"grid\.seeds\[0\]: -1 is not allowed; it must lie in \[0, 4294967295\]"),
    ({"grid": {**TINY["grid"], "seeds": [0, 2**64]}}, r"grid\.seeds\[1\]: 18446744073709551616 is not allowed"),
    ({"evaluation": {**TINY["evaluation"], "episode_seed": -3}}, r"evaluation\.episode_seed: -3 is not allowed"),
    ({**SINUSOID, "dataset": {"name": "sinusoid", "options": {"amplitude": [0.1, math.inf]}}},
     r"dataset\.options \(sinusoid\)\.amplitude\[1\]: inf is not allowed"),
    ({"dataset": {"name": "glyphs", "options": {"seed": -1}}}, r"dataset\.options \(glyphs\)\.seed: -1 is not allowed"),
], ids=["lr-nan", "lr-inf", "lr-huge", "clip-nan", "inner_lr-nan", "grid-option-inf", "seed-negative", "seed-2**64",
        "episode_seed", "amplitude-inf", "dataset-seed"])
def test_values_that_fail_every_cell_at_run_time_are_refused(changes, message, flags, write_suite, tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    status, err = run_exit(write_suite(changes), capsys, *flags, "--tracking-uri", f"sqlite:///{db}")
    assert status == 2, err
    assert re.search(message, err), err
    assert not db.exists()


def test_the_values_just_inside_the_bounds_are_accepted():
    parse_suite({**TINY, "grid": {**TINY["grid"], "seeds": [0, 2**32 - 1]},
                 "training": {**TINY["training"], "lr": 1e300}})


def test_a_field_may_allow_non_finite_floats_explicitly():
    @dataclasses.dataclass(frozen=True)
    class Options:
        finite: float = 0.0
        any_float: Annotated[float, NON_FINITE_ALLOWED] = 0.0
        small: Annotated[int, Within(0, 3, "three at most")] = 0

    assert math.isinf(from_mapping(Options, {"any_float": math.inf}, "o").any_float)
    with pytest.raises(ConfigError, match=r"o\.finite: inf is not allowed"):
        from_mapping(Options, {"finite": math.inf}, "o")
    with pytest.raises(ConfigError, match=r"o\.small: 4 is not allowed; it must lie in \[0, 3\] \(three at most\)"):
        from_mapping(Options, {"small": 4}, "o")


def test_seeding_refuses_a_seed_outside_the_common_range():
    with pytest.raises(ValueError, match="seed -1 is out of range"):
        with seeded(-1):
            pass


SUITE_TEXT = """suite: tiny
dataset: {name: glyphs}
learners: [maml]
grid: {n_way: [3], k_shot: [1], devices: [cpu], seeds: [0]}
training: {meta_iterations: 4, meta_batch_size: 2, query: 2, validate_every: 2, validation_episodes: 3}
evaluation: {test_episodes: 6, query: 2}
"""


@pytest.mark.parametrize("text, key, lines", [
    (SUITE_TEXT + "learners: [finetune]\n", "'learners'", "lines 3 and 7"),
    (SUITE_TEXT.replace("seeds: [0]}", "seeds: [0], seeds: [1]}"), "'seeds'", "lines 4 and 4"),
    (SUITE_TEXT + "backbone:\n  filters: 8\n  hidden: 4\n  filters: 16\n", "'filters'", "lines 8 and 10"),
], ids=["top-level", "flow-mapping", "nested"])
def test_a_key_given_twice_is_refused_with_its_lines(text, key, lines, tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    status, err = run_exit(path, capsys, "--dry-run")
    assert status == 2 and f"found the key {key} twice ({lines})" in err and str(path) in err, err


def test_merge_keys_may_override_what_they_merge():
    text = "base: &base {lr: 0.1, meta_iterations: 4}\nover: {<<: *base, lr: 0.2}\n"
    assert yaml_documents(text, "t.yaml")[0]["over"] == {"lr": 0.2, "meta_iterations": 4}


BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
               for prev, name in zip("abcdef", "bcdefg"))


@pytest.mark.parametrize("text, message", [
    ('a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB + "suite: [*g]\n",
     "the document expands to 11434293 nodes through its aliases; at most 100000 are allowed"),
    ("suite: &x [*x]\n", "an alias refers to a node that contains it"),
    ("suite: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than 50 levels"),
    ("suite:\n" + "".join("  " * i + "- \n" for i in range(60)), "nested deeper than 50 levels"),
], ids=["billion-laughs", "recursive", "deep-flow", "deep-block"])
def test_yaml_that_would_swamp_the_machine_is_refused_quickly_in_a_short_message(text, message, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.perf_counter()
    status, err = run_exit(path, capsys, "--dry-run")
    assert time.perf_counter() - started < 3  # building the billion-laughs list takes minutes and gigabytes
    assert status == 2 and message in err and len(err) < 1000, err[:2000]


def test_a_huge_value_is_quoted_short_in_the_message(write_suite, capsys):
    path = write_suite({"training": {**TINY["training"], "meta_iterations": "x" * 100_000}})
    status, err = run_exit(path, capsys, "--dry-run")
    assert status == 2 and "training.meta_iterations: expected an integer, got 'xxx" in err and len(err) < 1000


def test_fail_bounds_any_message(capsys):
    assert refuse("y" * 100_000) == 2
    err = capsys.readouterr().err
    assert len(err) < MAX_MESSAGE_CHARS + 100 and err.rstrip().endswith(f"({100_000 - MAX_MESSAGE_CHARS} more characters)")


def large_grid(tmp_path, seeds):
    path = tmp_path / "large.yaml"
    path.write_text(SUITE_TEXT.replace("learners: [maml]", "learners: [maml, finetune]")
                    .replace("seeds: [0]}", f"seeds: {list(range(seeds))}, options: {{inner_steps: [1, 2, 3, 4]}}}}"))
    return path


def test_a_grid_above_the_limit_is_refused_from_its_axes_without_expanding_it(tmp_path, capsys):
    path = large_grid(tmp_path, seeds=8000)  # 8000 seeds x (4 MAML inner_steps + 1 finetune) = 40,000 cells
    started = time.perf_counter()
    status, err = run_exit(path, capsys, "--dry-run")
    assert time.perf_counter() - started < 2  # expanding it takes about 40 s
    assert status == 2 and "grid: 40000 cells is more than 5000: pass --allow-large-grid" in err, err


def test_allow_large_grid_runs_a_grid_above_the_limit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite_module, "MAX_CELLS", 9)  # the real limit takes seconds to expand
    path = large_grid(tmp_path, seeds=2)
    status, err = run_exit(path, capsys, "--dry-run")
    assert status == 2 and "grid: 10 cells is more than 9" in err, err
    assert main(["run", str(path), "--dry-run", "--allow-large-grid"]) == 0
    assert "suite tiny: 10 cell(s)" in capsys.readouterr().out


def test_the_grid_limit_counts_every_document_of_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(suite_module, "MAX_CELLS", 5)
    path = tmp_path / "two.yaml"
    document = SUITE_TEXT.replace("maml", "maml, finetune, anil")  # 3 cells
    path.write_text(document + "---\n" + document)
    status, err = run_exit(path, capsys, "--dry-run")
    assert status == 2 and "grid: 6 cells is more than 5" in err, err


def test_grid_size_is_the_number_of_cells_expand_makes(tmp_path):
    (suite,) = load_suites(large_grid(tmp_path, seeds=3))
    assert grid_size(suite) == len(expand(suite)) == 15


@pytest.mark.parametrize("flags", [["--dry-run"], ["--no-progress", "--no-report"]], ids=["dry-run", "run"])
@pytest.mark.parametrize("where", ["flag", "suite"])
def test_a_tracking_uri_that_is_a_folder_is_refused(where, flags, write_suite, tmp_path, capsys):
    folder = tmp_path / "somedir"
    folder.mkdir()
    uri = f"sqlite:///{folder}"
    path = write_suite({"tracking": {"uri": uri}} if where == "suite" else {})
    status, err = run_exit(path, capsys, *flags, *(["--tracking-uri", uri] if where == "flag" else []))
    assert status == 2 and f"tracking URI {uri!r}: {folder} is a folder" in err, err
    assert not any(folder.iterdir())


def test_a_tracking_uri_whose_folder_cannot_be_made_is_refused(write_suite, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker}/sub/mlflow.db"
    status, err = run_exit(write_suite(), capsys, "--no-progress", "--tracking-uri", uri)
    assert status == 2 and f"its folder {blocker}/sub cannot be made: {blocker} is a file" in err, err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", [["report"], ["tune"], ["tune", "--storage"]])
def test_every_command_refuses_a_store_that_is_a_folder(command, write_suite, tmp_path, capsys):
    """One check where every store is resolved (MLflow's and Optuna's): report and tune as well as run."""
    folder = tmp_path / "somedir"
    folder.mkdir()
    uri = f"sqlite:///{folder}"
    search = {"n_trials": 1, "space": {"training.lr": {"low": 0.001, "high": 0.01}}}
    path = write_suite({"search": search})
    target = command + [uri] if command[-1] == "--storage" else command + ["--tracking-uri", uri]
    status = main([target[0], str(path), *target[1:]])
    assert status == 2 and f"tracking URI {uri!r}: {folder} is a folder" in capsys.readouterr().err
    assert not any(folder.iterdir())


def file_store(kind: str, tmp_path) -> tuple[str, object]:
    """A tracking URI of MLflow's file store (or of a scheme meta-bench does not know), and the folder it names."""
    folder = tmp_path / "mlruns"
    return {"file URI": folder.as_uri(), "plain path": str(folder), "unknown scheme": f"ftp://{folder}"}[kind], folder


@pytest.mark.parametrize("kind", ["file URI", "plain path", "unknown scheme"])
@pytest.mark.parametrize("command, where", [(["run", "--dry-run"], "flag"), (["run", "--no-progress"], "flag"),
                                            (["run", "--no-progress"], "environment"),
                                            (["run", "--no-progress"], "suite"), (["tune"], "flag"),
                                            (["report"], "flag"), (["report"], "suite")])
def test_a_store_where_a_cell_could_be_claimed_twice_is_refused(kind, command, where, write_suite, tmp_path,
                                                                monkeypatch, capsys):
    """MLflow's file store checks an experiment name, then creates it: of 6 concurrent claimants of a cell, 3 won
    its first claim. Refused wherever a claim can follow (`bench tune` evaluates its best configurations), and by
    `bench report` too: one rule (MLflow itself opens a file store only when MLFLOW_ALLOW_FILE_STORE says so)."""
    uri, folder = file_store(kind, tmp_path)
    search = {"n_trials": 1, "space": {"training.lr": {"low": 0.001, "high": 0.01}}}
    path = write_suite({"search": search, **({"tracking": {"uri": uri}} if where == "suite" else {})})
    if where == "environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    storage = f"sqlite:///{tmp_path / 'optuna' / 'optuna.db'}"
    flags = ["--tracking-uri", uri] if where == "flag" else []
    flags += ["--storage", storage] if command == ["tune"] else []
    status = main([command[0], str(path), *command[1:], *flags])
    err = capsys.readouterr().err
    said = "is MLflow's file store" if kind != "unknown scheme" else "has the scheme 'ftp', unknown to meta-bench"
    assert status == 2 and f"tracking URI {uri!r} {said}" in err, err
    assert ("mlflow migrate-filestore" in err) == (kind != "unknown scheme")
    assert "use an SQLite database (sqlite:///" in err and "a database URI (postgresql://" in err and "http://" in err
    assert not folder.exists() and not (tmp_path / "optuna").exists()  # nothing written


def test_a_label_names_one_learner_across_the_documents_of_a_suite(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    document = SUITE_TEXT.replace("learners: [maml]", "learners: [{name: %s, label: mine}]")
    path.write_text(document % "maml" + "---\n" + document % "anil")
    status, err = run_exit(path, capsys, "--dry-run")
    assert status == 2 and "label 'mine' names anil here and maml in" in err, err
