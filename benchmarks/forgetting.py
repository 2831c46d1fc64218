"""What measuring forgetting costs per trial, read from a finished causal-LM study.

Run (after ``make demo-llm``, or on any causal-LM study folder):

    .venv/bin/python benchmarks/forgetting.py [peftsearch-out/llm-demo]

Per trial: the seconds spent scoring the reference text with the adapter
(``forgetting_seconds``, wall time on the trial's device share), against the trial's own
wall time (its baseline in the same run; device-seconds are both times the share),
and the one-off cost per worker of deriving the reference and the base model's losses on it
(``reference_seconds``, overhead outside the config's cost). The target (issue 23): the
per-trial share under 10% of a trial's device time in the LLM demo. Prints one line per
trial, then a JSON object with the medians.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def main() -> None:
    study = Path(sys.argv[1] if len(sys.argv) > 1 else "peftsearch-out/llm-demo")
    with (study / "trials.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "COMPLETE" and r["forgetting"]]
    if not rows:
        sys.exit(f"{study}: no trial measured forgetting (a causal-LM study is needed)")
    shares, references = [], []
    for row in rows:
        seconds, wall = float(row["forgetting_seconds"]), float(row["wall_seconds"])
        shares.append(seconds / wall)
        if float(row["reference_seconds"] or 0):
            references.append(float(row["reference_seconds"]))
        print(
            f"trial {row['trial']:>3} {row['method']:20s} "
            f"forgetting {float(row['forgetting']):+.3f} "
            f"± {float(row['forgetting_se'] or 0):.3f}: {seconds:.1f} of {wall:.0f} s "
            f"({100 * seconds / wall:.1f}%)",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "study": str(study),
                "trials": len(rows),
                "share_median": statistics.median(shares),
                "share_max": max(shares),
                "reference_seconds_per_worker": references,
            }
        )
    )


if __name__ == "__main__":
    main()
