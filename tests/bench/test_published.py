import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from bench.__main__ import main
from bench.consumers.report import reproduction
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


def judged(paper, per_seed, min_seeds=2):
    """The equivalence verdict on constructed per-seed means (one test episode each: the seed spread alone)."""
    options = parse_suite({**TINY, "report": {"min_seeds": min_seeds}}).report
    return reproduction.judge(np.array(per_seed, dtype=float).reshape(-1, 1), paper, options, [])


def test_reproduced_needs_the_interval_inside_a_declared_margin_not_a_wide_interval():
    """The old rule called these reproduced (the published value inside a wide interval widened by 10%): more noise
    made "reproduced" more likely. Under the equivalence rule a wide interval is inconclusive, a far one not
    reproduced, and only a tight one inside the margin reproduced."""
    omniglot = published.find("finn2017.omniglot.maml", 5, 1)  # 98.7 ± 0.4, margin 2 pp
    paper = dataclasses.replace(omniglot, value=42.11, ci95=None)
    assert judged(paper, [30, 36]).verdict.startswith("inconclusive")  # 22% below, 2 seeds: no claim either way
    # 95% interval [25.5, 40.5] of 33: 1.6 pp inside the margin's edge 40.11, so not yet "not reproduced"
    assert judged(paper, [30, 33, 36]).verdict.startswith("inconclusive: about")
    assert judged(paper, [32, 33, 34]).verdict == "not reproduced"  # [30.5, 35.5], wholly below 40.11
    sinusoid = published.under_conditions("finn2017.sinusoid.maml", 1, 10)[2]  # 0.35, margin 20% = 0.07
    assert sinusoid.margin_value == pytest.approx(0.07)
    assert judged(sinusoid, [0.3, 0.9, 0.5]).verdict.startswith("inconclusive")  # 62% above, wide
    assert judged(sinusoid, [0.34, 0.35, 0.36]).verdict == "reproduced"
    assert judged(sinusoid, [0.50, 0.51, 0.52]).verdict == "not reproduced"
    assert judged(sinusoid, [0.34, 0.36], min_seeds=3).verdict == "inconclusive: 2 seed(s), 3 needed for a verdict"
    # the published interval is folded in: a measurement as tight, against a paper's wide interval, decides nothing
    wide = dataclasses.replace(sinusoid, ci95=0.2)
    assert judged(wide, [0.34, 0.35, 0.36]).verdict.startswith("inconclusive")


def test_the_two_one_sided_tests_at_the_margin_by_hand():
    """90% interval inside the margin: reproduced; 95% interval outside: not; t quantiles computed here by hand."""
    paper = dataclasses.replace(published.find("finn2017.omniglot.maml", 5, 1), value=50.0, ci95=None)
    seeds = [51.0, 52.0, 53.0]  # mean 52 (+2 from 50: at the margin), sd 1, se 1/sqrt(3)
    half90 = stats.t.ppf(0.95, 2) / math.sqrt(3)
    test = judged(paper, seeds).test
    assert test.mean == pytest.approx(2.0) and test.se == pytest.approx(1 / math.sqrt(3))
    assert judged(paper, seeds).verdict.startswith("inconclusive")
    inside = [s - 2.0 + (2.0 - half90 - 0.01) for s in seeds]  # mean difference just under 2 - half90
    assert judged(paper, inside).verdict == "reproduced"
    just_out = [s - 2.0 + (2.0 - half90 + 0.01) for s in seeds]
    assert judged(paper, just_out).verdict.startswith("inconclusive")
    half95 = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert judged(paper, [s + half95 + 0.01 - 2.0 + 2.0 for s in seeds]).verdict == "not reproduced"
    assert judged(paper, [s + half95 - 0.01 for s in seeds]).verdict.startswith("inconclusive")


def test_a_margin_is_declared_per_series_or_taken_from_the_stated_default():
    for name, entries in published.series().items():
        assert all(p.margin == (("relative", 0.2) if p.score == "mse" else ("absolute", 2.0)) for p in entries), name
    assert published.DEFAULT_MARGINS == {"accuracy": ("absolute", 2.0), "mse": ("relative", 0.2)}
    with pytest.raises(ValueError, match="x.margin must be"):
        published._margin("x", {"margin": {"relative": -1}}, "mse")


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
    assert row["learner"] == "maml" and row["published"] == "98.7 ± 0.4" and row["seeds"] == 2
    assert row["verdict"].startswith("not comparable (data: 48 classes, the published data has 6492")
    assert "training.meta_iterations=3 (published: 60000)" in row["verdict"]
    assert "learner_config.inner_lr" not in row["verdict"]  # the protocol values the suite keeps are not listed
    assert "## Against published results" in (folder / "report.md").read_text()


