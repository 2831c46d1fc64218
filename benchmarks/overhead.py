"""Start-up overhead (performance P1): a 6-trial study against the same 6 configs in a bare
torch + peft loop, side by side in one run.

Run:

    .venv/bin/python benchmarks/overhead.py

The study is ``peftsearch run`` on the starter config (all-MiniLM-L6-v2 on the Rotten
Tomatoes demo data) with 6 trials of 30 steps, 2 Ray workers of one thread each, no
early stopping and no budget: wall time from the command's start to its exit, with the
imports, Ray, the workers' model loads, MLflow, the baseline and the report. The bare
loop, written here, runs the study's own 6 configs (their ``adapter_config.json`` and
learning rates) in 2 processes of one thread each, 3 configs each: each process imports
torch, transformers and peft, loads the model and tokenizes the same data, then per
config copies the model, wraps it with peft, trains 30 AdamW steps at the study's batch
size and scores the eval set. Target: study / bare <= 1.08 with --no-cache.

Order: a first study (which warms the disk cache), then ``--repeats`` pairs of a study
and the bare loop on that study's own configs (the sampler's configs after the initial
design depend on which trials finished first); the ratio is the median of the pairs.
Identical trials took 20 to 38 s in different runs of the same hour on this machine, so
each pair runs back to back and a run reports every pair. ``--no-cache`` runs the
studies without the frozen-layer cache, which the bare loop lacks: the start-up
overhead alone. ``--variant-env KEY=VALUE`` (repeatable) adds, to each repeat, a study
run with that environment against the same bare loop, the two studies taking turns
before and after it: an A/B of a setting in one run (``RAY_worker_niceness=0``: Ray's
workers at the command's own priority instead of Ray's nice 15).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 30
TRIALS = 6
WORKERS = 2
TARGET = 1.08  # issue 24, with --no-cache (the start-up overhead alone)
ROOT = Path(__file__).resolve().parents[1]


def study_config(out: Path, name: str, cache: bool = True) -> Path:
    import yaml

    config = yaml.safe_load((ROOT / "pipelines" / "starter.yaml").read_text())
    config["search"].update({"study_name": name, "n_trials": TRIALS, "early_stopping": False})
    config.pop("budget", None)
    config["training"]["max_steps"] = STEPS
    config["training"]["cache_frozen_layers"] = cache
    config["resources"].update({"cpus_per_trial": 1, "max_concurrent_trials": WORKERS})
    config["output_dir"] = str(out)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_study(out: Path, name: str, cache: bool = True, env: dict[str, str] | None = None) -> float:
    path = study_config(out, name, cache)
    began = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("peftsearch")), "run", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
    )
    return time.perf_counter() - began


def study_trials(out: Path, name: str) -> list[tuple[dict[str, Any], float]]:
    """The study's configs: each trial's saved ``adapter_config.json`` and its lr."""
    import csv

    folder = out / name
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    trials = []
    for row in rows:
        if row["status"] != "COMPLETE":
            continue
        config = json.loads(
            (folder / "trial_adapters" / row["trial"] / "adapter_config.json").read_text()
        )
        trials.append((config, float(row["lr"])))
    return trials


def data_rows(config: dict[str, Any]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The demo data as the starter config describes it: the labelled rows, shuffled, the
    eval fraction held out, both subsampled."""
    import random

    import pandas as pd

    data = config["data"]
    package, _, relative = data["train"].removeprefix("pkg://").partition("/")
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    table = pd.read_csv(path)
    labels = list(data["labels"])
    pairs = [
        (str(text), labels.index(label))
        for text, label in zip(table[data["text_column"]], table[data["label_column"]], strict=True)
        if label in labels
    ]
    random.Random(0).shuffle(pairs)
    held = int(len(pairs) * data["eval_fraction"])
    return pairs[held:][: data["max_train_samples"]], pairs[:held][: data["max_eval_samples"]]


def bare_worker(jobs: list[tuple[dict[str, Any], float]], config: dict[str, Any]) -> None:
    """One process of the bare loop: imports, model, data, then its configs in turn."""
    import random

    import torch
    from peft import get_peft_config, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    torch.set_num_threads(1)
    import importlib.util

    package, _, relative = config["model"]["name_or_path"].removeprefix("pkg://").partition("/")
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    model_dir = Path(next(iter(spec.submodule_search_locations))) / relative
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    train, evaluation = data_rows(config)
    length = config["data"]["max_length"]
    batch_size = config["training"]["batch_size"]
    eval_batch = config["training"]["eval_batch_size"]

    def encode(rows: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = tokenizer(
            [t for t, _ in rows],
            truncation=True,
            max_length=length,
            padding=True,
            return_tensors="pt",
        )
        return dict(inputs), torch.tensor([y for _, y in rows])

    for peft_config, lr in jobs:
        peft_config = {
            k: v
            for k, v in peft_config.items()
            if k not in ("base_model_name_or_path", "revision", "inference_mode")
        }
        model = get_peft_model(copy.deepcopy(base), get_peft_config(peft_config))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr)
        schedule = get_linear_schedule_with_warmup(optimizer, int(0.06 * STEPS), STEPS)
        rng = random.Random(0)
        model.train()
        for _ in range(STEPS):
            inputs, labels = encode(rng.sample(train, batch_size))
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(evaluation), eval_batch):
                inputs, _ = encode(evaluation[start : start + eval_batch])
                model(**inputs)


def run_bare(trials: list[tuple[dict[str, Any], float]], config: dict[str, Any]) -> float:
    context = multiprocessing.get_context("spawn")
    began = time.perf_counter()
    workers = [
        context.Process(target=bare_worker, args=(trials[i::WORKERS], config))
        for i in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise RuntimeError(f"a bare-loop worker failed ({worker.exitcode})")
    return time.perf_counter() - began


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="studies without the frozen-layer cache: the overhead alone, as the bare loop "
        "has no cache either (by default, the product as it ships)",
    )
    parser.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run, in each repeat, a study with this environment (e.g. "
        "RAY_worker_niceness=0) against the same bare loop: an A/B of a setting in one "
        "run; the two studies take turns on either side of the bare loop",
    )
    args = parser.parse_args()
    cache = not args.no_cache
    variant_env = dict(item.split("=", 1) for item in args.variant_env)
    with tempfile.TemporaryDirectory() as temp:
        out = Path(temp)
        first = run_study(out, "warmup", cache)
        config = yaml.safe_load(study_config(out, "warmup").read_text())
        print(f"first study: {first:.1f} s", file=sys.stderr)
        pairs = []
        variant: list[float] = []
        for repeat in range(args.repeats):
            before = bool(variant_env) and repeat % 2 == 1
            if before:
                variant.append(run_study(out, f"variant{repeat}", cache, variant_env))
            study = run_study(out, f"study{repeat}", cache)
            trials = study_trials(out, f"study{repeat}")
            bare = run_bare(trials, config)
            if variant_env and not before:
                variant.append(run_study(out, f"variant{repeat}", cache, variant_env))
            pairs.append((study, bare))
            print(
                f"repeat {repeat}: study {study:.1f} s, bare loop {bare:.1f} s, "
                f"ratio {study / bare:.3f}"
                + (
                    f"; with {variant_env} {variant[-1]:.1f} s, ratio {variant[-1] / bare:.3f}"
                    if variant_env
                    else ""
                ),
                file=sys.stderr,
            )
    ratio = statistics.median(s / b for s, b in pairs)
    figures = {
        "trials": len(trials),
        "frozen_layer_cache": cache,
        "steps": STEPS,
        "workers": WORKERS,
        "study_seconds": statistics.median(s for s, _ in pairs),
        "bare_seconds": statistics.median(b for _, b in pairs),
        "ratio": ratio,
        "pairs": [round(s / b, 3) for s, b in pairs],
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
    if variant_env:
        figures["variant_env"] = variant_env
        figures["variant_ratio"] = statistics.median(
            b / bare for b, (_, bare) in zip(variant, pairs, strict=True)
        )
        figures["variant_pairs"] = [
            round(b / bare, 3) for b, (_, bare) in zip(variant, pairs, strict=True)
        ]
    print(
        f"study {figures['study_seconds']:.1f} s vs bare loop {figures['bare_seconds']:.1f} s: "
        f"ratio {ratio:.3f} (target <= {TARGET})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
