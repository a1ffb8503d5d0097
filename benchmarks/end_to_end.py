"""`bench run` of a whole cell against a hand-written script doing the same work, in one machine state: what the
harness costs a user end to end, and where its seconds go.

    .venv/bin/python -m benchmarks.end_to_end [--iterations 10000] [--glyphs-iterations 200] [--repeats 3]

The sinusoid cell: MAML at Finn et al.'s sinusoid protocol (``suites/sinusoid_finn2017.yaml`` at K = 10, one seed),
shortened to ``--iterations`` meta-iterations, with its validation every 5,000 and its 600 test tasks at K = 5, 10
and 20 after 1, 5 and 10 steps. The harness side is ``python -m bench run`` into a fresh store with an empty
autotuning cache (as a new user has), report included; the script side is ``benchmarks.handwritten_sinusoid`` at its
best thread count (1 or 2, timed first). Then the glyphs Conv-4 5-way 1-shot cells of FOMAML and MAML
(``--glyphs-iterations`` meta-iterations of 4 tasks, ``--glyphs-test-episodes``; suite defaults otherwise) against
``benchmarks.handwritten_glyphs``, on the same episodes and initial weights. Each side runs ``--repeats`` times, alternating, each in its own process;
printed: each pair's wall-clocks and ratio, the median ratio and its spread, each side's test score, and the harness's seconds by phase
(from the cell's run: ``bench.run.phases``) with the process's time outside the cell. First, the fixed cost of a
cell: ``bench run`` of suites of 1 and of 11 cells that do almost nothing (1 meta-iteration, 1 test episode).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from bench.core import metrics as m

ROOT = Path(__file__).resolve().parents[1]


def finn_maml_cell(name: str, iterations: int, **changes) -> dict:
    """The MAML cell of the Finn sinusoid suite at K = 10, one seed, shortened to ``iterations``, as a suite."""
    finn = yaml.safe_load((ROOT / "suites" / "sinusoid_finn2017.yaml").read_text())
    return {**finn, "suite": name, "learners": [finn["learners"][0]],
            "grid": {**finn["grid"], "k_shot": [10], "seeds": [0]},
            "training": {**finn["training"], "meta_iterations": iterations}, "report": {"reference": "maml"},
            **changes}


def glyphs_cell(name: str, learner: str, iterations: int, test_episodes: int, device: str = "cpu") -> dict:
    """A glyphs Conv-4 5-way 1-shot cell of ``learner`` on ``device`` (suite defaults otherwise: the work
    ``benchmarks.handwritten_glyphs`` does by hand), as a suite."""
    return {"suite": name, "dataset": {"name": "glyphs"}, "learners": [learner],
            "grid": {"n_way": [5], "k_shot": [1], "seeds": [0], "devices": [device]},
            "training": {"meta_iterations": iterations}, "evaluation": {"test_episodes": test_episodes},
            "report": {"reference": learner}}


def _suite(folder: Path, raw: dict) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({**raw, "report": {**raw["report"], "output_dir": str(folder / "reports")}}))
    return path


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds ``command`` took, and what it printed."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True)
    return time.perf_counter() - started, done.stdout


def _harness(raw: dict, folder: Path) -> tuple[float, dict[str, float]]:
    """``bench run`` of the suite ``raw`` into a fresh store in ``folder``: its seconds and its cell's metrics."""
    folder.mkdir()
    env = {**os.environ, "METABENCH_AUTOTUNE": str(folder / "autotune.json")}
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    seconds, _ = _timed([sys.executable, "-m", "bench", "run", str(_suite(folder, raw)), "--tracking-uri", uri,
                         "--no-progress"], env)
    client = MlflowClient(uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name(raw["suite"]).experiment_id])
              if r.data.tags.get("role") == "cell"]
    return seconds, run.data.metrics


def _script(module: str, threads: int, *arguments: str) -> tuple[float, str]:
    return _timed([sys.executable, "-m", f"benchmarks.{module}", *arguments, "--threads", str(threads)],
                  dict(os.environ))


# each in a process of its own, after its imports: the seconds of what a ``bench run`` does once
STORE_CREATION = """
import sys, time
from bench.store.tracking import client_for, experiment_id
started = time.perf_counter()
experiment_id(client_for(sys.argv[1]), "fresh")
print(time.perf_counter() - started)
"""
REPORT_BUILDING = """
import sys, time
from bench.consumers.report import build_report
from bench.spec.suite import load_suites
suites = load_suites(sys.argv[1], notes=[])
started = time.perf_counter()
build_report(suites[0].suite, sys.argv[2], suites)
print(time.perf_counter() - started)
"""


def _fixed_cost(base: Path, extra: int) -> dict[str, float]:
    """What one more cell costs when it does almost nothing (sinusoid MAML, 1 meta-iteration, 1 validation and 1 test
    episode): ``bench run`` of 1 cell and of 1 + ``extra`` cells (seeds), each into a fresh store. Seconds of: the
    one-cell run, each extra cell, ``bench report`` of the one-cell suite (a process of its own, as a user runs it),
    the report's building alone and a fresh store's creation with its first experiment (each after its imports)."""
    walls, suites = [], []
    for seeds in (1, 1 + extra):
        folder = base / f"fixed{seeds}"
        folder.mkdir()
        raw = {"suite": "fixed_cost", "dataset": {"name": "sinusoid"}, "learners": ["maml"],
               "grid": {"n_way": [1], "k_shot": [10], "seeds": list(range(seeds))},
               "training": {"meta_iterations": 1, "meta_batch_size": 25, "query": 10, "validate_every": 1,
                            "validation_episodes": 1, "warmup_iterations": 0},
               "evaluation": {"test_episodes": 1, "query": 10, "warmup_episodes": 0},
               "report": {"output_dir": str(folder / "reports")}}
        (folder / "suite.yaml").write_text(yaml.safe_dump(raw))
        env = {**os.environ, "METABENCH_AUTOTUNE": str(base / "fixed_autotune.json")}  # tuned once, in the first
        suites.append([str(folder / "suite.yaml"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"])
        walls.append(_timed([sys.executable, "-m", "bench", "run", *suites[-1], "--no-progress"], env)[0])
    env = dict(os.environ)
    report, _ = _timed([sys.executable, "-m", "bench", "report", *suites[0]], env)
    _, built = _timed([sys.executable, "-c", REPORT_BUILDING, suites[0][0], suites[0][2]], env)
    _, created = _timed([sys.executable, "-c", STORE_CREATION, f"sqlite:///{base / 'fresh.db'}"], env)
    return {"one cell": walls[0], "per cell": (walls[1] - walls[0]) / extra, "report": report,
            "report built": float(built), "store": float(created)}


def _compare(title: str, raw: dict, script: str, arguments: list[str], short: list[str], repeats: int) -> None:
    """``bench run`` of the suite ``raw`` against ``benchmarks.<script> <arguments>`` (at its best thread count, timed
    first on ``short`` arguments), ``repeats`` pairs alternating: each pair, the median ratio, where the time of the
    median ``bench run`` went, and the test score of each side (the same work gives the same score)."""
    threads = min((1, 2), key=lambda t: _script(script, t, *short)[0])
    print(f"{title}; the script at {threads} thread(s), its best")
    pairs, cells, printed = [], [], ""
    with tempfile.TemporaryDirectory() as base:
        for repeat in range(repeats):
            harness, metrics = _harness(raw, Path(base) / f"harness{repeat}")
            seconds, printed = _script(script, threads, *arguments)
            pairs.append((harness, seconds))
            cells.append(metrics)
            print(f"  pair {repeat + 1}: bench run {harness:.2f} s, script {seconds:.2f} s, ratio {harness / seconds:.3f}")
    ratios = sorted(h / s for h, s in pairs)
    print(f"median ratio {statistics.median(ratios):.3f} (spread {ratios[0]:.3f}-{ratios[-1]:.3f})")
    median_pair = sorted(range(len(pairs)), key=lambda i: pairs[i][0])[len(pairs) // 2]
    metrics, harness = cells[median_pair], pairs[median_pair][0]
    score = next(name for name in (m.SCORES["accuracy"].name, m.SCORES["mse"].name) if name in metrics)
    print(f"test score: the cell's {score} {metrics[score]:.4f}; the script printed: {printed.strip()}")
    cell = metrics[m.CELL_SECONDS] + metrics.get(m.STORE_SECONDS, 0.0)
    print(f"where the time of the median bench run went ({harness:.2f} s):")
    for phase, label in [*m.TIME_PHASES.items(), ("store", "store writes")]:
        print(f"  {label:<22} {metrics.get(m.time_in(phase), 0.0):8.2f} s")
    print(f"  {'outside the cell':<22} {harness - cell:8.2f} s  (start-up, imports, the store's creation, claims, "
          f"the report)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10000, help="the sinusoid cell's meta-iterations")
    parser.add_argument("--glyphs-iterations", type=int, default=200, help="each glyphs cell's (0: no glyphs cells)")
    parser.add_argument("--glyphs-test-episodes", type=int, default=200)
    parser.add_argument("--device", default="cpu", help="the glyphs cells' and script's device")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fixed-cost-cells", type=int, default=10, help="extra empty cells for the fixed cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        fixed = _fixed_cost(Path(base), args.fixed_cost_cells)
    print(f"fixed cost: a one-cell suite (1 meta-iteration, 1 test episode) {fixed['one cell']:.2f} s end to end; "
          f"each further such cell {fixed['per cell']:.3f} s (from {1 + args.fixed_cost_cells} cells)")
    print(f"  `bench report` of the one-cell suite {fixed['report']:.2f} s as its own process, its building alone "
          f"{fixed['report built']:.2f} s; a fresh store with its first experiment {fixed['store']:.2f} s (after "
          f"imports)")
    _compare(f"sinusoid MAML (Finn), {args.iterations} meta-iterations", finn_maml_cell("end_to_end", args.iterations),
             "handwritten_sinusoid", ["--iterations", str(args.iterations)],
             ["--iterations", str(max(args.iterations // 10, 200))], args.repeats)
    if args.glyphs_iterations:
        glyphs(args.glyphs_iterations, args.glyphs_test_episodes, args.repeats, args.device)


def glyphs(iterations: int, test_episodes: int, repeats: int, device: str = "cpu") -> None:
    """The glyphs Conv-4 FOMAML and MAML cells against ``benchmarks.handwritten_glyphs`` on ``device``."""
    for learner, order in (("fomaml/functional", []), ("maml", ["--second-order"])):
        counts = ["--iterations", str(iterations), "--test-episodes", str(test_episodes), "--device", device]
        _compare(f"glyphs Conv-4 5-way 1-shot {learner} on {device}, {iterations} meta-iterations, {test_episodes} "
                 f"test episodes", glyphs_cell("end_to_end_glyphs", learner, iterations, test_episodes, device),
                 "handwritten_glyphs", [*counts, *order],
                 ["--iterations", "10", "--test-episodes", "10", "--device", device, *order], repeats)


if __name__ == "__main__":
    main()
