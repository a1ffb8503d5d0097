import pytest
import yaml

TINY = {
    "suite": "tiny",
    "dataset": {"name": "glyphs"},
    "learners": ["fomaml/functional", "maml", "finetune"],
    "grid": {"n_way": [3], "k_shot": [1], "devices": ["cpu"], "seeds": [0]},
    "backbone": {"filters": 8},
    "training": {"meta_iterations": 4, "meta_batch_size": 2, "query": 2, "validate_every": 2,
                 "validation_episodes": 3, "warmup_iterations": 1},
    "evaluation": {"test_episodes": 6, "query": 2},
}


@pytest.fixture()
def write_suite(tmp_path):
    def write(changes=None, name="suite.yaml", base=None):
        raw = dict(base or TINY)
        for key, value in (changes or {}).items():
            raw[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
