"""The `run` flow: config -> data -> space -> study on an executor -> results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.pipelines._build import (
    build_data,
    build_model_info,
    build_model_source,
    build_settings,
    write_study_files,
)

if TYPE_CHECKING:
    from rich.console import Console

    from peftsearch.config import Config

__all__ = ["SearchOutcome", "run_search"]


@dataclass
class SearchOutcome:
    study_dir: Path
    rows: list[dict[str, Any]]
    front: list[int]
    wall_seconds: float


def run_search(config: Config, console: Console) -> SearchOutcome:
    from peftsearch.results import TRIAL_ADAPTERS
    from peftsearch.search import (
        InProcessExecutor,
        SearchLoop,
        Tracker,
        finished_count,
        make_sampler,
        open_study,
    )
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import TrialRunner, detect_device

    started = time.perf_counter()
    study_dir = config.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    with console.status("Loading and tokenizing data..."):
        data = build_data(config)
        info = build_model_info(config, data.num_labels)
    console.print(
        f"Data: {data.stats['train_rows']} train / {data.stats['eval_rows']} eval rows, "
        f"labels {', '.join(data.label_names)}. "
        f"Model: {info.model_type}, {info.num_layers} layers, "
        f"{info.total_params:,} parameters."
    )
    write_study_files(config, data)
    study = open_study(
        config.search.study_name,
        config.storage_url,
        make_sampler(config.search.sampler, config.search.seed, config.search.n_trials),
    )
    done_before = finished_count(study)
    if done_before:
        console.print(
            f"Continuing study '{study.study_name}': {done_before} trials already finished."
        )
    tracker = Tracker(config.mlflow_uri, config.experiment_name, config.output_dir / "mlartifacts")
    parent = tracker.start_parent(study.study_name, config.model_dump(mode="json"))
    device, device_name = detect_device(config.training.device)
    runner = TrialRunner(
        build_model_source(config, data),
        data,
        build_settings(config),
        device=device,
        device_name=device_name,
        usd_per_device_hour=config.cost.usd_per_device_hour,
        num_threads=config.training.num_threads,
    )
    methods = config.method_options()
    total = config.search.n_trials
    counter = {"done": done_before}

    def report(result: Any) -> None:
        from peftsearch.results import trial_line

        counter["done"] += 1
        console.print(trial_line(result, counter["done"], total))

    loop = SearchLoop(
        study=study,
        executor=InProcessExecutor(runner),
        sample=lambda trial: sample_choice(trial, methods, info),
        n_trials=total,
        adapter_root=study_dir / TRIAL_ADAPTERS,
        tracker=tracker,
        parent_run_id=parent,
        on_result=report,
    )
    try:
        loop.run()
    except BaseException:
        tracker.end(parent, "KILLED")
        raise
    finally:
        loop.executor.close()
    return _finish(config, study, tracker, parent, time.perf_counter() - started)


def _finish(config: Config, study: Any, tracker: Any, parent: str, wall: float) -> SearchOutcome:
    from peftsearch.results import copy_front_adapters, pareto_numbers, trial_rows, write_tables

    rows = trial_rows(study)
    front = pareto_numbers(study)
    complete = [r for r in rows if r["status"] == "COMPLETE"]
    summary = {
        "study": study.study_name,
        "trials": len(rows),
        "complete": len(complete),
        "failed": sum(r["status"] == "FAIL" for r in rows),
        "total_cost_usd": sum(r["cost_usd"] or 0 for r in rows),
        "total_device_seconds": sum(r["device_seconds"] or 0 for r in rows),
        "best_accuracy": max((r["accuracy"] for r in complete), default=None),
    }
    write_tables(config.study_dir, rows, front, extra={"summary": summary})
    copied = copy_front_adapters(config.study_dir, front)
    if config.tracking.log_adapters:
        for number, folder in copied.items():
            run_id = study.trials[number].user_attrs.get("mlflow_run_id")
            if run_id:
                tracker.log_artifacts(run_id, folder, "adapter")
    tracker.log_parent_metrics(
        parent, {k: v for k, v in summary.items() if isinstance(v, int | float) and v is not None}
    )
    for name in ("pareto.json", "pareto.csv", "trials.csv"):
        tracker.log_file(parent, config.study_dir / name)
    tracker.end(parent, "FINISHED")
    return SearchOutcome(study_dir=config.study_dir, rows=rows, front=front, wall_seconds=wall)
