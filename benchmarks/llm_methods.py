"""Every method on a real decoder: step time per method on SmolLM2-135M, and the time
greedy generation adds to an evaluation (exact match vs teacher-forced token accuracy).

Run:  .venv/bin/python benchmarks/llm_methods.py [--steps 6] [--threads 2]

Each method's trial is the product's ``TrialRunner`` on the config of
``peftsearch init --example llm`` (batch 4, 128 tokens), with the method's calibration
config. Step times are means over the trial's steps; ratios are to LoRA in the same
run (timings on a shared machine are noisy; compare ratios).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib.resources import files

import yaml

METHODS = (
    "lora",
    "dora",
    "ia3",
    "loha",
    "lokr",
    "prompt_tuning",
    "prefix_tuning",
    "bottleneck_adapter",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-rows", type=int, default=32)
    args = parser.parse_args()

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
    from peftsearch.trials.lm_eval import evaluate_lm

    torch.set_num_threads(args.threads)
    example = yaml.safe_load(files("peftsearch.pipelines").joinpath("llm_example.yaml").read_text())
    with tempfile.TemporaryDirectory() as temp:
        example["output_dir"] = temp
        example["data"].update(max_train_samples=200, max_eval_samples=args.eval_rows)
        example["training"]["max_steps"] = args.steps
        example["space"]["methods"] = list(METHODS)
        config = parse_config(example)
        data = build_data(config)
        info, _ = build_model_info(config, data.label_names)
        source = build_model_source(config, data)
        began = time.perf_counter()
        source.fresh_copy()
        print(f"model load: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        runner = TrialRunner(
            source,
            data,
            build_settings(config),
            device="cpu",
            device_name="cpu",
            num_threads=args.threads,
        )
        steps: dict[str, float] = {}
        for method in METHODS:
            peft_config = get_method(method).calibration_config(info)
            result = runner.run(TrialJob(0, method, peft_config, 1e-3, None))
            if result.status != "COMPLETE":
                print(f"{method}: {result.status} {result.error}")
                continue
            steps[method] = result.train_seconds / result.steps
            print(
                f"{method:20s} {steps[method]:6.2f} s/step  ({steps[method] / steps['lora']:.2f}x "
                f"LoRA)  {result.trainable_params:>10,} trainable  exact match "
                f"{result.accuracy:.3f}",
                flush=True,
            )
        model = source.fresh_copy()
        times: dict[str, list[float]] = {"token_accuracy": [], "exact_match": []}
        for _ in range(3):
            for metric in times:
                began = time.perf_counter()
                evaluate_lm(
                    model,
                    data.eval,
                    metric=metric,
                    tokenizer=source.tokenizer(),
                    batch_size=config.training.eval_batch_size,
                    pad_token_id=data.pad_token_id,
                    device="cpu",
                    max_new_tokens=config.evaluation.max_new_tokens,
                )
                times[metric].append(time.perf_counter() - began)
        forced = statistics.median(times["token_accuracy"])
        generated = statistics.median(times["exact_match"])
        print(
            f"evaluation of {len(data.eval)} prompts: teacher-forced {forced:.1f} s, with greedy "
            f"generation of <= {config.evaluation.max_new_tokens} tokens {generated:.1f} s "
            f"(generation adds {generated - forced:.1f} s, {generated / forced:.1f}x)"
        )


if __name__ == "__main__":
    main()
