"""GPU scheduling without a GPU: Ray nodes that declare fake GPUs, trials that ask for
half of one. Two trials share a GPU slot and no more run at once than the GPUs allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from executor_contract import drain
from helpers import LORA, ray_test_cluster, tiny_config

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.search.ray_executor import RayExecutor
from peftsearch.trials import TrialJob, WorkerSetup


@pytest.fixture(scope="module")
def gpu_cluster() -> Any:
    """A head with 4 CPUs and 1 declared (fake) GPU; Ray files in one short temp folder."""
    import ray

    for cluster, _ in ray_test_cluster(num_cpus=4, num_gpus=1):
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield cluster


def test_half_a_gpu_each_two_trials_share_one(
    gpu_cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = parse_config(
        tiny_config(
            tiny_model_dir,
            tiny_data,
            tmp_path,
            training={"max_steps": 200, "batch_size": 8, "device": "cpu"},
        )
    )
    data = build_data(config)
    setup = WorkerSetup(
        source=build_model_source(config, data), settings=build_settings(config), device="cpu"
    )
    # 4 CPUs would fit 4 workers; the one declared GPU fits two at 0.5 each
    executor = RayExecutor(setup, data, cpus_per_trial=1, gpus_per_trial=0.5)
    try:
        assert executor.slots == 2
        for number in range(3):
            executor.submit(TrialJob(number, "lora", LORA, 1e-3, None))
        results = sorted(drain(executor), key=lambda r: r.number)
    finally:
        executor.close()
    assert [r.status for r in results] == ["COMPLETE"] * 3, [r.error for r in results]
    spans = [(r.started_at, r.finished_at) for r in results]
    # never more than two at once: at any trial's start, at most one other is running
    for start, _ in spans:
        running = sum(s <= start < f for s, f in spans)
        assert running <= 2
    # and two did overlap (the GPU slot is shared, not serialised)
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])
