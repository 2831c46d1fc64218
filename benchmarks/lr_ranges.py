"""Where each method learns, table by table: the evidence for the learning-rate defaults.

Run:

    .venv/bin/python benchmarks/lr_ranges.py --dataset rt_instruct   # the causal-LM table
    .venv/bin/python benchmarks/lr_ranges.py --dataset sst2 --dataset rt_instruct

For each method of a table (benchmarks/peft_table.py) and each learning rate of its grid:
how many configs, the best and the median score over the method's other knobs, and how
many configs stayed at chance (below the majority-answer rate, ``--floor``). A learning
rate is **in reach** when its best config is within noise of the method's best: one
binomial standard error of the difference at the table's eval rows (the search's own
noise rule, results/noise.py). The method's proposed range spans the in-reach learning
rates; ``current`` is the product's default range for the table's task (the plug-in's,
under the task's ``method_defaults``). Where the two disagree, the table is the evidence
for a task default (trials/tasks/); compare tables of other tasks before moving a
plug-in's own.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_quality import Row, Table, load_table, model_info_and_options, table_path


def within_noise(a: float, b: float, rows: int) -> bool:
    """Whether two scores on ``rows`` eval rows are tied (one standard error of the
    difference, binomial)."""
    spread = math.sqrt((a * (1 - a) + b * (1 - b)) / max(rows, 1))
    return abs(a - b) <= spread


def method_ranges(table: Table, floor: float) -> dict[str, Any]:
    """Per method: the learning-rate grid with best/median score and configs at chance,
    and the in-reach span."""
    by_method: dict[str, list[Row]] = {}
    for row in table.rows:
        by_method.setdefault(row.method, []).append(row)
    out: dict[str, Any] = {}
    for method, rows in sorted(by_method.items()):
        best = max(r.accuracy for r in rows)
        grid = []
        for lr in sorted({r.lr for r in rows}):
            at = [r.accuracy for r in rows if r.lr == lr]
            grid.append(
                {
                    "lr": lr,
                    "configs": len(at),
                    "best": max(at),
                    "median": statistics.median(at),
                    "at_chance": sum(a <= floor for a in at),
                    "in_reach": within_noise(max(at), best, table.eval_rows),
                }
            )
        reach = [g["lr"] for g in grid if g["in_reach"]]
        out[method] = {
            "best": best,
            "grid": grid,
            "in_reach": [min(reach), max(reach)],
            "best_median_lr": max(grid, key=lambda g: g["median"])["lr"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", default=None)
    parser.add_argument(
        "--floor", type=float, default=0.5, help="scores at or below it count as at chance"
    )
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    for dataset in args.dataset or ["rt_instruct"]:
        table = Table(load_table(table_path(dataset)))
        _, options, _ = model_info_and_options(dataset)
        ranges = method_ranges(table, args.floor)
        for method, entry in ranges.items():
            lr = getattr(options.get(method), "lr", None)
            entry["current"] = [lr.low, lr.high] if lr is not None else None
        figures[dataset] = {"rows": len(table.rows), "eval_rows": table.eval_rows, **ranges}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
