import json

from PIL import Image

from bench.__main__ import main


def test_list_prints_every_learner_with_doc_and_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("fomaml/deepcopy", "fomaml/functional", "fomaml/higher", "maml", "finetune"):
        assert f"{name}\n" in out
    assert "inner_lr=0.4" in out and "head_epochs=100" in out and "task_batching='auto'" in out


def test_verify_passes_and_prints_each_pair(capsys):
    assert main(["verify"]) == 0
    out = capsys.readouterr().out
    assert "fomaml/deepcopy      vs fomaml/functional" in out and "finite differences" in out
    assert "all checks passed" in out


def test_verify_fails_when_variants_disagree(monkeypatch, capsys):
    from bench.consumers import verify

    real = verify.meta_gradient

    def broken(name, options, case):
        grad = real(name, options, case)
        return grad * 1.01 if name == "fomaml/higher" else grad

    monkeypatch.setattr(verify, "meta_gradient", broken)
    assert main(["verify"]) == 1
    assert "DISAGREE" in capsys.readouterr().out


def test_datasets_prints_statistics(capsys):
    assert main(["datasets", "glyphs"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"] > 1000 and stats["test"]["alphabets"] >= 1


def test_datasets_lists_every_registered_one_with_its_origin_files_and_presence(capsys):
    from meta_bench.datasets import DATASETS

    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    for name in DATASETS.names():
        assert f"{name}\n    origin: {DATASETS.origin(name)}\n    files: " in listing
    assert "data: generated (generated-" in listing  # glyphs, sinusoid
    assert "data: needs options: " in listing and "root is required" in listing  # folder


def test_datasets_takes_options_and_says_what_it_cannot_verify(capsys, tmp_path):
    for c in range(5):
        (tmp_path / f"c{c}").mkdir()
        for i in range(3):
            Image.new("L", (9, 9), 40 * c + i).save(tmp_path / f"c{c}" / f"{i}.png")
    assert main(["datasets", "folder", "--option", f"root={tmp_path}", "--option", "image_size=16"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["classes"] == 5 and stats["image_shape"] == [3, 16, 16]
    assert main(["datasets", "folder", "--option", "rootless"]) == 2
    assert "--option 'rootless': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["datasets", "glyphs", "--verify"]) == 0
    assert "glyphs: no published checksums to verify" in capsys.readouterr().out


def test_datasets_unknown_name_exits_2(capsys):
    assert main(["datasets", "glyph"]) == 2
    assert "did you mean 'glyphs'" in capsys.readouterr().err


def test_a_shipped_suite_runs_by_its_name_and_suites_lists_every_one(capsys, monkeypatch, tmp_path):
    from bench.core.paths import SHIPPED_SUITES

    monkeypatch.chdir(tmp_path)  # no suites/ here: the names resolve to the shipped files
    assert main(["suites"]) == 0
    listed = capsys.readouterr().out
    for path in SHIPPED_SUITES.glob("*.yaml"):
        assert f"{path.stem}\n" in listed and str(path) in listed
    for name in ("quickstart", "quickstart.yaml", "suites/quickstart.yaml"):
        assert main(["run", name, "--dry-run"]) == 0
        assert "suite quickstart: 15 cell(s)" in capsys.readouterr().out
    assert main(["run", "quickstart2", "--dry-run"]) == 2
    assert "quickstart2: no such suite file, nor a shipped suite of that name (shipped: ablation_mamlpp," \
        in capsys.readouterr().err
    (tmp_path / "quickstart.yaml").write_text("suite: [")  # a file of that name is the user's, and wins
    assert main(["run", "quickstart.yaml", "--dry-run"]) == 2
    assert "quickstart.yaml" in capsys.readouterr().err


def test_the_command_line_imports_no_torchvision_until_a_dataset_needs_it():
    """Importing torchvision costs about a second (it loads torch._dynamo through its models): every `bench` process
    would pay it for Omniglot, which most never load."""
    import subprocess
    import sys

    probe = ("import sys, bench.__main__, bench.run.runner, bench.consumers.report, meta_bench.datasets; "
             "print('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_command_that_runs_no_cell_imports_no_executor_and_run_still_has_every_executor_flag(tmp_path):
    """The executors import the training code (torch._dynamo through the optimisers: seconds): `bench report` never
    needs them, `bench run` and `bench tune` take their flags."""
    import subprocess
    import sys

    probe = ("import sys; from bench.__main__ import main; "
             f"code = main(['report', 'no_such_suite', '--tracking-uri', 'sqlite:///{tmp_path / 'm.db'}']); "
             "print(code, 'bench.run.executors' in sys.modules, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    help_text = subprocess.run([sys.executable, "-m", "bench", "run", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "--executor" in help_text and "--slurm-partition" in help_text
