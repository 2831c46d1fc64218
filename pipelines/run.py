"""The `run` and `resume` flows: config -> data -> space -> study on workers -> results."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.pipelines._build import (
    build_budget,
    build_data,
    build_model_info,
    build_model_source,
    build_settings,
    describe_budget,
    write_study_files,
)

if TYPE_CHECKING:
    from rich.console import Console

    from peftsearch.config import Config
    from peftsearch.search import TrialExecutor
    from peftsearch.search.early_stopping import RungBoard
    from peftsearch.trials import PreparedData

__all__ = ["SearchOutcome", "run_search"]


@dataclass
class SearchOutcome:
    study_dir: Path
    rows: list[dict[str, Any]]
    front: list[int]
    wall_seconds: float


@contextlib.contextmanager
def open_executor(
    config: Config, data: PreparedData, board: RungBoard | None
) -> Iterator[TrialExecutor]:
    """Ray workers by default; in-process when ``resources.use_ray`` is false."""
    from peftsearch.search import InProcessExecutor

    resources = config.resources
    if not resources.use_ray:
        from peftsearch.trials import TrialRunner, detect_device

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
        executor = InProcessExecutor(runner, board)
        try:
            yield executor
        finally:
            executor.close()
        return

    from peftsearch.search.ray_executor import RayExecutor, WorkerSetup
    from peftsearch.search.ray_session import ray_session

    gpus = resources.gpus_per_trial
    if gpus is None:
        import torch

        gpus = 1.0 if torch.cuda.is_available() and config.training.device != "cpu" else 0.0
    threads = config.training.num_threads or max(1, int(resources.cpus_per_trial))
    setup = WorkerSetup(
        source=build_model_source(config, data),
        settings=build_settings(config),
        device=config.training.device,
        usd_per_device_hour=config.cost.usd_per_device_hour,
        num_threads=threads,
    )
    with ray_session(resources.ray_address):
        ray_executor = RayExecutor(
            setup,
            data,
            cpus_per_trial=resources.cpus_per_trial,
            gpus_per_trial=gpus,
            max_concurrent=resources.max_concurrent_trials,
            board=board,
        )
        try:
            yield ray_executor
        finally:
            ray_executor.close()


def run_search(config: Config, console: Console, *, resume: bool = False) -> SearchOutcome:
    from rich.live import Live

    from peftsearch.results import TRIAL_ADAPTERS, trial_line
    from peftsearch.results.progress import SearchProgress
    from peftsearch.search import SearchLoop, Tracker, finished_count, make_sampler, open_study
    from peftsearch.search.early_stopping import RungBoard, accuracy_noise, rung_steps
    from peftsearch.search.recovery import recover_study
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import count_trainable

    started = time.perf_counter()
    study_dir = config.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    with console.status("Loading and tokenizing data..."):
        data = build_data(config)
        info, meta = build_model_info(config, data.num_labels)
    console.print(
        f"Data: {data.stats['train_rows']} train / {data.stats['eval_rows']} eval rows, "
        f"labels {', '.join(data.label_names)}. "
        f"Model: {info.model_type}, {info.num_layers} layers, {info.total_params:,} parameters."
    )
    write_study_files(config, data)
    study = open_study(
        config.search.study_name,
        config.storage_url,
        make_sampler(
            config.search.sampler,
            config.search.seed,
            config.search.n_trials,
            constrained=config.space.max_trainable_pct is not None,
        ),
    )
    tracker = Tracker(config.mlflow_uri, config.experiment_name, config.output_dir / "mlartifacts")
    if resume:
        recovery = recover_study(study, tracker)
        console.print(
            f"Resuming '{study.study_name}': {len(recovery.requeued)} interrupted trial(s) "
            f"re-queued, {recovery.runs_killed} orphaned MLflow run(s) ended as KILLED."
        )
    else:
        stale = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
        if stale:
            console.print(
                f"[yellow]{stale} trial(s) of this study are RUNNING: another driver is at "
                f"work, or one was killed (then run `peftsearch resume {study_dir}`).[/yellow]"
            )
    progress = SearchProgress(total=config.search.n_trials, started=time.time())
    progress.done = finished_count(study)
    if progress.done and not resume:
        console.print(
            f"Continuing study '{study.study_name}': {progress.done} trials already finished."
        )
    parent = tracker.start_parent(study.study_name, config.model_dump(mode="json"))
    methods = config.method_options()
    early = config.search.early_stopping
    rungs = rung_steps(config.training.max_steps, early.eta, early.rungs) if early.enabled else ()
    board = (
        RungBoard(early.eta, early.min_trials, accuracy_noise(len(data.eval))) if rungs else None
    )

    with open_executor(config, data, board) as executor:
        if config.resources.use_ray:
            console.print(f"Ray: {executor.slots} worker(s) running trials in parallel.")
        budget, cost_model = None, None
        if config.budget.max_trials or config.budget.limits_time:
            with console.status("Timing a few training steps to estimate trial costs..."):
                budget, cost_model = build_budget(config, study, executor, info, len(data.eval))
            progress.budget = budget
            console.print(describe_budget(budget, cost_model))
        loop: SearchLoop

        def report(result: Any) -> None:
            progress.add(result)
            console.print(trial_line(result, progress.done, progress.total))

        def render() -> str:
            progress.running = loop.running
            return progress.line()

        loop = SearchLoop(
            study=study,
            executor=executor,
            sample=lambda trial: sample_choice(trial, methods, info),
            n_trials=config.search.n_trials,
            adapter_root=study_dir / TRIAL_ADAPTERS,
            count_params=lambda choice: count_trainable(meta, choice.peft_config),
            num_layers=info.num_layers,
            max_steps=config.training.max_steps,
            tracker=tracker,
            parent_run_id=parent,
            on_result=report,
            budget=budget,
            cost_model=cost_model,
            max_trainable_pct=config.space.max_trainable_pct,
            rungs=rungs,
        )
        try:
            with Live(get_renderable=render, console=console, refresh_per_second=2, transient=True):
                reason = loop.run()
        except BaseException:
            tracker.end(parent, "KILLED")
            raise
    progress.ended = time.time()
    console.print(progress.line())
    console.print(f"[bold]Search stopped[/bold] ({reason}).")
    extra = {"stop_reason": reason, "budget": budget.summary() if budget else None}
    return _finish(config, study, tracker, parent, time.perf_counter() - started, extra)


def _finish(
    config: Config, study: Any, tracker: Any, parent: str, wall: float, extra: dict[str, Any]
) -> SearchOutcome:
    from peftsearch.results import (
        REPORT_FILE,
        copy_front_adapters,
        pareto_numbers,
        trial_rows,
        write_report,
        write_tables,
    )

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
        "pruned": sum(r["status"] == "PRUNED" for r in rows),
        "infeasible": sum(r["status"] == "INFEASIBLE" for r in rows),
        "best_accuracy": max((r["accuracy"] for r in complete), default=None),
    }
    write_tables(config.study_dir, rows, front, extra={"summary": summary, **extra})
    copied = copy_front_adapters(config.study_dir, front)
    if config.tracking.log_adapters:
        for number, folder in copied.items():
            run_id = study.trials[number].user_attrs.get("mlflow_run_id")
            if run_id:
                tracker.log_artifacts(run_id, folder, "adapter")
    budget = {f"budget_{k}": v for k, v in (extra.get("budget") or {}).items()}
    tracker.log_parent_metrics(
        parent, {k: v for k, v in {**summary, **budget}.items() if isinstance(v, int | float)}
    )
    tracker.client.set_tag(parent, "stop_reason", extra["stop_reason"])
    write_report(config.study_dir, study.study_name, rows, front, {"summary": summary, **extra})
    for name in ("pareto.json", "pareto.csv", "trials.csv", REPORT_FILE):
        tracker.log_file(parent, config.study_dir / name)
    tracker.end(parent, "FINISHED")
    return SearchOutcome(study_dir=config.study_dir, rows=rows, front=front, wall_seconds=wall)
