"""What the harness's tests share: the tiny suite they run, and how they read its runs back from MLflow."""
from mlflow.tracking import MlflowClient

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


def all_runs(uri: str, suite: str = "tiny") -> list:
    """Every run of ``suite``'s experiment in the store at ``uri`` (none where the experiment does not exist)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def cell_runs(uri: str, suite: str = "tiny") -> list:
    """The cell runs (role cell) of ``suite``."""
    return [r for r in all_runs(uri, suite) if r.data.tags.get("role") == "cell"]
