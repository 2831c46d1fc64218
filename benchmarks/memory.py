"""Memory: a quantized base against a full-precision one, the memory model's prediction
error, and a study whose memory limit is below what its largest configs need.

Run:  .venv/bin/python benchmarks/memory.py [--part quantization|prediction|limit|all]

- quantization: the same LoRA config (the LoRA plug-in's calibration config: rank 8 on
  q/v of every block) on SmolLM2-135M (the LLM demo's GGUF checkpoint, its data and
  training settings), once on the float32 base and once on an nf4 one: the trial's peak
  memory (trials/memory.py), its step time and its exact match after training.
- prediction: both demos as ``make demo`` and ``make demo-llm`` run them (their starter
  configs, Ray, their budgets); ``predicted_memory_mb`` (the memory model, before each
  trial launched) against ``peak_memory_mb`` (measured) over every trained trial:
  median and 90th percentile relative error, per demo and per method.
- limit: the MiniLM demo again with ``resources.memory_per_trial_gb`` set below what its
  largest configs need (``--limit-fraction`` of the largest peak the prediction part
  measured, else ``--limit-gb``): how many configs trained with the memory levers, how
  many were skipped before training, how many failed.

Timings on this shared 2-core machine are noisy; ratios come from one run.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import tempfile
from collections import defaultdict
from importlib.resources import files
from typing import Any

import yaml


def example(name: str, out: str) -> dict[str, Any]:
    text = files("peftsearch.pipelines").joinpath(name).read_text()
    config = yaml.safe_load(text)
    config["output_dir"] = out
    return config


def quantization(threads: int) -> None:
    import torch

    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import (
        build_data,
        build_model_info,
        build_model_source,
        build_settings,
    )
    from peftsearch.spaces import get_method
    from peftsearch.trials import TrialJob, TrialRunner

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as temp:
        config = parse_config(example("llm_example.yaml", temp))
        data = build_data(config)
        info, _ = build_model_info(config, data.label_names)
        runner = TrialRunner(
            build_model_source(config, data),
            data,
            build_settings(config),
            device="cpu",
            device_name="cpu",
            num_threads=threads,
        )
        lora = get_method("lora").calibration_config(info)
        rows = {}
        for quantization in ("none", "nf4"):
            result = runner.run(TrialJob(0, "lora", lora, 3e-3, None, quantization=quantization))
            if result.status != "COMPLETE":
                print(f"{quantization}: {result.status} {result.error}")
                return
            rows[quantization] = result
        print(
            f"\nSmolLM2-135M, LoRA rank {lora['r']} on {', '.join(lora['target_modules'])}, "
            f"{config.training.max_steps} steps of batch {config.training.batch_size}, "
            f"{len(data.eval)} eval prompts"
        )
        print(f"{'base':6s} {'peak MB':>9s} {'s/step':>8s} {'exact match':>14s}")
        for name, r in rows.items():
            se = math.sqrt(max(r.accuracy * (1 - r.accuracy), 1e-9) / len(data.eval))
            step = r.train_seconds / r.steps
            print(f"{name:6s} {r.peak_memory_mb:9.0f} {step:8.2f} {r.accuracy:8.3f} ± {se:.3f}")
        none, nf4 = rows["none"], rows["nf4"]
        assert none.peak_memory_mb and nf4.peak_memory_mb
        print(
            f"nf4 / none: peak memory {nf4.peak_memory_mb / none.peak_memory_mb:.2f}x "
            "(target <= 0.6x), step time "
            f"{(nf4.train_seconds / nf4.steps) / (none.train_seconds / none.steps):.2f}x, "
            f"exact match {nf4.accuracy - none.accuracy:+.3f}"
        )


def run_demo(name: str, out: str, **changes: Any) -> list[dict[str, str]]:
    from rich.console import Console

    from peftsearch.config import parse_config
    from peftsearch.pipelines.run import run_search

    config = example(name, out)
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    parsed = parse_config(config)
    run_search(parsed, Console(quiet=True))
    with (parsed.study_dir / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def errors(rows: list[dict[str, str]]) -> list[tuple[str, float, float]]:
    """(method, predicted, measured) of every trained trial."""
    out = []
    for row in rows:
        predicted, measured = (
            _float(row.get("predicted_memory_mb")),
            _float(row.get("peak_memory_mb")),
        )
        if row["status"] in ("COMPLETE", "PRUNED") and predicted and measured:
            out.append((row["method"], predicted, measured))
    return out


def summarise(label: str, pairs: list[tuple[str, float, float]]) -> None:
    relative = [abs(p - m) / m for _, p, m in pairs]
    if not relative:
        print(f"{label}: no trained trial measured")
        return
    ninety = sorted(relative)[max(0, math.ceil(0.9 * len(relative)) - 1)]
    print(
        f"{label:28s} {len(relative):3d} trials  median |error| {statistics.median(relative):6.1%}"
        f"  90th percentile {ninety:6.1%}"
    )


def prediction(out: str) -> float | None:
    """Both demos; returns the largest peak the MiniLM demo measured (MB)."""
    demos = {
        "MiniLM demo (starter.yaml)": run_demo("starter.yaml", out),
        "LLM demo (llm_example.yaml)": run_demo("llm_example.yaml", out),
    }
    print("\nPredicted against measured peak memory per trial")
    everything = []
    for label, rows in demos.items():
        pairs = errors(rows)
        everything += pairs
        summarise(label, pairs)
        by_method = defaultdict(list)
        for method, predicted, measured in pairs:
            by_method[method].append((method, predicted, measured))
        for method, group in sorted(by_method.items()):
            summarise(f"  {method}", group)
        for method, predicted, measured in pairs:
            print(f"    {method:20s} predicted {predicted:7.0f} MB  measured {measured:7.0f} MB")
    summarise("both demos", everything)
    peaks = [m for _, _, m in errors(next(iter(demos.values())))]
    return max(peaks) if peaks else None


def limit(out: str, limit_gb: float) -> None:
    rows = run_demo(
        "starter.yaml",
        out,
        search={"study_name": "demo-limited"},
        resources={"memory_per_trial_gb": limit_gb},
    )
    adjusted = [r for r in rows if r.get("memory_note") and r["status"] != "INFEASIBLE"]
    skipped = [r for r in rows if r["status"] == "INFEASIBLE" and "memory" in (r["error"] or "")]
    failed = [r for r in rows if r["status"] == "FAIL"]
    trained = [r for r in rows if r["status"] in ("COMPLETE", "PRUNED")]
    over = [r for r in trained if (_float(r.get("peak_memory_mb")) or 0) > limit_gb * 1024]
    print(f"\nMiniLM demo at resources.memory_per_trial_gb = {limit_gb:.3f}")
    print(
        f"{len(rows)} configs: {len(trained)} trained, {len(adjusted)} of them with the memory "
        f"levers, {len(skipped)} skipped before training, {len(failed)} failed (target 0); "
        f"{len(over)} trained trials measured over the limit"
    )
    for r in adjusted:
        print(f"  trial {r['trial']} {r['method']}: {r['memory_note']}")
    for r in skipped[:5]:
        print(f"  trial {r['trial']} {r['method']}: {r['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", default="all", choices=["quantization", "prediction", "limit", "all"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit-fraction", type=float, default=0.7)
    parser.add_argument("--limit-gb", type=float, default=0.3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ps-mem-") as out:
        if args.part in ("quantization", "all"):
            quantization(args.threads)
        largest = None
        if args.part in ("prediction", "all"):
            largest = prediction(out)
        if args.part in ("limit", "all"):
            gb = largest * args.limit_fraction / 1024 if largest else args.limit_gb
            limit(out, gb)


if __name__ == "__main__":
    main()
