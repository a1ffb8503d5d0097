"""The sequential design's calibration: `python -m benchmarks.sequential_calibration [--replicates N] [--out F]`.

Simulated experiments with known truth (bench.consumers.sequential.calibration): per setting (no effect, a large and a
small effect, equivalence, an effect at the equivalence margin, another spending function, four looks), the
family-wise false-verdict rate of the sequential design (the report's own verdicts), of the naive procedure (Holm
afresh at every look) and of fixed designs at each look's seeds, their power, and their mean cell runs; for the
sequential design, the fixed design's cell runs at the same power. The last line says whether the sequential design's
false-verdict rate is within alpha + 3 Monte-Carlo SE in every setting.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from bench.consumers.report import render
from bench.consumers.sequential.calibration import SETTINGS, calibrate, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--only", default="", help="only the settings whose name holds this text")
    args = parser.parse_args(argv)
    started, table = time.time(), []
    for setting in (s for s in SETTINGS if args.only in s.name):
        for row in rows(setting, calibrate(setting, args.replicates)):
            table.append(row)
            equal = row.get("fixed design's cell runs at equal power", "")
            print(f"{row['setting']:45s} {row['procedure']:28s} false {row['family-wise false verdicts']:.3f} "
                  f"power {row['power']:.3f} equivalent {row['equivalent when equal']:.3f} "
                  f"cells {row['mean cell runs']:.1f} {equal}",
                  flush=True)
    frame = pd.DataFrame(table)
    sequential = frame[frame["procedure"].str.startswith("sequential")]
    every = bool(sequential["within bound"].all())
    verdict = ("the sequential design's family-wise false-verdict rate is within alpha + 3 MC SE in every setting"
               if every else "OUT OF BOUND: " + "; ".join(sequential.loc[~sequential["within bound"], "setting"]))
    print(verdict)
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        only = f" --only '{args.only}'" if args.only else ""
        args.out.write_text(f"# Calibration of the sequential design\n\ncommit {commit}; command: `python -m "
                            f"benchmarks.sequential_calibration --replicates {args.replicates}{only}`; "
                            f"{time.time() - started:.0f} s\n\n"
                            + render.markdown([render.Table(frame.round(3))]) + f"\n{verdict}\n", encoding="utf-8")
    return 0 if every else 1


if __name__ == "__main__":
    sys.exit(main())
