"""Builders: turn the config into the flat arguments each component takes.

Core classes never see the whole config (torchtune's rule); each builder reads the
sections it needs and calls one constructor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from peftsearch.config import Config
from peftsearch.errors import UserError

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from peftsearch.search import SearchLoop, TrialExecutor, TrialTracker
    from peftsearch.search.budget import Budget
    from peftsearch.search.cost_model import CostModel
    from peftsearch.search.early_stopping import RungBoard
    from peftsearch.search.memory_model import MemoryModel
    from peftsearch.search.ray_session import RaySession
    from peftsearch.spaces import ModelInfo
    from peftsearch.trials import (
        BaseModelSource,
        Checkpoint,
        PreparedData,
        TrainSettings,
        TrialResult,
        WorkerSetup,
    )

__all__ = [
    "build_budget",
    "build_checkpoint",
    "build_data",
    "build_early_stopping",
    "build_executor",
    "build_initial_design",
    "build_loop",
    "build_memory_model",
    "build_model_info",
    "build_model_source",
    "build_rungs",
    "build_settings",
    "build_space_fits",
    "build_study",
    "build_tracker",
    "build_worker_setup",
    "describe_budget",
]


def build_settings(config: Config) -> TrainSettings:
    from peftsearch.trials import TrainSettings

    t = config.training
    return TrainSettings(
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        seed=config.search.seed,
        precision=t.precision,
        gradient_checkpointing=t.gradient_checkpointing,
        metric=config.metric,
        rung_metric=config.search.early_stopping.rung_metric,
        max_new_tokens=config.evaluation.max_new_tokens,
        cache_frozen_layers=t.cache_frozen_layers,
        cache_max_mb=t.cache_max_mb,
        forgetting=config.evaluation.forgetting,
    )


def build_data(config: Config) -> PreparedData:
    """The task reads, splits and tokenizes the data (trials/tasks/)."""
    from peftsearch.trials import load_tokenizer
    from peftsearch.trials.model import quiet_transformers
    from peftsearch.trials.tasks import get_task

    tokenizer = load_tokenizer(build_checkpoint(config))
    with quiet_transformers():  # datasets' progress bars and notices, for this call only
        data = get_task(config.model.task).prepare(
            config.data, seed=config.search.seed, tokenizer=tokenizer
        )
    reference = config.evaluation.reference_data
    if reference is not None and data.task == "causal-lm" and config.evaluation.forgetting:
        from peftsearch.trials.data import read_reference

        data.reference = read_reference(reference, tokenizer, config.data.max_length)
    return data


def build_model_info(config: Config, label_names: list[str]) -> tuple[ModelInfo, nn.Module]:
    """Model structure (and its weightless meta model), after checking every listed
    method can run on it."""
    from peftsearch.spaces import get_method
    from peftsearch.trials import inspect_base_model, meta_model

    task = config.model.task
    model = meta_model(build_checkpoint(config), label_names=label_names, task=task)
    info = inspect_base_model(model, task)
    for name in config.space.methods:
        reason = get_method(name).supports(info)
        if reason:
            raise UserError(
                f"{name} cannot run on this model: {reason}",
                where="space.methods",
                hint=f"remove {name}",
            )
    return info, model


def build_model_source(config: Config, data: PreparedData) -> BaseModelSource:
    from peftsearch.trials import BaseModelSource

    return BaseModelSource(
        build_checkpoint(config),
        num_labels=data.num_labels,
        label_names=data.label_names,
        pad_token_id=data.pad_token_id,
        seed=config.search.seed,
        task=data.task,
    )


def build_worker_setup(config: Config, data: PreparedData) -> tuple[WorkerSetup, float]:
    """What every worker builds its runner from, and the GPUs each trial takes: with
    Ray, ``resources.cpus_per_trial`` threads and share of a priced device; in process,
    every core (``training.num_threads``) and the whole device."""
    import os

    import torch

    from peftsearch.trials import WorkerSetup
    from peftsearch.trials.cost import device_share

    resources = config.resources
    cuda = torch.cuda.is_available() and config.training.device != "cpu"
    gpus = _gpus_per_trial(config)
    threads: int | None
    if resources.use_ray:
        threads = _ray_threads(config)
        kind, cpus, share_of_gpu = ("cuda" if gpus > 0 else "cpu"), resources.cpus_per_trial, gpus
    else:
        threads = config.training.num_threads
        kind, cpus, share_of_gpu = ("cuda" if cuda else "cpu"), threads or os.cpu_count() or 1, 1.0
    share = device_share(
        kind, cpus=cpus, gpus=share_of_gpu, vcpus_per_cpu_price=config.cost.vcpus_per_cpu_price
    )
    limit = resources.memory_per_trial_gb
    setup = WorkerSetup(
        source=build_model_source(config, data),
        settings=build_settings(config),
        device=config.training.device,
        usd_per_device_hour=config.cost.usd_per_device_hour,
        num_threads=threads,
        device_share=share,
        memory_limit_mb=limit * 1024 if limit is not None else None,
        preload=config.model.quantizations[0] if resources.use_ray else None,
    )
    return setup, gpus


def build_worker_pool(config: Config) -> Callable[[], list[Any]]:
    """Start the Ray trial workers (``start_workers``) with the resources the executor
    will ask for: ``start_ray`` runs it as soon as Ray is up, so the workers import the
    training stack while the driver reads the data."""

    def start() -> list[Any]:
        from peftsearch.search.ray_executor import start_workers

        resources = config.resources
        return start_workers(
            resources.cpus_per_trial,
            _gpus_per_trial(config),
            resources.max_concurrent_trials,
            _ray_threads(config),
        )

    return start


def _ray_threads(config: Config) -> int:
    """A Ray trial's torch threads: ``training.num_threads``, else its reserved CPUs."""
    return config.training.num_threads or max(1, int(config.resources.cpus_per_trial))


@contextlib.contextmanager
def build_executor(
    config: Config,
    data: PreparedData,
    board: RungBoard | None,
    session: RaySession | None = None,
) -> Iterator[TrialExecutor]:
    """Ray workers by default; in-process when ``resources.use_ray`` is false.
    ``session``: Ray, started early (pipelines/run.py ``start_ray``); closed here."""
    from peftsearch.search import InProcessExecutor

    if not config.resources.use_ray:
        setup, _ = build_worker_setup(config, data)
        executor = InProcessExecutor(setup.runner(data), board)
        try:
            yield executor
        finally:
            executor.close()
        return

    from peftsearch.search.ray_executor import RayExecutor
    from peftsearch.search.ray_session import ray_session

    resources = config.resources
    with ray_session(resources.ray_address, session):
        setup, gpus = build_worker_setup(config, data)  # with Ray up: its GPUs count
        ray_executor = RayExecutor(
            setup,
            data,
            cpus_per_trial=resources.cpus_per_trial,
            gpus_per_trial=gpus,
            max_concurrent=resources.max_concurrent_trials,
            board=board,
            workers=session.workers if session is not None else None,
        )
        try:
            yield ray_executor
        finally:
            ray_executor.close()


def build_loop(
    config: Config,
    study: optuna.Study,
    executor: TrialExecutor,
    info: ModelInfo,
    meta: nn.Module,
    tracker: TrialTracker,
    parent_run_id: str,
    *,
    budget: Budget | None,
    cost_model: CostModel | None,
    rungs: tuple[int, ...],
    memory_model: MemoryModel | None = None,
    device_memory_mb: float | None = None,
) -> SearchLoop:
    """The ask/tell loop over the space, the executor and the budget; ``meta`` (the
    weightless model) counts each config's trainable parameters before it trains. The
    memory limit is ``resources.memory_per_trial_gb``, else the device's memory
    (``device_memory_mb``, as a worker measured it) shared as the trials share it."""
    from peftsearch.results import StudyFolder
    from peftsearch.search import SearchLoop, objectives_of
    from peftsearch.search.memory_model import default_memory_limit_mb

    gb = config.resources.memory_per_trial_gb
    memory_limit = gb * 1024 if gb is not None else None
    gpus_per_trial = _gpus_per_trial(config)
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import count_trainable

    methods = config.method_options()
    quantizations = tuple(config.model.quantizations)
    limit = memory_limit
    if limit is None and memory_model is not None:
        limit = default_memory_limit_mb(
            device_memory_mb, gpu_share=gpus_per_trial, concurrent=executor.slots
        )
    return SearchLoop(
        study=study,
        executor=executor,
        sample=lambda trial: sample_choice(trial, methods, info, quantizations),
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
        memory_model=memory_model,
        memory_limit_mb=limit,
        memory_limit_configured=memory_limit is not None,
        gradient_checkpointing=config.training.gradient_checkpointing,
        batch_size=config.training.batch_size,
        gpus_per_trial=gpus_per_trial,
        confirm_runs=config.search.confirm.runs,
    )


def _gpus_per_trial(config: Config) -> float:
    """The share of a GPU each trial takes: ``resources.gpus_per_trial``, else the whole
    GPU when the trials' machines have one (and trials may use it), else none. With Ray
    up, that is what the cluster reports (the driver may have no GPU of its own, and
    asking Ray spares the Ray start-up thread importing torch); else this machine."""
    gpus = config.resources.gpus_per_trial
    if gpus is not None:
        return gpus
    if config.training.device == "cpu":
        return 0.0
    if config.resources.use_ray:
        import ray

        if ray.is_initialized():
            return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def build_memory_model(
    config: Config, data: PreparedData, meta: nn.Module, calibration: TrialResult | None = None
) -> tuple[MemoryModel, float | None]:
    """The memory model over the meta model's shape and the tokenized data, fitted to
    the cost calibration's measured peak when there was one; and the memory of the
    device trials run on: as a worker measured it, else this machine's."""
    from peftsearch.search.memory_model import MemoryModel, model_shape
    from peftsearch.trials.memory import device_memory_mb
    from peftsearch.trials.tasks import get_task

    t = config.training
    causal = get_task(config.model.task).peft_task_type == "CAUSAL_LM"
    model = MemoryModel(model_shape(meta, data, t.batch_size, t.eval_batch_size, causal))
    device_memory = None
    if calibration is not None:
        model.observe_calibration(calibration)
        device_memory = calibration.device_memory_mb
    if device_memory is None:
        device_memory = device_memory_mb("cuda" if _gpus_per_trial(config) > 0 else "cpu")
    return model, device_memory


def build_checkpoint(config: Config) -> Checkpoint:
    from peftsearch.trials import Checkpoint

    m = config.model
    return Checkpoint(
        m.name_or_path,
        revision=m.revision,
        gguf_file=m.gguf_file,
        trust_remote_code=m.trust_remote_code,
    )


def build_study(config: Config) -> optuna.Study:
    """The study in its storage, created or continued by name, with its sampler.

    A continued study's sampler is seeded with ``search.seed`` plus the trials it holds:
    the same seed again would replay the first run's random start-up samples, and a
    second driver would train configs the first one already did.
    """
    from peftsearch.search import make_sampler, objectives_of, open_study

    s = config.search
    # the memory limit is a constraint in every study (search/memory_model.py); while
    # every config is feasible the samplers behave as unconstrained ones
    constrained = True
    study = open_study(
        s.study_name,
        config.storage_url,
        make_sampler(s.sampler, s.seed, s.n_trials, constrained=constrained),
        objectives_of(s.objectives),
    )
    if study.trials:
        study.sampler = make_sampler(
            s.sampler, s.seed + len(study.trials), s.n_trials, constrained=constrained
        )
    return study


def build_tracker(config: Config) -> TrialTracker:
    """MLflow, or nothing when ``tracking.enabled`` is false."""
    from peftsearch.search import NullTracker, Tracker

    if not config.tracking.enabled:
        return NullTracker()
    try:
        return Tracker(config.mlflow_uri, config.experiment_name, config.output_dir / "mlartifacts")
    except Exception as error:  # MLflow raises its own types for unreachable stores
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UserError(
            f"cannot open MLflow tracking at {config.mlflow_uri!r}: {first}",
            where="tracking.mlflow_uri",
        ) from None


def build_early_stopping(
    config: Config, eval_rows: int
) -> tuple[tuple[int, ...], RungBoard | None]:
    """Rung steps and the board that judges them; none when early stopping is off."""
    from peftsearch.search.early_stopping import RungBoard, accuracy_noise, rung_steps

    early = config.search.early_stopping
    if not early.enabled:
        return (), None
    rungs = rung_steps(config.training.max_steps, early.eta, early.rungs)
    if not rungs:
        return (), None
    return rungs, RungBoard(early.eta, early.min_trials, accuracy_noise(eval_rows))


def build_rungs(
    config: Config,
    study: Any,
    rungs: tuple[int, ...],
    budget: Budget | None,
    cost_model: CostModel | None,
    slots: int,
) -> tuple[tuple[int, ...], str | None]:
    """The rungs for this run, or none when it has too few trials for early stopping to
    pay for its rung evaluations (``search.early_stopping.rungs_that_pay``), with the line
    that says so. The benchmarks' replay calls this too."""
    from peftsearch.search import finished_count
    from peftsearch.search.early_stopping import rungs_that_pay

    trials, limit = float(config.search.n_trials - finished_count(study)), "search.n_trials"
    if budget is not None and cost_model is not None:
        reach = budget.trials_in_reach(cost_model.typical(config.training.max_steps), slots)
        if reach < trials:
            trials, limit = reach, "the budget"
    early = config.search.early_stopping
    return rungs_that_pay(rungs, trials, limit, early.eta, early.min_trials)


def build_space_fits(config: Config, info: ModelInfo) -> Callable[[dict[str, Any]], bool]:
    """Whether Optuna params are a config this space can express for the model."""
    import warnings

    import optuna

    from peftsearch.spaces import sample_choice
    from peftsearch.spaces._deployment import check_adapter

    methods = config.method_options()
    deployment = config.deployment

    def fits(params: dict[str, Any]) -> bool:
        try:
            with warnings.catch_warnings():  # a learning rate outside today's range is fine
                warnings.simplefilter("ignore")
                choice = sample_choice(optuna.trial.FixedTrial(params), methods, info)
        except (ValueError, KeyError):
            return False
        # an earlier study's config may hold a value the profiles removed (a fixed trial
        # takes any value of a categorical knob)
        return not any(
            check_adapter(target, choice.peft_config, choice.method, deployment.max_lora_rank)
            for target in deployment.targets
        )

    return fits


def build_design_configs(config: Config, info: ModelInfo) -> list[tuple[str, str, dict[str, Any]]]:
    """The initial design's configs for this config's space and task."""
    from peftsearch.spaces import initial_design
    from peftsearch.trials.tasks import get_task

    most_blocks = get_task(config.model.task).design_most_blocks
    return initial_design(config.method_options(), info, most_blocks)


def build_initial_design(config: Config, info: ModelInfo) -> Callable[[optuna.Study], bool] | None:
    """The loop's ``before_ask``: queues the initial design one config at a time; None
    when ``search.initial_design`` is off (by default for the random and nsga2 samplers)."""
    from peftsearch.search.first_configs import enqueue_initial_design

    if not config.search.uses_initial_design:
        return None
    design = build_design_configs(config, info)
    fits = build_space_fits(config, info)
    methods = list(config.method_options())
    return lambda study: enqueue_initial_design(study, design, methods, fits)


def build_budget(
    config: Config, study: Any, executor: TrialExecutor, info: ModelInfo, eval_rows: int
) -> tuple[Budget, CostModel]:
    """Calibrate the cost model on a worker, then set the limits in its device's price."""
    from peftsearch.search.budget import Budget, BudgetLimits, spent_device_seconds
    from peftsearch.search.cost_model import calibrate
    from peftsearch.search.records import add_overhead
    from peftsearch.trials import price_per_hour

    cost_model, calibration = calibrate(
        executor,
        next(iter(config.method_options())),
        info,
        eval_rows,
        config.training.eval_batch_size,
        quantization=config.model.quantizations[0],
    )
    b = config.budget
    limits = BudgetLimits.build(
        max_cost_usd=b.max_cost_usd,
        max_device_hours=b.max_device_hours,
        max_trials=b.max_trials,
        max_wall_seconds=b.max_wall_time,
        usd_per_device_hour=price_per_hour(calibration.device, config.cost.usd_per_device_hour),
    )
    add_overhead(study, calibration.device_seconds)  # so later runs count it too
    budget = Budget(limits, spent=spent_device_seconds(study), share=cost_model.share)
    return budget, cost_model


def describe_budget(budget: Budget, cost_model: CostModel, confirm_runs: int = 0) -> str:
    from peftsearch.results.front import display_name

    s = budget.summary()
    parts = []
    if s["limit_usd"] is not None:
        parts.append(f"${s['limit_usd']:.4f} ({s['limit_device_seconds']:.0f} device-seconds)")
    if budget.limits.wall_seconds is not None:
        parts.append(f"{budget.limits.wall_seconds:.0f} s of wall time")
    if budget.limits.trials is not None:
        parts.append(f"{budget.limits.trials} trials")
    kept = ""
    if confirm_runs and (budget.limits.device_seconds or budget.limits.wall_seconds):
        kept = (
            f" It keeps back the cost of {confirm_runs} training run(s), the median trial's "
            "(at most a quarter of it), to confirm the front with new seeds (search.confirm)."
        )
    return (
        f"Budget: {', '.join(parts)}; spent so far ${s['spent_usd']:.4f} "
        f"(calibration included). A {display_name(cost_model.method)} step takes about "
        f"{cost_model.step_seconds:.2f} s, "
        f"an evaluation {cost_model.eval_seconds:.1f} s.{kept}"
    )
