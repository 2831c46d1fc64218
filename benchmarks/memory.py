"""Memory: a quantized base against a full-precision one, the memory model's prediction
error, and a study whose memory limit is below what its largest configs need.

Run:  .venv/bin/python benchmarks/memory.py [--part quantization|prediction|limit|searches|all]
(``searches``: prediction, then limit)

- quantization: the same LoRA config (the LoRA plug-in's calibration config: rank 8 on
  q/v of every block) on SmolLM2-135M (the LLM demo's GGUF checkpoint, its data and
  training settings, ``--eval-rows`` eval prompts), on the float32 base and on an nf4
  one, each without and with gradient checkpointing (QLoRA's recipe is both): the
  trial's peak memory (trials/memory.py), its step time and its exact match after
  training, with the memory model's terms beside.
- prediction: both demos as ``make demo`` and ``make demo-llm`` run them (their starter
  configs, Ray, their budgets); ``predicted_memory_mb`` (the memory model, before each
  trial launched) against ``peak_memory_mb`` (measured) over every trained trial:
  median and 90th percentile relative error, per demo and per method.
- limit: the MiniLM demo again with ``resources.memory_per_trial_gb`` set below what its
  larger configs need (``--limit-fraction`` of the median peak the prediction part
  measured, else ``--limit-gb``): how many configs trained with the memory levers, how
  many were skipped before training, how many failed.

Timings on this shared 2-core machine are noisy; ratios come from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
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


def quantization(threads: int, eval_rows: int) -> None:
    import torch

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

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as temp:
        settings = example("llm_example.yaml", temp)
        settings["data"]["max_eval_samples"] = eval_rows
        config = parse_config(settings)
        data = build_data(config)
        info, meta = build_model_info(config, data.label_names)
        memory, _ = build_memory_model(config, data, meta)
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
        for quantization, checkpointing in VARIANTS:
            job = TrialJob(0, "lora", lora, 3e-3, None, quantization=quantization)
            job = dataclasses.replace(job, gradient_checkpointing=checkpointing)
            result = runner.run(job)
            if result.status != "COMPLETE":
                print(f"{quantization}: {result.status} {result.error}")
                return
            rows[(quantization, checkpointing)] = result
        print(
            f"\nSmolLM2-135M, LoRA rank {lora['r']} on {', '.join(lora['target_modules'])}, "
            f"{config.training.max_steps} steps of batch {config.training.batch_size}, "
            f"{len(data.eval)} eval prompts; the memory model's terms (theory, MB) beside"
        )
        print(
            f"{'base':22s} {'peak MB':>8s} {'s/step':>7s} {'exact match':>14s}"
            f" {'weights':>8s} {'states':>7s} {'activations':>12s}"
        )
        for (name, checkpointing), r in rows.items():
            se = math.sqrt(max(r.accuracy * (1 - r.accuracy), 1e-9) / len(data.eval))
            step = r.train_seconds / r.steps
            need = MemoryNeed(
                r.trainable_params or 0, 0, name, gradient_checkpointing=checkpointing
            )
            label = name + (" + checkpointing" if checkpointing else "")
            print(
                f"{label:22s} {r.peak_memory_mb:8.0f} {step:7.2f} {r.accuracy:8.3f} ± {se:.3f}"
                f" {memory.base_mb(name):8.0f} {memory.states_mb(need.trainable_params):7.0f}"
                f" {memory.activations_mb(need):12.0f}"
            )
        none = rows[("none", False)]
        for key in (("nf4", False), ("nf4", True), ("none", True)):
            r = rows[key]
            assert none.peak_memory_mb and r.peak_memory_mb
            print(
                f"{key[0]}{' + checkpointing' if key[1] else ''} / none: peak memory "
                f"{r.peak_memory_mb / none.peak_memory_mb:.2f}x (target for nf4 <= 0.6x), step "
                f"time {(r.train_seconds / r.steps) / (none.train_seconds / none.steps):.2f}x, "
                f"exact match {r.accuracy - none.accuracy:+.3f}"
            )


# (quantization, gradient checkpointing): QLoRA's recipe is nf4 with checkpointing
VARIANTS = (("none", False), ("nf4", False), ("none", True), ("nf4", True))


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
    """Both demos; returns the median peak the MiniLM demo measured (MB)."""
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
    return statistics.median(peaks) if peaks else None


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
        "--part", default="all", choices=["quantization", "prediction", "limit", "searches", "all"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--limit-fraction", type=float, default=0.55)
    parser.add_argument("--limit-gb", type=float, default=0.5)
    parser.add_argument("--out", default=None, help="keep the studies here (default: a temp dir)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        out = args.out or stack.enter_context(tempfile.TemporaryDirectory(prefix="ps-mem-"))
        if args.part in ("quantization", "all"):
            quantization(args.threads, args.eval_rows)
        typical = None
        if args.part in ("prediction", "searches", "all"):
            typical = prediction(out)
        if args.part in ("limit", "searches", "all"):
            gb = typical * args.limit_fraction / 1024 if typical else args.limit_gb
            limit(out, gb)


if __name__ == "__main__":
    main()
