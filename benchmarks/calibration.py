"""The calibration of every verdict the report prints: `python -m benchmarks.calibration [--replicates N] [--out F]`.

Simulated experiments with known truth go through the report's own path (bench.consumers.calibration); one table row
per verdict kind and regime: the false-verdict rate under no effect with its Monte-Carlo interval, the coverage of the
printed 95% intervals, the power under a stated effect; the last line says whether every kind is within its bound
(false verdicts at most alpha + 3 Monte-Carlo SE, coverage at least 95% - 3 SE, "reproduced" at the margin at most
alpha + 3 SE). The test suite runs a few of these regimes with fewer replicates (tests/bench/test_calibration.py).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bench.consumers.calibration import Regime, calibrate, rows
from bench.consumers.report import render

SEED_SDS = (0.002, 0.05, 0.3)  # much smaller than, about equal to... and larger than the episode SD below
EPISODE_SD = 0.15


def regimes() -> list[tuple[Regime, bool]]:
    """(regime, margin case) of the full calibration."""
    out = []
    for seeds in (2, 3, 5, 10):
        for seed_sd in SEED_SDS:
            out.append((Regime("learners", seeds, seed_sd, EPISODE_SD), False))
    for seed_sd in SEED_SDS:
        out += [(Regime("k_axis", 3, seed_sd, EPISODE_SD, episodes=600), False),
                (Regime("option", 3, seed_sd, EPISODE_SD), False),
                (Regime("factorial", 3, seed_sd, EPISODE_SD), False),
                (Regime("conditions", 3, seed_sd, EPISODE_SD), False)]
    out += [(Regime("learners", 3, 0.05, EPISODE_SD, heavy_tails=True), False),
            (Regime("k_axis", 3, 0.01, EPISODE_SD, episodes=600, heavy_tails=True), False),
            (Regime("learners", 3, 0.05, EPISODE_SD, diverging=0.005), False),
            (Regime("learners", 3, 0.05, EPISODE_SD, diverging=0.005, exclude_diverged=True), False),
            (Regime("conditions", 3, 0.05, EPISODE_SD, diverging=0.005, exclude_diverged=True), False)]
    for seeds in (2, 3, 5, 10):  # the equivalence rule: at the margin, and the published value itself
        out += [(Regime("published", seeds, 0.05, 0.3, episodes=600), False),
                (Regime("published", seeds, 0.05, 0.3, episodes=600), True)]
    for seeds in (2, 3, 5, 10):  # power: maml's error lower by 0.05 (a third of the episode SD)
        out.append((Regime("learners", seeds, 0.05, EPISODE_SD, effect=-0.05), False))
    out.append((Regime("k_axis", 3, 0.05, EPISODE_SD, episodes=600, effect=-0.05), False))
    return out


def _rate(row: dict) -> str:
    rate, n = row["false-verdict rate"], row["replicates"]
    if math.isnan(rate):
        return "-"
    half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / n)
    return f"{rate:.3f} [{max(0.0, rate - half):.3f}, {min(1.0, rate + half):.3f}]"


def arguments(doc: str, replicates: int, argv: list[str] | None) -> argparse.Namespace:
    """A calibration's command line: how many replicates, where the table goes, which regimes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=replicates)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--only", default="", help="only the regimes (settings) whose name holds this text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, 200, argv)
    started, table = time.time(), []
    for regime, margin_case in (r for r in regimes() if args.only in r[0].name):
        outcome = calibrate(regime, args.replicates, margin_case)
        for row in rows(outcome):
            row["regime"] += ", true difference at the margin" if margin_case else ""
            table.append(row)
            print(f"{row['verdict kind']:42s} {row['regime']:95s} false {_rate(row):22s} "
                  f"coverage {row['coverage']:.3f} power {row['power']:.3f} "
                  f"{'ok' if row['within bound'] else 'OUT OF BOUND'}", flush=True)
    frame = pd.DataFrame(table)
    frame["false-verdict rate (95% MC interval)"] = [_rate(r) for r in table]
    every = bool(frame["within bound"].all())
    verdict = ("every verdict kind within its bound" if every else
               "OUT OF BOUND: " + "; ".join(f"{r['verdict kind']} ({r['regime']})" for r in table
                                            if not r["within bound"]))
    print(verdict)
    if args.out:
        shown = frame[["verdict kind", "regime", "effect", "replicates", "tests",
                       "false-verdict rate (95% MC interval)", "coverage", "power", "within bound"]]
        write_table(args, "Calibration of the report's verdicts", "benchmarks.calibration", started, shown, verdict)
    return 0 if every else 1


def write_table(args, title: str, module: str, started: float, frame: pd.DataFrame, verdict: str) -> None:
    """The table as Markdown in ``args.out``, headed by the commit and the command that made it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    only = f" --only '{args.only}'" if args.only else ""
    args.out.write_text(f"# {title}\n\ncommit {commit}; command: `python -m {module} --replicates "
                        f"{args.replicates}{only}`; {time.time() - started:.0f} s\n\n"
                        + render.markdown([render.Table(frame.round(3))]) + f"\n{verdict}\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
