"""`bench tune --executor slurm --workers 2` on the real single-node Slurm of tests/slurm/cluster.py: the workers go
out as one job array on one study storage, and the study reaches its budget exactly."""
import optuna

from bench.__main__ import main
from tests.bench.test_tune import SEARCH, args, trials, tune_suite
from tests.suites import all_runs


def test_two_slurm_worker_jobs_share_a_study_and_reach_its_budget_exactly(slurm_cluster, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each job has one CPU
    path = tune_suite(tmp_path, search={**SEARCH, "n_trials": 4})
    assert main(args(path, tmp_path, "--workers", "2", "--no-evaluate", "--executor", "slurm",
                     "--slurm-partition", slurm_cluster.partition, "--slurm-time", "10")) == 0
    assert capsys.readouterr().out.count("as Slurm job") == 2
    done = trials(tmp_path)
    assert sorted(t.number for t in done) == [0, 1, 2, 3]  # the budget, exactly: none lost, none extra
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in done)
    runs = [r for r in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "tiny.tuning")
            if r.data.tags.get("role") == "trial"]
    assert len(runs) == 4
    jobs = {r.data.tags["executor.slurm_job"] for r in runs}  # each trial ran in a worker job of one array
    assert len(jobs) == 2 and len({job.split("_")[0] for job in jobs}) == 1

