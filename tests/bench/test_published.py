import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.__main__ import main
from bench.core.config import ConfigError
from bench.spec import published
from bench.spec.suite import parse_suite
from tests.suites import TINY

ROOT = Path(__file__).resolve().parents[2]


def test_the_published_table_holds_the_cited_numbers():
    finn = {(p.n_way, p.k_shot): (p.accuracy, p.ci95) for p in published.series()["finn2017.omniglot.maml"]}
    assert finn == {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1), (20, 1): (95.8, 0.3), (20, 5): (98.9, 0.2)}
    mini = {p.k_shot: p.accuracy for p in published.series()["finn2017.miniimagenet.first_order"]}
    assert mini == {1: 48.07, 5: 63.15}
    plus = published.find("chen2019.miniimagenet.baseline_pp", 5, 5)
    assert plus.accuracy == 66.43 and plus.protocol["learner_config.classifier"] == "cosine"
    assert published.find("chen2019.miniimagenet.baseline", 5, 1).protocol["learner_config.classifier"] == "linear"


def test_standing_against_a_published_number():
    paper = published.find("finn2017.omniglot.maml", 5, 1)
    assert published.standing(paper, 98.5, 0.3, []).verdict == "reproduced"  # |-0.2| <= sqrt(0.3^2 + 0.4^2)
    far = published.standing(paper, 97.0, 0.3, [])
    assert far.verdict == "not reproduced" and far.half_width == pytest.approx(0.5)
    assert published.standing(paper, 98.7, 0.3, ["data differs"]).verdict == "not comparable (data differs)"
    assert math.isnan(published.standing(paper, 98.7, math.nan, []).half_width)


def test_an_unknown_series_or_label_is_refused():
    with pytest.raises(ConfigError, match="unknown published series 'finn2017.omniglot.mam'.*did you mean"):
        parse_suite({**TINY, "report": {"published": {"maml": "finn2017.omniglot.mam"}}})
    with pytest.raises(ConfigError, match="no learner is labelled 'reptile'"):
        parse_suite({**TINY, "report": {"published": {"reptile": "finn2017.omniglot.maml"}}})


def test_the_finn_protocol_on_a_miniature_omniglot_is_not_comparable(omniglot_root, tmp_path, monkeypatch):
    """The shipped protocol suite, shrunk to seconds on a generated miniature in the real on-disk layout: the
    report shows measured against published, marked not comparable with the reasons."""
    from meta_bench.datasets import cache

    monkeypatch.setattr(cache, "CACHE_DIR", tmp_path / "cache")
    raw = next(yaml.safe_load_all((ROOT / "suites" / "omniglot_finn2017.yaml").read_text()))
    raw["dataset"]["options"] = {"root": str(omniglot_root), "train_characters": 6, "val_characters": 2}
    raw["backbone"]["filters"] = 8
    raw["grid"].update({"k_shot": [1], "devices": ["cpu"], "seeds": [0, 1]})
    raw["training"].update({"meta_iterations": 3, "meta_batch_size": 2, "validate_every": 3,
                            "validation_episodes": 2, "warmup_iterations": 1})
    raw["evaluation"].update({"test_episodes": 6})
    raw["report"]["output_dir"] = str(tmp_path / "reports")
    path = tmp_path / "finn.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 0
    folder = tmp_path / "reports" / "omniglot_finn2017"
    (row,) = pd.read_csv(folder / "published.csv").to_dict("records")
    assert row["learner"] == "maml" and row["published %"] == "98.70 ± 0.40" and row["seeds"] == 2
    assert row["verdict"].startswith("not comparable (data: 48 classes, the published data has 6492")
    assert "training.meta_iterations=3 (published: 60000)" in row["verdict"]
    assert "learner_config.inner_lr" not in row["verdict"]  # the protocol values the suite keeps are not listed
    assert "## Against published results" in (folder / "report.md").read_text()


def test_a_published_value_without_an_interval_is_judged_by_the_printed_rule_on_constructed_numbers():
    paper = published.under_conditions("finn2017.sinusoid.maml", 1, 10)[0]
    assert (paper.value, paper.ci95, paper.test_k_shot, paper.test_steps, paper.score) == (0.67, None, 5, 1, "mse")
    # mean 0.68, sd 0.01: t(2) 4.303 * 0.01 / sqrt(3) = 0.0248; widened by 10% of 0.67 = 0.067 -> allowed 0.0918
    close = published.standing_without_interval(paper, [0.67, 0.68, 0.69], 0.1, [])
    assert close.verdict == "reproduced" and close.half_width == pytest.approx(0.0248 + 0.067, abs=1e-4)
    assert close.difference == pytest.approx(0.01)
    far = published.standing_without_interval(paper, [0.79, 0.80, 0.81], 0.1, [])  # 0.13 away, 0.0918 allowed
    assert far.verdict == "not reproduced"
    tight = [0.70, 0.71, 0.72]  # 0.04 away: outside the bare interval (0.0248), inside the widened one (0.0918)
    assert published.standing_without_interval(paper, tight, 0.0, []).verdict == "not reproduced"
    assert published.standing_without_interval(paper, tight, 0.1, []).verdict == "reproduced"
    assert published.standing_without_interval(paper, [0.67], 0.1, []).verdict.startswith("no verdict")
    assert published.standing_without_interval(paper, tight, 0.1, ["x"]).verdict == "not comparable (x)"
    assert "10% of the published value" in published.TOLERANCE_RULE.format(tolerance=0.1)
    assert published.find("finn2017.sinusoid.maml", 1, 10) is None  # a result with a test condition is found by it
