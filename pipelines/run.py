"""The `run` and `resume` flows, as named phases: inputs -> study -> executor -> loop -> results.

Each phase is a function of what the previous ones built, so each can be tested alone;
``run_search`` only calls them in order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.pipelines.builders import (
    build_budget,
    build_data,
    build_early_stopping,
    build_initial_design,
    build_model_info,
    build_model_source,
    build_settings,
    build_space_fits,
    build_study,
    build_tracker,
    build_warm_start,
    describe_budget,
    write_study_files,
)

if TYPE_CHECKING:
    import optuna
    from rich.console import Console
    from torch import nn

    from peftsearch.config import Config
    from peftsearch.pipelines.api import StudyResult
    from peftsearch.results.progress import SearchProgress
    from peftsearch.search import SearchLoop, SideJob, TrialExecutor, TrialTracker
    from peftsearch.search.budget import Budget
    from peftsearch.search.cost_model import CostModel
    from peftsearch.search.early_stopping import RungBoard
    from peftsearch.search.ray_session import RaySession
    from peftsearch.spaces import ModelInfo
    from peftsearch.trials import PreparedData

__all__ = [
    "Inputs",
    "baseline_request",
    "describe_executor",
    "drive",
    "finish",
    "load_inputs",
    "make_loop",
    "measure_baseline",
    "open_executor",
    "queue_first",
    "reconcile",
    "run_search",
    "save_baseline",
    "schedule_baseline",
    "score_on_test",
    "start_budget",
    "start_progress",
    "start_ray",
]


@dataclass
class Inputs:
    """The tokenized data and the model's structure (its weightless meta model too)."""

    data: PreparedData
    info: ModelInfo
    meta: nn.Module
    metric: str  # the task's searched metric (evaluation.metric)


def load_inputs(config: Config, console: Console) -> Inputs:
    """Phase 1: read and tokenize the data, inspect the model, write the study's files."""
    config.study_dir.mkdir(parents=True, exist_ok=True)
    from peftsearch.trials.tasks import get_task

    with console.status("Loading and tokenizing data..."):
        data = build_data(config)
        info, meta = build_model_info(config, data.label_names)
    what = get_task(data.task).describe_data(data, config.metric)
    console.print(
        f"Data: {data.stats['train_rows']} train / {data.stats['eval_rows']} eval rows, "
        f"{what}. "
        f"Model: {info.model_type}, {info.num_layers} layers, {info.total_params:,} parameters."
    )
    write_study_files(config, data)
    return Inputs(data, info, meta, config.metric)


def reconcile(
    study: optuna.Study, tracker: TrialTracker, console: Console, *, resume: bool, study_dir: Path
) -> None:
    """Phase 2: after a killed driver, put the study back in order (``resume``); else
    warn when trials are still RUNNING."""
    from peftsearch.search import read_records
    from peftsearch.search.recovery import recover_study

    if resume:
        recovery = recover_study(study, tracker)
        console.print(
            f"Resuming '{study.study_name}': {len(recovery.requeued)} interrupted trial(s) "
            f"re-queued, {recovery.runs_killed} orphaned MLflow run(s) ended as KILLED, "
            f"{recovery.runs_completed} closed with the result their trial had stored."
        )
        return
    stale = sum(r.state == "RUNNING" for r in read_records(study))
    if stale:
        console.print(
            f"[yellow]{stale} trial(s) of this study are RUNNING: another driver is at "
            f"work, or one was killed (then run `peftsearch resume {study_dir}`).[/yellow]"
        )


def queue_first(config: Config, study: optuna.Study, info: ModelInfo, console: Console) -> None:
    """Phase 2b: queue the fronts of ``search.warm_start`` studies to run first (a config
    this space cannot express, a rank or target set it does not offer, is left out), and
    say what the initial design will try before the sampler (the loop queues it)."""
    from peftsearch.search.warm_start import enqueue_warm_start, untried_design
    from peftsearch.spaces import initial_design

    fits = build_space_fits(config, info)
    if config.search.warm_start:
        configs = build_warm_start(config)
        queued = enqueue_warm_start(study, configs, config.space.methods, fits)
        console.print(
            f"Warm start: {queued} Pareto config(s) of {len(config.search.warm_start)} "
            f"earlier stud(ies) queued first ({len(configs) - queued} already tried or not "
            "in the space)."
        )
    if config.search.uses_initial_design:
        design = initial_design(config.method_options(), info)
        left = untried_design(study, design, config.space.methods, fits)
        if left:
            console.print(
                f"Initial design: {len(left)} config(s) first, the smallest adapter of each "
                "method and target set at the top of its learning-rate range; then the "
                "sampler (search.initial_design: false samples from the first trial)."
            )


def start_progress(study: optuna.Study, total: int, console: Console) -> SearchProgress:
    """Phase 3: progress over the whole study, so a continued study shows its bests."""
    from peftsearch.results.progress import progress_from_study

    progress = progress_from_study(study, total)
    progress.started, progress.ended = time.time(), None
    if progress.done:
        console.print(
            f"Continuing study '{study.study_name}': {progress.done} trials already finished."
        )
    return progress


@contextlib.contextmanager
def open_executor(
    config: Config,
    data: PreparedData,
    board: RungBoard | None,
    session: RaySession | None = None,
) -> Iterator[TrialExecutor]:
    """Phase 4: Ray workers by default; in-process when ``resources.use_ray`` is false.
    ``session``: Ray, started early (``start_ray``); this phase closes it."""
    from peftsearch.search import InProcessExecutor

    resources = config.resources
    if not resources.use_ray:
        import os

        from peftsearch.trials import TrialRunner, detect_device
        from peftsearch.trials.cost import device_share

        device, device_name = detect_device(config.training.device)
        runner = TrialRunner(
            build_model_source(config, data),
            data,
            build_settings(config),
            device=device,
            device_name=device_name,
            usd_per_device_hour=config.cost.usd_per_device_hour,
            num_threads=config.training.num_threads,
            device_share=device_share(
                device,
                cpus=config.training.num_threads or os.cpu_count() or 1,
                gpus=1.0,
                vcpus_per_cpu_price=config.cost.vcpus_per_cpu_price,
            ),
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
    from peftsearch.trials.cost import device_share

    threads = config.training.num_threads or max(1, int(resources.cpus_per_trial))
    setup = WorkerSetup(
        source=build_model_source(config, data),
        settings=build_settings(config),
        device=config.training.device,
        usd_per_device_hour=config.cost.usd_per_device_hour,
        num_threads=threads,
        device_share=device_share(
            "cuda" if gpus > 0 else "cpu",
            cpus=resources.cpus_per_trial,
            gpus=gpus,
            vcpus_per_cpu_price=config.cost.vcpus_per_cpu_price,
        ),
    )
    with ray_session(resources.ray_address, session):
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


def describe_executor(executor: TrialExecutor) -> str | None:
    """The start-up line for parallel workers; None for the in-process executor."""
    from peftsearch.search.ray_executor import RayExecutor

    if not isinstance(executor, RayExecutor):
        return None
    return (
        f"Ray: {executor.slots} worker(s) on {executor.nodes} node(s) running trials in parallel."
    )


def start_budget(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    inputs: Inputs,
    console: Console,
) -> tuple[Budget | None, CostModel | None]:
    """Phase 5: with any budget limit, calibrate the cost model and open the budget."""
    if not (config.budget.max_trials or config.budget.limits_time):
        return None, None
    with console.status("Timing a few training steps to estimate trial costs..."):
        budget, cost_model = build_budget(
            config, study, executor, inputs.info, len(inputs.data.eval)
        )
    console.print(describe_budget(budget, cost_model))
    return budget, cost_model


def rungs_for_run(
    config: Config,
    study: optuna.Study,
    rungs: tuple[int, ...],
    budget: Budget | None,
    cost_model: CostModel | None,
    slots: int,
    console: Console,
) -> tuple[int, ...]:
    """Phase 5c: the rungs, or none when this run has too few trials for early stopping
    to pay for its rung evaluations (``pays_off``); says so when it turns it off."""
    from peftsearch.search import finished_count
    from peftsearch.search.early_stopping import pays_off

    if not rungs:
        return rungs
    trials, limit = float(config.search.n_trials - finished_count(study)), "search.n_trials"
    if budget is not None and cost_model is not None:
        reach = budget.trials_in_reach(cost_model.typical(config.training.max_steps), slots)
        if reach < trials:
            trials, limit = reach, "the budget"
    early = config.search.early_stopping
    # under one trial: nothing will run, and the loop's stop line says why
    if trials < 1 or pays_off(trials, early.eta, early.min_trials):
        return rungs
    console.print(
        f"Early stopping is off for this run: {limit} allows about {trials:.0f} trials, and "
        f"judging trials at a rung pays off from {early.eta * early.min_trials} "
        "(search.early_stopping.eta x min_trials)."
    )
    return ()


def run_charged(
    study: optuna.Study, executor: TrialExecutor, request: Any, budget: Budget | None
) -> Any:
    """Run one piece of work outside the trials (baseline, test scoring) and charge its
    device time to the budget and to the study, so later runs count it too."""
    from peftsearch.search.records import add_overhead

    executor.submit(request)
    results: list[Any] = []
    while not results:
        results = executor.wait()
    add_overhead(study, results[0].device_seconds)
    if budget is not None:
        budget.charge(results[0].device_seconds)
    return results[0]


def baseline_request(
    study: optuna.Study, budget: Budget | None, cost_model: CostModel | None
) -> SideJob | None:
    """Phase 5b: the base model with no adapter, scored once per study on a worker
    (for a classifier its new head untrained, for a causal LM zero-shot), with its cost
    estimate; None when the study has its baseline already or the budget cannot afford
    it."""
    from peftsearch.search import SideJob
    from peftsearch.search.records import baseline_of
    from peftsearch.trials import TrialRequest

    if baseline_of(study):
        return None
    estimate = cost_model.setup_seconds + cost_model.eval_seconds if cost_model else 0.0
    if budget is not None and not budget.fits(estimate):
        return None
    return SideJob(TrialRequest(-2, "baseline", {}, 0.0, None, baseline=True), estimate)


def save_baseline(study: optuna.Study, inputs: Inputs, result: Any, console: Console) -> None:
    """What the model scores with no adapter at all: ``result`` (the base model, or
    None when it did not run) and, for a classifier, always answering the most frequent
    training label."""
    from peftsearch.search.records import baseline_of
    from peftsearch.search.records import save_baseline as store
    from peftsearch.trials.tasks import get_task, metric_label

    if baseline_of(study):
        return
    data = inputs.data
    task = get_task(data.task)
    free = {"trainable_params": 0, "cost_usd": 0.0, "device_seconds": 0.0}
    baseline: dict[str, Any] = {
        key: {**entry, **free} for key, entry in task.baselines(data, inputs.metric).items()
    }
    if result is not None and result.status == "COMPLETE":
        baseline["base_model"] = {
            "method": task.base_model_baseline,
            "accuracy": result.accuracy,
            **{k: v for k, v in result.metrics.items() if k != "example"},
            "trainable_params": 0,
            "cost_usd": result.cost_usd,
            "device_seconds": result.device_seconds,
            "eval_rows": result.eval_rows,
        }
    if not baseline:
        return
    store(study, baseline)
    best = max(baseline.values(), key=lambda b: b["accuracy"])
    words = metric_label(inputs.metric)
    console.print(f"Without an adapter: {words} {best['accuracy']:.3f} ({best['method']}).")


def measure_baseline(
    study: optuna.Study,
    executor: TrialExecutor,
    inputs: Inputs,
    budget: Budget | None,
    cost_model: CostModel | None,
    console: Console,
) -> None:
    """The baseline, measured now (``baseline_request``, ``save_baseline``)."""
    job = baseline_request(study, budget, cost_model)
    result = run_charged(study, executor, job.request, budget) if job is not None else None
    save_baseline(study, inputs, result, console)


def schedule_baseline(
    loop: SearchLoop, study: optuna.Study, inputs: Inputs, console: Console
) -> None:
    """The baseline as a side job of the loop (``SideJob``). Without a budget it waits for
    a slot the last trials leave idle: run first, it would hold a worker back while it
    loads the model (start-up overhead, benchmarks/overhead.py). With a budget it runs
    beside the first trial, its estimate held so that the trials cannot spend it."""
    from peftsearch.search.records import add_overhead

    job = baseline_request(study, loop.budget, loop.cost_model)
    if job is None:
        return

    def done(result: Any) -> None:
        add_overhead(study, result.device_seconds)  # the loop spent it from the budget
        save_baseline(study, inputs, result, console)

    loop.side_jobs.append(job)
    loop.on_side_result = done


def make_loop(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    inputs: Inputs,
    tracker: TrialTracker,
    parent_run_id: str,
    *,
    budget: Budget | None,
    cost_model: CostModel | None,
    rungs: tuple[int, ...],
) -> SearchLoop:
    """Phase 6: the ask/tell loop over the space, the executor and the budget."""
    from peftsearch.results import StudyFolder
    from peftsearch.search import SearchLoop, objectives_of
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import count_trainable

    methods = config.method_options()
    info, meta = inputs.info, inputs.meta
    return SearchLoop(
        study=study,
        executor=executor,
        sample=lambda trial: sample_choice(trial, methods, info),
        n_trials=config.search.n_trials,
        adapter_root=StudyFolder(config.study_dir).trial_adapters,
        count_params=lambda choice: count_trainable(meta, choice.peft_config),
        num_layers=info.num_layers,
        max_steps=config.training.max_steps,
        tracker=tracker,
        parent_run_id=parent_run_id,
        budget=budget,
        cost_model=cost_model,
        max_trainable_pct=config.space.max_trainable_pct,
        rungs=rungs,
        cache_frozen_layers=config.training.cache_frozen_layers,
        before_ask=build_initial_design(config, info),
        objectives=objectives_of(config.search.objectives),
    )


def drive(loop: SearchLoop, progress: SearchProgress, console: Console) -> str:
    """Phase 7: run the loop under a live progress line; one line per finished trial."""
    from rich.live import Live

    from peftsearch.results import trial_line

    def report(result: Any) -> None:
        progress.add_result(result)
        console.print(trial_line(result, progress.done, progress.total))

    def render() -> str:
        progress.running = loop.running
        return progress.line()

    loop.on_result = report
    with Live(get_renderable=render, console=console, refresh_per_second=2, transient=True):
        reason = loop.run()
    progress.ended = time.time()
    console.print(progress.line())
    console.print(f"[bold]Search stopped[/bold] ({reason}).")
    return reason


def score_on_test(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    inputs: Inputs,
    budget: Budget | None,
    cost_model: CostModel | None,
    console: Console,
) -> None:
    """Phase 7b: with ``data.test``, score each Pareto trial once on the test split.

    It runs after the search, so the test set never guides a choice. Each scoring is
    device time: it is charged, and skipped when the budget has no room left for it.
    """
    from peftsearch.results import StudyFolder, pareto_numbers
    from peftsearch.search import read_records
    from peftsearch.search.records import save_test_score
    from peftsearch.trials import TrialRequest
    from peftsearch.trials.file_transfer import read_folder

    test = inputs.data.test
    if test is None:
        return
    scored = {r.number for r in read_records(study) if r.test}
    todo = [n for n in pareto_numbers(study) if n not in scored]
    skipped = 0
    for number in todo:
        folder = StudyFolder(config.study_dir)
        if not folder.has_adapter(number):
            continue
        estimate = 0.0
        if cost_model is not None:
            estimate = cost_model.eval_seconds * len(test) / max(1, len(inputs.data.eval))
        if budget is not None and not budget.fits(estimate):
            skipped += 1
            continue
        # the adapter travels to the worker: its disk need not hold the study folder
        request = TrialRequest(
            number, "test", {}, 0.0, None, score_adapter=read_folder(folder.trial_adapter(number))
        )
        result = run_charged(study, executor, request, budget)
        if result.status == "COMPLETE":
            save_test_score(study, number, result)
        else:
            console.print(f"[yellow]Test scoring of trial {number} failed: {result.error}")
    note = f"; {skipped} skipped, no budget left for them" if skipped else ""
    console.print(f"Scored {len(todo) - skipped} Pareto trial(s) on data.test{note}.")


def finish(
    config: Config,
    study: optuna.Study,
    tracker: TrialTracker,
    parent_run_id: str,
    wall: float,
    extra: dict[str, Any],
) -> StudyResult:
    """Phase 8: tables, front adapters, report; all of it logged to the parent run."""
    from peftsearch.pipelines.api import StudyResult
    from peftsearch.results import StudyFolder, pareto_numbers, report_page, summarize, trial_rows
    from peftsearch.search import read_records
    from peftsearch.search.records import baseline_of

    folder = StudyFolder(config.study_dir)
    rows = trial_rows(study)
    front = pareto_numbers(study)
    summary = {**summarize(study.study_name, rows), "baseline": baseline_of(study)}
    extra = {
        "metric": config.metric,
        "objectives": list(config.search.objectives),
        "summary": summary,
        "wall_seconds": wall,
        **extra,
    }
    folder.write_tables(rows, front, extra)
    copied = folder.copy_front_adapters(front)
    if config.tracking.log_adapters:
        run_ids = {r.number: r.run_id for r in read_records(study)}
        for number, adapter in copied.items():
            if run_ids.get(number):
                tracker.log_artifacts(str(run_ids[number]), adapter, "adapter")
    folder.write_report(report_page(study.study_name, rows, front, extra))
    budget = {f"budget_{k}": v for k, v in (extra.get("budget") or {}).items()}
    metrics = {k: v for k, v in {**summary, **budget}.items() if isinstance(v, int | float)}
    tags = {"stop_reason": extra["stop_reason"]}
    tracker.finish_parent(parent_run_id, metrics, tags, folder.result_files)
    return StudyResult(config.study_dir, config, rows, front, extra)


def start_ray(config: Config) -> RaySession | None:
    """Phase 0: a local Ray takes seconds to start; it comes up while the driver reads
    the data and opens the study (``open_executor`` waits for it)."""
    if not config.resources.use_ray:
        return None
    from peftsearch.search.ray_session import RaySession

    return RaySession(config.resources.ray_address).start()


def run_search(config: Config, console: Console, *, resume: bool = False) -> StudyResult:
    """Run (or continue, or resume) the search a config describes."""
    started = time.perf_counter()
    session = start_ray(config)
    try:
        return _search(config, console, resume, started, session)
    finally:
        if session is not None:
            session.close()  # a no-op when open_executor closed it


def _search(
    config: Config,
    console: Console,
    resume: bool,
    started: float,
    session: RaySession | None,
) -> StudyResult:
    inputs = load_inputs(config, console)
    study = build_study(config)
    tracker = build_tracker(config)
    reconcile(study, tracker, console, resume=resume, study_dir=config.study_dir)
    queue_first(config, study, inputs.info, console)
    progress = start_progress(study, config.search.n_trials, console)
    parent = tracker.start_parent(study.study_name, config.model_dump(mode="json"))
    rungs, board = build_early_stopping(config, len(inputs.data.eval))
    try:
        with open_executor(config, inputs.data, board, session) as executor:
            workers = describe_executor(executor)
            if workers:
                console.print(workers)
            budget, cost_model = start_budget(config, study, executor, inputs, console)
            progress.budget = budget
            rungs = rungs_for_run(config, study, rungs, budget, cost_model, executor.slots, console)
            loop = make_loop(
                config,
                study,
                executor,
                inputs,
                tracker,
                parent,
                budget=budget,
                cost_model=cost_model,
                rungs=rungs,
            )
            schedule_baseline(loop, study, inputs, console)
            reason = drive(loop, progress, console)
            # not run yet (the loop ended before a slot freed up): now
            measure_baseline(study, executor, inputs, budget, cost_model, console)
            score_on_test(config, study, executor, inputs, budget, cost_model, console)
    except BaseException:
        tracker.end(parent, "KILLED")
        raise
    extra = {"stop_reason": reason, "budget": budget.summary() if budget else None}
    return finish(config, study, tracker, parent, time.perf_counter() - started, extra)
