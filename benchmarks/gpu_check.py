"""The GPU paths in one short script (at most 5 minutes), for a machine with CUDA.

Run:  .venv/bin/python benchmarks/gpu_check.py [--steps 16]

1. A LoRA trial on SmolLM2-135M (the LLM demo's checkpoint and data) on CUDA in bf16,
   then the same on an nf4 base: CUDA peak memory (reserved and allocated, reset per
   trial), the memory model's prediction, step time, exact match.
2. A small search with ``resources.gpus_per_trial: 0.5``: two trials share the GPU (two
   Ray workers), each held to half its memory; every trial's measured peak against its
   prediction, and whether any ran out of memory.

Prints one table. Nothing here runs in CI (CI has no GPU); until this script has run on
a GPU, the README says the GPU paths are untested.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from importlib.resources import files
from typing import Any

import yaml


def config_dict(out: str, steps: int) -> dict[str, Any]:
    config = yaml.safe_load(files("peftsearch.pipelines").joinpath("llm_example.yaml").read_text())
    config["output_dir"] = out
    config["training"]["max_steps"] = steps
    config["data"]["max_train_samples"] = 400
    return config


def trials_on_cuda(out: str, steps: int) -> list[list[str]]:
    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import (
        build_data,
        build_memory_model,
        build_model_info,
        build_model_source,
        build_settings,
    )
    from peftsearch.search.memory_model import MemoryNeed
    from peftsearch.spaces import get_method
    from peftsearch.trials import TrialJob, TrialRunner

    config = parse_config(config_dict(out, steps))
    data = build_data(config)
    info, meta = build_model_info(config, data.label_names)
    memory, _ = build_memory_model(config, data, meta)
    runner = TrialRunner(
        build_model_source(config, data), data, build_settings(config), device="cuda",
        device_name="cuda",
    )  # fmt: skip
    lora = get_method("lora").calibration_config(info)
    rows = []
    for quantization in ("none", "nf4"):
        result = runner.run(TrialJob(0, "lora", lora, 3e-3, None, quantization=quantization))
        need = MemoryNeed(result.trainable_params or 0, 0, quantization)
        rows.append(
            [
                f"trial on {'bf16' if quantization == 'none' else 'nf4'}",
                result.status,
                f"{result.peak_memory_mb or 0:.0f}",
                f"{result.peak_allocated_mb or 0:.0f}",
                f"{memory.predict(need):.0f}",
                f"{result.train_seconds / max(1, result.steps):.3f}",
                f"{result.accuracy if result.accuracy is not None else float('nan'):.3f}",
                result.error or "",
            ]
        )
    return rows


def shared_gpu(out: str, steps: int) -> list[list[str]]:
    from rich.console import Console

    from peftsearch.config import parse_config
    from peftsearch.pipelines.run import run_search

    config = config_dict(out, steps)
    config["search"].update(study_name="gpu-shared", n_trials=4)
    config["budget"] = {"max_wall_time": "3m"}
    config["resources"] = {"gpus_per_trial": 0.5, "cpus_per_trial": 2}
    parsed = parse_config(config)
    run_search(parsed, Console(quiet=True))
    rows = []
    with (parsed.study_dir / "trials.csv").open() as handle:
        for row in csv.DictReader(handle):
            rows.append(
                [
                    f"shared GPU: trial {row['trial']} {row['method']}",
                    row["status"],
                    f"{float(row['peak_memory_mb'] or 0):.0f}",
                    f"{float(row.get('peak_allocated_mb') or 0):.0f}",
                    f"{float(row['predicted_memory_mb'] or 0):.0f}",
                    "-",
                    row["accuracy"][:5] if row["accuracy"] else "-",
                    row["error"] or "",
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ps-gpu-") as out:
        rows = trials_on_cuda(out, args.steps) + shared_gpu(out, args.steps)
    header = ["run", "status", "peak MB", "alloc MB", "predicted MB", "s/step", "score", "error"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(torch.cuda.get_device_name(0))
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
