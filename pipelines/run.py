"""The `run` and `resume` flows, as named phases: inputs -> study -> executor -> loop -> results.

Each phase is a function of what the previous ones built, so each can be tested alone;
``run_search`` only calls them in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.pipelines.builders import (
    build_budget,
    build_data,
    build_design_configs,
    build_early_stopping,
    build_executor,
    build_loop,
    build_memory_model,
    build_model_info,
    build_rungs,
    build_space_fits,
    build_study,
    build_tracker,
    describe_budget,
)
from peftsearch.pipelines.studies import build_warm_start, write_study_files
from peftsearch.search.start_up import freeze_start_up, pause_collection, release_start_up
from peftsearch.search.test_scoring import planned_test_seconds

if TYPE_CHECKING:
    from concurrent.futures import Future

    import optuna
    from rich.console import Console
    from torch import nn

    from peftsearch.config import Config
    from peftsearch.pipelines.api import StudyResult
    from peftsearch.results.progress import SearchProgress
    from peftsearch.search import SearchLoop, TrialExecutor, TrialTracker
    from peftsearch.search.budget import Budget
    from peftsearch.search.cost_model import CostModel
    from peftsearch.search.memory_model import MemoryModel
    from peftsearch.search.ray_session import RaySession
    from peftsearch.search.start_up import CollectorState
    from peftsearch.spaces import ModelInfo
    from peftsearch.trials import PreparedData

__all__ = [
    "Inputs",
    "confirm",
    "drive",
    "explain_best",
    "finish",
    "load_inputs",
    "queue_first",
    "reconcile",
    "run_search",
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
    from peftsearch.search.first_configs import enqueue_warm_start, untried_design

    fits = build_space_fits(config, info)
    if config.search.warm_start:
        configs = build_warm_start(config)
        queued = enqueue_warm_start(study, configs, list(config.method_options()), fits)
        console.print(
            f"Warm start: {queued} Pareto config(s) of {len(config.search.warm_start)} "
            f"earlier stud(ies) queued first ({len(configs) - queued} already tried or not "
            "in the space)."
        )
    if config.search.uses_initial_design:
        design = build_design_configs(config, info)
        left = untried_design(study, design, list(config.method_options()), fits)
        if left:
            console.print(
                f"Initial design: {len(left)} config(s) first, a small adapter of each "
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
    console.print(describe_budget(budget, cost_model, config.search.confirm.runs))
    return budget, cost_model


def start_memory_model(
    config: Config, inputs: Inputs, cost_model: CostModel | None
) -> tuple[MemoryModel, float | None]:
    """Phase 5a: the memory model (fitted to the calibration run when there was one)
    and the memory of the device trials run on."""
    calibration = cost_model.calibration if cost_model is not None else None
    return build_memory_model(config, inputs.data, inputs.meta, calibration)


def schedule_baseline(
    loop: SearchLoop, study: optuna.Study, inputs: Inputs, console: Console, base: str = "none"
) -> None:
    """Phase 5b: the no-adapter baseline as a side job of the loop (search/baseline.py),
    on the ``base`` the search trains on first (model.quantization)."""
    from peftsearch.results import baseline_line
    from peftsearch.search.baseline import baseline_side_job

    def say(baseline: dict[str, Any]) -> None:
        console.print(baseline_line(baseline, inputs.metric))

    job = baseline_side_job(
        study, inputs.data, inputs.metric, loop.cost_model, say, quantization=base
    )
    if job is not None:
        loop.side_jobs.append(job)


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


def explain_best(study: optuna.Study, console: Console) -> None:
    """Phase 7c: the most accurate trial measured, and why the front leaves it out if
    it does (results.front.best_trial_line)."""
    from peftsearch.results import trial_rows
    from peftsearch.results.front import best_trial_line
    from peftsearch.search.objectives import study_objectives
    from peftsearch.search.records import baseline_of

    line = best_trial_line(trial_rows(study), study_objectives(study), baseline_of(study))
    if line:
        console.print(line, markup=False)


def confirm(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    data: PreparedData,
    budget: Budget | None,
    cost_model: CostModel | None,
    console: Console,
) -> None:
    """Phase 7a: re-run the front's most accurate configs with new training seeds
    (search.confirm, search/confirm.py), inside what the budget kept back for them."""
    from peftsearch.results import pareto_numbers
    from peftsearch.search.confirm import confirm_front, confirm_seeds

    plan = config.search.confirm
    if not plan.runs:
        return
    with console.status("Confirming the front with new training seeds..."):
        outcome = confirm_front(
            study,
            executor,
            lambda: pareto_numbers(study),
            top=plan.top,
            seeds=confirm_seeds(config.search.seed, plan.seeds),
            budget=budget,
            min_seconds=cost_model.floor() if cost_model is not None else 0.0,
            keep=planned_test_seconds(cost_model, data),
        )
    console.print(outcome.line())


def score_on_test(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    inputs: Inputs,
    budget: Budget | None,
    cost_model: CostModel | None,
    console: Console,
) -> None:
    """Phase 7b: with ``data.test``, score each Pareto trial once on the test split
    (search/test_scoring.py)."""
    from peftsearch.results import StudyFolder, pareto_numbers
    from peftsearch.search.test_scoring import score_on_test as score
    from peftsearch.search.test_scoring import test_scoring_seconds
    from peftsearch.trials.file_transfer import read_folder

    test = inputs.data.test
    if test is None:
        return
    folder = StudyFolder(config.study_dir)
    estimate = 0.0
    if cost_model is not None:
        estimate = test_scoring_seconds(cost_model.eval_seconds, len(test), len(inputs.data.eval))

    def adapter_of(number: int) -> dict[str, bytes] | None:
        return read_folder(folder.trial_adapter(number)) if folder.has_adapter(number) else None

    if budget is not None:  # what the search kept back for this, it may now spend
        budget.keep_back(0.0, 0.0)
    outcome = score(study, executor, pareto_numbers(study), adapter_of, budget, estimate)
    for number, error in outcome.failed.items():
        console.print(f"[yellow]Test scoring of trial {number} failed: {error}")
    note = f"; {outcome.skipped} skipped, no budget left for them" if outcome.skipped else ""
    console.print(f"Scored {outcome.scored} Pareto trial(s) on data.test{note}.")


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
    from peftsearch.results import StudyFolder, summarize, trial_rows
    from peftsearch.results.front import best_trial_line, verdict
    from peftsearch.search import read_records
    from peftsearch.search.objectives import study_objectives
    from peftsearch.search.records import baseline_of, confirmations_of

    folder = StudyFolder(config.study_dir)
    rows = trial_rows(study)
    baseline = baseline_of(study)
    judged = verdict(rows, study_objectives(study), baseline)
    front = judged.front
    reruns = [r for runs in confirmations_of(study).values() for r in runs]
    summary = {
        **summarize(study.study_name, rows),
        "baseline": baseline,
        # trials no better than the model with no adapter, beyond the noise
        "below_baseline": sorted(judged.beaten),
        "most_accurate": best_trial_line(rows, study_objectives(study), baseline, judged),
        "confirmation_runs": len(reruns),
        "confirmation_device_seconds": sum(r["device_seconds"] or 0.0 for r in reruns),
    }
    extra = {
        "metric": config.metric,
        "objectives": list(config.search.objectives),
        "summary": summary,
        "wall_seconds": wall,
        **extra,
    }
    copied = folder.write_results(study.study_name, rows, front, extra)
    if config.tracking.log_adapters:
        run_ids = {r.number: r.run_id for r in read_records(study)}
        for number, adapter in copied.items():
            if run_ids.get(number):
                tracker.log_artifacts(str(run_ids[number]), adapter, "adapter")
    budget = {f"budget_{k}": v for k, v in (extra.get("budget") or {}).items()}
    metrics = {k: v for k, v in {**summary, **budget}.items() if isinstance(v, int | float)}
    tags = {"stop_reason": extra["stop_reason"]}
    tracker.finish_parent(parent_run_id, metrics, tags, folder.result_files)
    return StudyResult(config.study_dir, config, rows, front, extra)


def start_ray(config: Config) -> RaySession | None:
    """Phase 0: a local Ray takes seconds to start; its trial workers import the
    training stack and load the base model while the driver reads the data and opens
    the study (``run_search`` waits for Ray itself before those)."""
    if not config.resources.use_ray:
        return None
    from peftsearch.pipelines.builders import build_worker_pool
    from peftsearch.search.ray_session import RaySession

    return RaySession(config.resources.ray_address).start(build_worker_pool(config))


def run_search(config: Config, console: Console, *, resume: bool = False) -> StudyResult:
    """Run (or continue, or resume) the search a config describes."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    session = start_ray(config)
    # from here to the first trial, collection pauses (search/start_up.py)
    collector = pause_collection()
    try:
        if session is not None:
            # Ray first, alone: the driver's imports below hold the GIL, and beside
            # them Ray's start took 6-9 s instead of 3-4 (the workers' imports, the
            # longest path to the first trial, wait for it)
            session.wait()
        # MLflow opens its store (a new SQLite one creates its tables: seconds) while
        # the driver reads and tokenizes the data
        with ThreadPoolExecutor(1, thread_name_prefix="mlflow-open") as opening:
            tracker = opening.submit(build_tracker, config)
            return _search(config, console, resume, started, session, tracker, collector)
    finally:
        if session is not None:
            session.close()  # a no-op when build_executor closed it
        release_start_up(collector)


def _search(  # the phases in order; each is tested alone
    config: Config,
    console: Console,
    resume: bool,
    started: float,
    session: RaySession | None,
    opening: Future[TrialTracker],
    collector: CollectorState,
) -> StudyResult:
    inputs = load_inputs(config, console)
    study = build_study(config)
    tracker = opening.result()
    reconcile(study, tracker, console, resume=resume, study_dir=config.study_dir)
    queue_first(config, study, inputs.info, console)
    progress = start_progress(study, config.search.n_trials, console)
    parent = tracker.start_parent(study.study_name, config.model_dump(mode="json"))
    rungs, board = build_early_stopping(config, len(inputs.data.eval))
    try:
        with build_executor(config, inputs.data, board, session) as executor:
            if executor.describe():
                console.print(executor.describe())
            budget, cost_model = start_budget(config, study, executor, inputs, console)
            progress.budget = budget
            memory_model, device_memory = start_memory_model(config, inputs, cost_model)
            rungs, note = build_rungs(config, study, rungs, budget, cost_model, executor.slots)
            if note:
                console.print(note)
            loop = build_loop(
                config,
                study,
                executor,
                inputs.info,
                inputs.meta,
                tracker,
                parent,
                budget=budget,
                cost_model=cost_model,
                rungs=rungs,
                memory_model=memory_model,
                device_memory_mb=device_memory,
            )
            loop.kept_for_test = planned_test_seconds(cost_model, inputs.data)
            schedule_baseline(loop, study, inputs, console, config.model.quantizations[0])
            freeze_start_up(collector)
            reason = drive(loop, progress, console)
            confirm(config, study, executor, inputs.data, budget, cost_model, console)
            score_on_test(config, study, executor, inputs, budget, cost_model, console)
            explain_best(study, console)
    except BaseException:
        tracker.end(parent, "KILLED")
        raise
    extra = {"stop_reason": reason, "budget": budget.summary() if budget else None}
    return finish(config, study, tracker, parent, time.perf_counter() - started, extra)
