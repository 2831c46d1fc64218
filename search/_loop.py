"""Ask -> check -> estimate -> dispatch -> tell. The driver alone writes to the storage."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from peftsearch.search import records
from peftsearch.search.confirm import keep_back_for, run_cost
from peftsearch.search.cost_model import features_of
from peftsearch.search.memory_model import (
    MemoryNeed,
    default_memory_limit_mb,
    lowest_adapted_block,
    memory_limit_line,
)
from peftsearch.search.objectives import DEFAULT_OBJECTIVES, Objective, objectives_of, values_of
from peftsearch.search.study import quiet_optuna
from peftsearch.search.tracking import NullTracker, TrialTracker
from peftsearch.trials import Job, TrialJob, TrialResult

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.budget import Budget
    from peftsearch.search.cost_model import CostModel, TrialFeatures
    from peftsearch.search.executor import TrialExecutor
    from peftsearch.search.memory_model import MemoryModel, MemoryPlan
    from peftsearch.spaces import PeftChoice

__all__ = ["SearchLoop", "SideJob", "finished_count"]

MAX_INFEASIBLE_IN_A_ROW = 50


def finished_count(study: optuna.Study) -> int:
    """Trials that count against ``search.n_trials`` (see ``TrialRecord.counted``)."""
    return sum(record.counted for record in records.read_records(study))


@dataclass(frozen=True)
class SideJob:
    """Work outside the trials (the baseline) that runs on a trial slot; its result goes
    to ``on_result``, not to the study. With a budget it starts beside the first trials
    and holds ``estimate`` device-seconds (``Budget.hold``) until it ends, so the trials
    never spend what it needs; the loop charges what it used. Without one it waits for
    a slot the last trials leave idle, so it never holds a trial back. One that does not
    fit the budget is dropped: ``on_result`` gets None."""

    job: Job
    on_result: Callable[[TrialResult | None], None]
    estimate: float = 0.0


@dataclass
class _Candidate:
    trial: optuna.Trial
    choice: PeftChoice
    trainable_params: int
    features: TrialFeatures
    need: MemoryNeed | None = None
    plan: MemoryPlan | None = None


@dataclass
class SearchLoop:
    """Runs trials until ``n_trials`` have finished or the budget says stop.

    ``sample`` turns an Optuna trial into a ``PeftChoice`` (the search space) and
    ``count_params`` gives its (trainable, total) parameters without training, so a cap
    on trainable params is enforced before any device time is spent. With a ``budget``
    and a ``cost_model`` each trial gets an allowance from its estimate. ``rungs`` are
    the steps at which trials are judged for early stopping. ``on_result`` sees every
    finished trial (progress display). ``before_ask`` may queue the config the next ask
    returns (the initial design, one config at a time, so that none is left queued when
    the loop ends). ``stop_reason`` says why the loop ended.

    A trial whose estimate did not fit the budget is recorded once as not launched. A
    later run of the same study stops at once while it still does not fit (no new
    trial is added), and launches it first once the budget was raised.
    """

    study: optuna.Study
    executor: TrialExecutor
    sample: Callable[[optuna.Trial], PeftChoice]
    n_trials: int
    adapter_root: Path
    count_params: Callable[[PeftChoice], tuple[int, int]]
    num_layers: int
    max_steps: int
    tracker: TrialTracker = field(default_factory=NullTracker)
    parent_run_id: str = ""
    on_result: Callable[[TrialResult], None] | None = None
    budget: Budget | None = None
    cost_model: CostModel | None = None
    max_trainable_pct: float | None = None
    rungs: tuple[int, ...] = ()
    cache_frozen_layers: bool = False  # the workers' frozen-layer cache (cost estimates)
    side_jobs: list[SideJob] = field(default_factory=list)
    before_ask: Callable[[optuna.Study], object] | None = None
    # the memory guard (search/memory_model.py): a config predicted over the limit gets
    # the levers, or is recorded infeasible before it trains
    memory_model: MemoryModel | None = None
    memory_limit_mb: float | None = None
    memory_limit_configured: bool = False  # resources.memory_per_trial_gb was set
    gradient_checkpointing: bool = False  # training.gradient_checkpointing
    batch_size: int = 16  # training.batch_size (the levers are said against it)
    # the share of a GPU a trial takes: with no limit known yet, the first trial's
    # device sets the default one (a driver that sees no GPU of its workers' kind)
    gpus_per_trial: float = 0.0
    # what the study optimises, in its values' order (search/objectives.py)
    objectives: tuple[Objective, ...] = objectives_of(DEFAULT_OBJECTIVES)
    # re-runs confirmation adds after the search (search/confirm.py): the budget keeps
    # back their expected cost, the median full trial's, so the search leaves it
    confirm_runs: int = 0
    # device-seconds of other work after the search the budget keeps back (scoring the
    # front on data.test, search/test_scoring.py)
    kept_for_test: float = 0.0
    stop_reason: str | None = None
    _costs: list[float] = field(default_factory=list)  # full trials' run_cost
    _estimates: list[float] = field(default_factory=list)  # launched trials' estimates
    _inflight: dict[int, tuple[optuna.Trial, str, _Candidate | None]] = field(default_factory=dict)
    _side: dict[str, SideJob] = field(default_factory=dict)

    @property
    def running(self) -> int:
        return len(self._inflight) + len(self._side)

    def run(self) -> str:
        with quiet_optuna():
            return self._run()

    def _run(self) -> str:
        self._retry_not_launched()
        if self.budget is not None:
            self._start_side_jobs()
        pending: _Candidate | None = None
        while True:
            while self.stop_reason is None and self.running < self.executor.slots:
                if finished_count(self.study) + self.running >= self.n_trials:
                    self.stop_reason = f"trials: {self.n_trials} trials done (search.n_trials)"
                    break
                if self.budget is not None and pending is None:
                    floor = self.cost_model.floor() if self.cost_model else 0.0
                    self.stop_reason = self.budget.exhausted(floor)
                    if self.stop_reason:
                        break
                pending = pending or self._next_candidate()
                if pending is None:
                    continue
                if not self._launch(pending):
                    if self.running:
                        break  # wait: a finishing trial frees its reservation
                    self._not_launched(pending)
                pending = None
            # no trial will start any more: side jobs take the slots that free up
            if self.stop_reason is not None:
                self._start_side_jobs()
            if not self.running:
                break
            for result in self.executor.wait():
                side = self._side.pop(result.job, None)
                if side is None:
                    self._finish(result)
                    continue
                if self.budget is not None:
                    self.budget.release(result.job, result.device_seconds)
                side.on_result(result)
        if pending is not None:
            self._not_launched(pending)
        return self.stop_reason or "trials: nothing left to run"

    def _start_side_jobs(self) -> None:
        """Side jobs take the free slots (see ``SideJob``); with a budget each holds its
        estimate, and one that does not fit is dropped."""
        while self.side_jobs and self.running < self.executor.slots:
            side = self.side_jobs.pop(0)
            if self.budget is None or self.budget.hold(side.job.key, side.estimate):
                self._side[side.job.key] = side
                self.executor.submit(side.job)
            else:
                side.on_result(None)

    def _retry_not_launched(self) -> None:
        """A trial an earlier run could not afford: stop now if it still does not fit,
        else queue its params so it runs first."""
        if self.budget is None:
            return
        stored = records.read_records(self.study)
        retried = {r.requeued_from for r in stored}
        waiting = [r for r in stored if r.not_launched and r.number not in retried]
        if not waiting:
            return
        last = waiting[-1]
        estimate = last.estimated_seconds or 0.0
        if self.budget.allowance(estimate) is None:
            self.stop_reason = self.budget.no_room(estimate)
            return
        self.study.enqueue_trial(last.params, user_attrs=records.requeue_attrs(last.number))

    def _next_candidate(self) -> _Candidate | None:
        reasons: list[str] = []
        for _ in range(MAX_INFEASIBLE_IN_A_ROW):
            if self.before_ask is not None:
                self.before_ask(self.study)
            trial = self.study.ask()
            try:
                with warnings.catch_warnings():
                    # A re-queued or warm-started config may carry a learning rate from
                    # another range: it is tried as it was, on purpose.
                    warnings.filterwarnings("ignore", message="Fixed parameter .* out of range")
                    choice = self.sample(trial)
                trainable, total = self.count_params(choice)
            except ValueError as error:  # the space cannot express this point for the model
                method = str(trial.params.get("method", "?"))
                self._record(trial, "", TrialResult(trial.number, method, "FAIL", error=str(error)))
                return None
            records.save_choice(trial, choice)
            pct = 100.0 * trainable / total
            features = features_of(
                choice.method,
                choice.peft_config,
                trainable,
                self.num_layers,
                self.cache_frozen_layers,
                choice.quantization,
            )
            candidate = _Candidate(trial, choice, trainable, features)
            reason = self._check_memory(candidate)
            if self.max_trainable_pct is not None:
                # Optuna's constraint API: > 0 is infeasible, and the sampler learns from it.
                records.save_constraint(trial, trainable_pct=pct - self.max_trainable_pct)
                if pct > self.max_trainable_pct and not reason:
                    reason = (
                        f"not trained: {pct:.3f}% trainable is over the cap "
                        "(space.max_trainable_pct)"
                    )
            if reason:
                self._infeasible(trial, choice, trainable, total, reason)
                reasons.append(reason)
                continue
            return candidate
        memory = [r for r in reasons if "memory" in r]
        self.stop_reason = (
            f"memory: {MAX_INFEASIBLE_IN_A_ROW} configs in a row did not fit; the last "
            f"{memory[-1].removeprefix('not trained: ')}. Raise it, lower training.batch_size "
            "or narrow the space"
            if len(memory) > len(reasons) // 2
            else f"space: {MAX_INFEASIBLE_IN_A_ROW} configs in a row exceeded "
            f"space.max_trainable_pct={self.max_trainable_pct}; raise it or narrow the space"
        )
        return None

    def _check_memory(self, candidate: _Candidate) -> str:
        """Plan the candidate's memory levers; '' when it fits, else why it does not."""
        if self.memory_model is None:
            return ""
        choice, features = candidate.choice, candidate.features
        from peftsearch.trials.frozen_cache import PROMPT_LEARNING

        prompt = str(choice.peft_config.get("peft_type", "")).upper() in PROMPT_LEARNING
        candidate.need = MemoryNeed(
            trainable_params=candidate.trainable_params,
            lowest_block=0 if prompt else lowest_adapted_block(choice.peft_config, self.num_layers),
            quantization=choice.quantization,
            cached=features.cached_fraction > 0,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        plan = self.memory_model.plan(candidate.need, self.memory_limit_mb)
        candidate.plan = plan
        records.save_memory(candidate.trial, plan.predicted_mb)
        if self.memory_limit_mb is None:
            return ""
        excess = (plan.predicted_mb - self.memory_limit_mb) / self.memory_limit_mb
        records.save_constraint(candidate.trial, memory=excess)
        if plan.fits:
            return ""
        line = memory_limit_line(
            plan,
            self.memory_limit_mb,
            self.memory_limit_configured,
            self.memory_model.headroom(),
        )
        return f"not trained: out of memory predicted, {line}"

    def _infeasible(
        self, trial: optuna.Trial, choice: PeftChoice, trainable: int, total: int, reason: str
    ) -> None:
        pct = 100.0 * trainable / total
        record = TrialResult(
            trial.number,
            choice.method,
            "COMPLETE",
            trainable_params=trainable,
            total_params=total,
            trainable_pct=pct,
            quantization=choice.quantization,
            predicted_memory_mb=records.memory_of(trial),
            error=reason,
        )
        run_id = self._child_run(trial, choice)
        self._tell_infeasible(trial, run_id, record)

    def _tell_infeasible(self, trial: optuna.Trial, run_id: str, record: TrialResult) -> None:
        """A config that cannot train (over a cap, or out of memory): told as complete
        with the worst values so the sampler's constraint handling sees it; results and
        the front leave infeasible trials out."""
        record.status, record.infeasible = "COMPLETE", True
        records.save_result(trial, record, infeasible=True)
        self.tracker.close_child(run_id, "INFEASIBLE", "FINISHED")
        self.study.tell(
            trial, [float(getattr(record, o.column, None) or 0.0) for o in self.objectives]
        )
        if self.on_result is not None:
            self.on_result(record)

    def _launch(self, candidate: _Candidate) -> bool:
        trial, choice = candidate.trial, candidate.choice
        estimate = allowance = None
        if self.cost_model is not None:
            evaluations = len(self.rungs) + 1
            estimate = self.cost_model.predict(candidate.features, self.max_steps, evaluations)
            records.save_estimate(trial, estimate)
        if self.budget is not None and estimate is not None:
            self._estimates.append(estimate)
            self._keep_back()
            allowance = self.budget.allowance(estimate)
            if allowance is None:
                return False
            self.budget.reserve(trial.number, allowance)
        run_id = self._child_run(trial, choice)
        self._inflight[trial.number] = (trial, run_id, candidate)
        plan = candidate.plan
        self.executor.submit(
            TrialJob(
                number=trial.number,
                method=choice.method,
                peft_config=choice.peft_config,
                learning_rate=choice.learning_rate,
                adapter_dir=str(self.adapter_root / str(trial.number)),
                max_seconds=None if allowance is None or math.isinf(allowance) else allowance,
                min_seconds=self.cost_model.floor() if self.cost_model is not None else 0.0,
                rungs=self.rungs,
                quantization=choice.quantization,
                micro_batch_size=plan.micro_batch_size if plan else None,
                gradient_checkpointing=plan.gradient_checkpointing if plan else None,
                loraplus_lr_ratio=choice.loraplus_lr_ratio,
            )
        )
        return True

    def _keep_back(self) -> None:
        if self.budget is not None and (self.confirm_runs or self.kept_for_test):
            keep_back_for(
                self.budget,
                self.confirm_runs,
                self._costs,
                self._estimates,
                self.executor.slots,
                self.kept_for_test,
            )

    def _not_launched(self, candidate: _Candidate) -> None:
        import optuna

        trial = candidate.trial
        estimate = records.estimate_of(trial) or 0.0
        reason = (
            self.budget.no_room(estimate)
            if self.budget is not None
            else "budget: the next trial does not fit"
        )
        record = TrialResult(trial.number, candidate.choice.method, "PRUNED", error=reason)
        records.save_result(trial, record, not_launched=True)
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self.stop_reason = self.stop_reason or reason

    def _child_run(self, trial: optuna.Trial, choice: PeftChoice) -> str:
        params = {
            "method": choice.method,
            "learning_rate": choice.learning_rate,
            "peft": choice.peft_config,
        }
        run_id = self.tracker.start_child(
            self.parent_run_id, self.study.study_name, trial.number, choice.method, params
        )
        if run_id:
            records.save_run_id(trial, run_id)
        return run_id

    def _finish(self, result: TrialResult) -> None:
        assert result.number is not None, "a trial's result"
        trial, run_id, candidate = self._inflight.pop(result.number)
        result.estimated_seconds = records.estimate_of(trial)
        result.predicted_memory_mb = records.memory_of(trial)
        if candidate is not None and candidate.plan is not None and not result.memory_note:
            levers = candidate.plan.levers(self.batch_size, self.gradient_checkpointing)
            result.memory_note = f"to fit the memory: {levers}" if levers else None
        if self.budget is not None:
            self.budget.settle(result.number, result.device_seconds)
            if result.status == "COMPLETE" and result.steps >= self.max_steps:
                # as a re-run is held: its cost, or the estimate of it if that is larger
                self._costs.append(max(run_cost(result), result.estimated_seconds or 0.0))
            self._keep_back()
        if self.cost_model is not None and candidate is not None:
            self.cost_model.observe(candidate.features, result)
        if self.memory_model is not None and candidate is not None and candidate.need:
            self.memory_model.observe(candidate.need, result)
        if self.memory_model is not None and self.memory_limit_mb is None:
            self.memory_limit_mb = default_memory_limit_mb(
                result.device_memory_mb,
                gpu_share=self.gpus_per_trial,
                concurrent=self.executor.slots,
            )
        if result.out_of_memory:  # after its retry: this config does not fit
            records.save_constraint(trial, memory=1.0)
            self._tell_infeasible(trial, run_id, result)
            return
        self._record(trial, run_id, result)

    def _record(self, trial: optuna.Trial, run_id: str, result: TrialResult) -> None:
        import optuna

        records.save_result(trial, result)
        if result.status == "COMPLETE":
            self.study.tell(trial, values_of(result, self.objectives))
        else:
            state = optuna.trial.TrialState[result.status]
            self.study.tell(trial, state=state)
        if run_id:
            self.tracker.finish_child(run_id, result)
        if self.on_result is not None:
            self.on_result(result)
