"""Cross-domain evaluation (`evaluation.dataset`): a model meta-trained on glyphs tested on a generated `folder`
dataset's test classes; its runs never pair with runs tested on glyphs; a shape mismatch refused at validation."""
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bench.__main__ import main
from bench.core.config import ConfigError
from bench.run.evaluation import evaluate
from bench.run.factory import build_learner
from bench.run.training import run_cell
from bench.spec.suite import load_suites
from meta_bench.datasets import load_dataset
from tests.suites import TINY, cell_runs


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(15):
        (tmp_path / "birds" / f"bird{c}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
                tmp_path / "birds" / f"bird{c}" / f"{i}.png")
    return tmp_path / "birds"


def suite(tmp_path, folder, channels=1, **evaluation):
    raw = {**TINY, "learners": ["protonet"], "training": {**TINY["training"], "dtype": "float64"},
           "evaluation": {**TINY["evaluation"], **evaluation,
                          "dataset": {"name": "folder", "options": {"root": str(folder), "image_size": 28,
                                                                    "channels": channels}}}}
    path = tmp_path / f"cross{channels}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_model_trained_on_glyphs_is_tested_on_the_other_datasets_test_classes(tmp_path, folder):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({**TINY, "learners": ["protonet"],
                                    "training": {**TINY["training"], "dtype": "float64"}}))
    assert main(["run", str(same), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    path = suite(tmp_path, folder)
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    runs = {("+" in r.data.tags["data_identity"]): r for r in cell_runs(uri)}
    crossed, home = runs[True], runs[False]
    birds = load_dataset("folder", {"root": str(folder), "image_size": 28, "channels": 1}).content_identity
    assert crossed.data.tags["data_identity"] == f"{home.data.tags['data_identity']}+{birds}"
    assert crossed.data.tags["eval_fingerprint"] != home.data.tags["eval_fingerprint"]  # never paired
    assert crossed.data.metrics["final_train_loss"] == home.data.metrics["final_train_loss"]  # the same training
    # its score is the glyph-trained model's on the folder's test episodes, scored here by hand
    (glyph_cell,) = load_suites(same)[0].cells
    learner = build_learner(glyph_cell)
    learner.load_state_dict(run_cell(glyph_cell, test=False).state_dict)
    birds_data = load_dataset("folder", {"root": str(folder), "image_size": 28, "channels": 1})
    assert birds_data.num_classes("test") == 3  # 20% of 15 classes, its test split
    source = birds_data.sampler("test", 3, 1, 2, seed=glyph_cell.evaluation.episode_seed)
    scores = evaluate(learner, source, 6, torch.device("cpu"), torch.float64)
    assert crossed.data.metrics["test_accuracy"] == pytest.approx(np.mean(scores), abs=1e-12)


def test_a_test_dataset_whose_images_do_not_fit_the_model_is_refused_at_validation(tmp_path, folder):
    with pytest.raises(ConfigError, match=r"evaluation.dataset: folder's inputs are \(3, 28, 28\), the model is "
                                          r"trained on glyphs's \(1, 28, 28\); declare the resize and channels"):
        load_suites(suite(tmp_path, folder, channels=3))


def test_too_few_test_classes_of_the_other_dataset_are_refused(tmp_path, folder):
    raw = yaml.safe_load(suite(tmp_path, folder).read_text())
    raw["grid"]["n_way"] = [4]  # the folder's test split has 3 classes
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="n_way=4 is larger than the 3 classes of split 'test'"):
        load_suites(path)
