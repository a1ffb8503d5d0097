import re

import pandas as pd

from bench.__main__ import main
from tests.bench.conftest import TINY


def test_report_from_real_tiny_runs(write_suite, tracking_uri, tmp_path, capsys):
    grid = {**TINY["grid"], "inner_steps": [1, 2]}
    learners = ["fomaml/functional", "fomaml/deepcopy", "maml", "finetune"]
    out_dir = tmp_path / "reports"
    path = write_suite({"learners": learners, "grid": grid, "report": {"output_dir": str(out_dir)}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress"]) == 0
    folder = out_dir / "tiny"
    assert f"report: {folder / 'report.md'}" in capsys.readouterr().out
    main_table = pd.read_csv(folder / "main.csv")
    assert set(main_table["learner"]) == set(learners)
    assert len(main_table) == 7  # 3 learners x 2 inner steps + finetune once
    paired = pd.read_csv(folder / "paired.csv")
    assert set(paired["reference"]) == {"fomaml/functional"}
    assert set(paired["learner"]) == {"fomaml/deepcopy", "maml", "finetune"}
    assert (paired["episodes"] == 6).all()
    # computed from the per-episode CSVs: the mean difference equals the difference of the logged means
    for row in paired.itertuples():
        mine = main_table[(main_table["learner"] == row.learner) & (main_table["S"].astype(str) == str(row.S))]
        ref = main_table[(main_table["learner"] == "fomaml/functional") & (main_table["S"].astype(str) == str(row._6))]
        mean = lambda t: float(t["test accuracy"].iloc[0].split(" ")[0]) / 100  # noqa: E731
        assert abs(row._10 - (mean(mine) - mean(ref))) < 1e-3
    for name in ("accuracy_by_learner", "time_vs_inner_steps", "memory_vs_inner_steps", "accuracy_vs_time",
                 "validation_curves"):
        png = folder / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)  # opens without external requests
    markdown = (folder / "report.md").read_text()
    assert "## Failed and skipped cells" in markdown and "Wilcoxon" in markdown


def test_report_lists_failed_and_skipped_cells_and_leaves_out_ablations_not_run(write_suite, tracking_uri,
                                                                               tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    learners = ["fomaml/functional", {"name": "maml", "config": {"inner_lr": 1e30}, "label": "diverging"}]
    path = write_suite({"learners": learners, "grid": {**TINY["grid"], "devices": ["cpu", "cuda"]},
                        "report": {"output_dir": str(tmp_path / "r")}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress"]) == 1
    folder = tmp_path / "r" / "tiny"
    problems = pd.read_csv(folder / "failed_and_skipped.csv")
    assert set(problems["outcome"]) == {"failed", "skipped"}
    assert problems["reason"].str.contains("NonFiniteLossError").any()
    assert problems["reason"].str.contains("CUDA is not available").any()
    assert not (folder / "time_vs_inner_steps.png").exists()  # one S only: no ablation figure


def test_report_of_an_unknown_suite_exits_2(tracking_uri, capsys):
    assert main(["report", "nothing-here", "--tracking-uri", tracking_uri]) == 2
    assert "no MLflow experiment named 'nothing-here'" in capsys.readouterr().err


def test_a_learner_keeps_its_colour_whatever_else_is_in_the_report():
    from bench.report import _palette

    everyone = _palette(["finetune", "fomaml/deepcopy", "fomaml/functional", "fomaml/higher", "maml", "mine"])
    some = _palette(["maml", "maml", "fomaml/higher", "mine"])  # duplicates, as a runs table has them
    for name in ("maml", "fomaml/higher", "mine"):
        assert some[name] == everyone[name]
    assert len({everyone[n] for n in everyone}) == len(everyone)


def test_report_by_name_uses_the_options_logged_with_the_suite(write_suite, tracking_uri, tmp_path):
    from bench.report import logged_options

    path = write_suite({"learners": ["maml", "finetune"], "report": {"reference": "maml",
                                                                     "output_dir": str(tmp_path / "r")}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    assert logged_options("tiny", tracking_uri).reference == "maml"
    assert main(["report", "tiny", "--tracking-uri", tracking_uri]) == 0
    assert set(pd.read_csv(tmp_path / "r" / "tiny" / "paired.csv")["reference"]) == {"maml"}
