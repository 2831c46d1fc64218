"""Early stopping on or off at the same budget, on the offline demo: trials finished and
hypervolume of the front.

Run: .venv/bin/python benchmarks/early_stopping.py [--budget-usd 0.01] [--out DIR]

Both searches use the demo config (MiniLM, Rotten Tomatoes, 2 Ray workers) with the same
seed and budget. Hypervolume is over (accuracy, trainable params, cost) with a fixed
reference point (accuracy 0.5, 1% of the model's params, $0.003 per trial), normalized
by the reference box, so 1.0 would be a perfect, free, 1-parameter classifier.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REFERENCE = {"accuracy": 0.5, "trainable_pct": 1.0, "cost_usd": 0.003}


def search(config: Path, out: Path, name: str, early: bool, budget: float) -> dict:
    command = [
        sys.executable,
        "-m",
        "peftsearch.pipelines.cli",
        "run",
        str(config),
        "--set",
        f"output_dir={out}",
        "--set",
        f"search.study_name={name}",
        "--set",
        f"search.early_stopping={str(early).lower()}",
        "--set",
        f"budget.max_cost_usd={budget}",
        "--set",
        "budget.max_wall_time=null",
        "--set",
        "search.n_trials=100",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / name / "pareto.json").read_text())


def hypervolume(rows: list[dict], total_params: int) -> float:
    from optuna._hypervolume import compute_hypervolume

    ref = np.array(
        [
            -REFERENCE["accuracy"],
            REFERENCE["trainable_pct"] / 100 * total_params,
            REFERENCE["cost_usd"],
        ]
    )
    points = np.array(
        [[-r["accuracy"], r["trainable_params"], r["cost_usd"]] for r in rows]
    ).reshape(-1, 3)
    points = points[(points < ref).all(axis=1)]
    if len(points) == 0:
        return 0.0
    box = float(np.prod(ref - np.array([-1.0, 0.0, 0.0])))
    return compute_hypervolume(points, ref) / box


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-usd", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="peftsearch-es-"))
    config = out / "demo.yaml"
    subprocess.run(
        [sys.executable, "-m", "peftsearch.pipelines.cli", "init", str(config), "--force"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for name, early in (("early-stopping-on", True), ("early-stopping-off", False)):
        result = search(config, out, name, early, args.budget_usd)
        rows = result["pareto"]
        total = (
            max(round(r["trainable_params"] * 100 / r["trainable_pct"]) for r in rows)
            if rows
            else 1
        )
        s = result["summary"]
        print(
            f"{name:19s} trials {s['trials']:3d} (complete {s['complete']}, pruned {s['pruned']}), "
            f"front {len(rows)}, best accuracy {s['best_accuracy']:.3f}, "
            f"spent ${result['budget']['spent_usd']:.4f} of ${args.budget_usd}, "
            f"hypervolume {hypervolume(rows, total):.4f}"
        )
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
