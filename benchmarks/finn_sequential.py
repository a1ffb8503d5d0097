"""Finn et al.'s sinusoid protocol with sequential seeds: `python -m benchmarks.finn_sequential [--looks 3 5 10]`.

Runs the shipped `sinusoid_finn2017` suite with its seeds as a plan of looks (O'Brien-Fleming-type spending) under the
suite name `sinusoid_finn2017_sequential` in the default store, then prints, for every published value, the look at
which the equivalence rule decided it (reproduced, not reproduced) or that the looks run so far left it open, with
the wall-clock of the run. Interrupted (or stopped at a session's end), the same command resumes at its look.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.__main__ import main as bench
from bench.consumers.report import analyse
from bench.consumers.report.loading import load_runs
from bench.spec.suite import shipped_suites, suites_from_text
from bench.store import tracking

NAME = "sinusoid_finn2017_sequential"


def suite_text(looks: list[int]) -> str:
    raw = yaml.safe_load(shipped_suites()["sinusoid_finn2017"].read_text(encoding="utf-8"))
    raw["suite"] = NAME
    raw["grid"]["seeds"] = {"looks": looks, "design": "obrien-fleming"}
    return yaml.safe_dump(raw, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--looks", type=int, nargs="+", default=[3, 5, 10])
    args = parser.parse_args(argv)
    text = suite_text(args.looks)
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{NAME}.yaml"
        path.write_text(text, encoding="utf-8")
        code = bench(["run", str(path), "--no-progress"])
    elapsed = time.time() - started
    suites = suites_from_text(text, NAME)
    analysis = analyse(load_runs(tracking.client_for(tracking.resolve_uri(suites[0].tracking.uri, None)), suites),
                       suites)
    state = analysis.sequence
    print(f"\n{NAME}: looks {args.looks}; this invocation {elapsed:.0f} s (exit {code}); "
          f"{'done' if state.done else f'at look {len(state.needed)}, not complete'}; "
          f"{state.seeds_spent} cell runs of the fixed design's {state.fixed_budget}")
    for key, question in state.questions.items():
        if question.kind != "published":
            continue
        d = state.decisions[key]
        where = f"look {d.look + 1} ({args.looks[d.look]} seeds)" if d.look is not None else "-"
        print(f"  {question.title:70s} {d.verdict or d.state:28s} decided at {where}; interval "
              f"[{d.interval[0]:+.3f}, {d.interval[1]:+.3f}], margin ±{question.margin:.3g}")
    return code


if __name__ == "__main__":
    sys.exit(main())
