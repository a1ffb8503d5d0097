"""The sequential design's calibration: `python -m benchmarks.sequential_calibration [--replicates N] [--out F]`.

Simulated experiments with known truth (bench.consumers.sequential.calibration): per setting (no effect, a large and
a small effect, equivalence, an effect at the equivalence margin, another spending function, four looks, diverging
episodes kept in), the family-wise false-verdict rate of the sequential design (the report's own verdicts), of the
naive procedure (Holm afresh at every look) and of fixed designs at each look's seeds, their power, and their mean
cell runs; for the sequential design, the fixed design's cell runs at the same power. The last line says whether the
sequential design's false-verdict rate is within alpha + 3 Monte-Carlo SE in every setting.
"""
from __future__ import annotations

import sys
import time

import pandas as pd

from bench.consumers.sequential.calibration import SETTINGS, calibrate, rows
from benchmarks.calibration import arguments, write_table


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, 300, argv)
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
        write_table(args, "Calibration of the sequential design", "benchmarks.sequential_calibration", started, frame,
                    verdict)
    return 0 if every else 1


if __name__ == "__main__":
    sys.exit(main())
