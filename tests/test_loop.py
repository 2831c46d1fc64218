"""SearchLoop on its own: a fake executor on a fake clock, a real in-memory Optuna study.

The executor honours the contract (``TrialExecutor``): trials take the device time the
test gives them, stop at their ``max_seconds``, and a worker death is retried once on
what is left of the allowance, as the Ray executor does.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import optuna
import pytest

from peftsearch.results.progress import SearchProgress, progress_from_study
from peftsearch.search import SearchLoop, SideJob, finished_count, read_records, records
from peftsearch.search.budget import Budget, BudgetLimits, retry_allowance
from peftsearch.search.cost_model import CostModel
from peftsearch.search.memory_model import MemoryModel, ModelShape
from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of
from peftsearch.spaces import PeftChoice
from peftsearch.trials import BaselineJob, Job, TrialJob, TrialResult

PARAMS_PER_RANK = 1_000
TOTAL_PARAMS = 100_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeExecutor:
    """Trials last ``seconds(request)`` device-seconds each, one slot at a time per
    ``slots``; ``deaths`` lists trial numbers whose first worker dies after
    ``death_after`` seconds."""

    def __init__(
        self,
        clock: FakeClock,
        seconds: float = 10.0,
        slots: int = 1,
        deaths: tuple[int, ...] = (),
        death_after: float = 4.0,
    ) -> None:
        self.clock = clock
        self.seconds = seconds
        self._slots = slots
        self.deaths = set(deaths)
        self.death_after = death_after
        self.pending: deque[Job] = deque()
        self.requests: list[Job] = []

    @property
    def slots(self) -> int:
        return self._slots

    def submit(self, request: Job) -> None:
        self.pending.append(request)
        self.requests.append(request)

    def wait(self) -> list[TrialResult]:
        if not self.pending:
            return []
        request = self.pending.popleft()
        attempts, lost, allowance = 1, 0.0, request.max_seconds
        if request.number in self.deaths:
            attempts, lost = 2, self.death_after
            allowance = retry_allowance(allowance, lost)
        used = self.seconds if allowance is None else min(self.seconds, allowance)
        self.clock.now += lost + used
        stopped = allowance is not None and self.seconds > allowance
        rank = int(request.peft_config["r"]) if isinstance(request, TrialJob) else 2
        return [
            TrialResult(
                request.number,
                request.method,
                "PRUNED" if stopped else "COMPLETE",
                job=request.key,
                accuracy=0.5 + rank / 100,
                metrics={"metric": "accuracy", "accuracy": 0.5 + rank / 100},
                trainable_params=rank * PARAMS_PER_RANK,
                total_params=TOTAL_PARAMS,
                trainable_pct=100 * rank * PARAMS_PER_RANK / TOTAL_PARAMS,
                device_seconds=lost + used,
                cost_usd=(lost + used) / 3600,
                steps=10,
                train_seconds=used * 0.8,
                eval_seconds=used * 0.2,
                evaluations=1,
                attempts=attempts,
                error="stopped by the budget" if stopped else None,
            )
        ]

    def close(self) -> None:
        self.pending.clear()


def sample(trial: optuna.Trial) -> PeftChoice:
    rank = int(trial.suggest_categorical("lora.rank", [2, 4, 8, 16, 32]))
    config = {"peft_type": "LORA", "task_type": "SEQ_CLS", "r": rank, "target_modules": ["q"]}
    return PeftChoice(method="lora", peft_config=config, learning_rate=1e-3, summary={"rank": rank})


def count(choice: PeftChoice) -> tuple[int, int]:
    return int(choice.peft_config["r"]) * PARAMS_PER_RANK, TOTAL_PARAMS


def new_study() -> optuna.Study:
    return optuna.create_study(
        directions=[o.direction for o in objectives_of(DEFAULT_OBJECTIVES)],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


def cost_model(seconds: float) -> CostModel:
    """A cost model that predicts ``seconds`` for every trial (10 steps, 1 evaluation)."""
    return CostModel(
        step_seconds=seconds * 0.8 / 10,
        eval_seconds=seconds * 0.2,
        setup_seconds=0.0,
        reference_params=1,
    )


def make_loop(study: optuna.Study, executor: FakeExecutor, n_trials: int, **kwargs) -> SearchLoop:
    return SearchLoop(
        study=study,
        executor=executor,
        sample=sample,
        n_trials=n_trials,
        adapter_root=Path("unused"),
        count_params=count,
        num_layers=4,
        max_steps=10,
        **kwargs,
    )


def budget(clock: FakeClock, device_seconds: float | None = None, **kwargs) -> Budget:
    limits = BudgetLimits(device_seconds=device_seconds, usd_per_device_hour=1.0, **kwargs)
    return Budget(limits, clock=clock)


def test_stops_after_n_trials() -> None:
    study, clock = new_study(), FakeClock()
    loop = make_loop(study, FakeExecutor(clock), n_trials=4)
    assert loop.run() == "trials: 4 trials done (search.n_trials)"
    assert finished_count(study) == 4
    assert [r.status for r in read_records(study)] == ["COMPLETE"] * 4


def test_n_trials_counts_earlier_runs() -> None:
    study, clock = new_study(), FakeClock()
    make_loop(study, FakeExecutor(clock), n_trials=3).run()
    executor = FakeExecutor(clock)
    make_loop(study, executor, n_trials=5).run()
    assert len(executor.requests) == 2 and finished_count(study) == 5


def test_budget_stops_and_is_never_exceeded() -> None:
    study, clock = new_study(), FakeClock()
    spend = budget(clock, device_seconds=55.0)
    loop = make_loop(
        study, FakeExecutor(clock, seconds=10), n_trials=100, budget=spend, cost_model=cost_model(9)
    )
    reason = loop.run()
    assert reason.startswith("budget:") and "raise budget.max_device_hours" in reason
    assert spend.spent <= 55.0
    assert 3 <= finished_count(study) <= 6


def test_infeasible_configs_never_train_and_status_reads_them() -> None:
    study, clock = new_study(), FakeClock()
    executor = FakeExecutor(clock)
    # 8% of the params: ranks 2, 4 and 8 fit, 16 and 32 do not.
    loop = make_loop(study, executor, n_trials=6, max_trainable_pct=8.0)
    loop.run()
    stored = read_records(study)
    infeasible = [r for r in stored if r.infeasible]
    assert infeasible and all(r.status == "INFEASIBLE" for r in infeasible)
    assert all(int(q.peft_config["r"]) <= 8 for q in executor.requests)
    assert finished_count(study) == 6 == len(executor.requests)
    # `peftsearch status` reads the same storage: infeasible trials have no accuracy.
    progress = progress_from_study(study, 6)
    assert progress.done == 6 and progress.best_accuracy is not None
    assert "best accuracy 0." in progress.line()


def test_a_dead_worker_is_retried_inside_the_trial_allowance() -> None:
    study, clock = new_study(), FakeClock()
    spend = budget(clock, device_seconds=1000.0)
    executor = FakeExecutor(clock, seconds=10, deaths=(0, 2), death_after=6.0)
    loop = make_loop(study, executor, n_trials=4, budget=spend, cost_model=cost_model(8))
    loop.run()
    stored = {r.number: r for r in read_records(study)}
    assert stored[0].result["attempts"] == 2 and stored[1].result["attempts"] == 1
    for number in (0, 2):
        allowance = executor.requests[number].max_seconds
        assert allowance is not None
        assert stored[number].device_seconds <= allowance + 1e-9
    assert spend.spent == pytest.approx(sum(r.device_seconds for r in stored.values()))


def test_a_spent_budget_adds_no_trial_on_rerun_and_names_the_key() -> None:
    """Continuing a study whose budget is spent: no junk trial, the bests of earlier
    runs, and a stop line that says which key to raise."""
    study, clock = new_study(), FakeClock()
    first = make_loop(
        study,
        FakeExecutor(clock, seconds=10),
        n_trials=100,
        budget=budget(clock, device_seconds=35.0),
        cost_model=cost_model(10),
    )
    first.run()
    before = len(study.trials)
    not_launched = [r for r in read_records(study) if r.not_launched]
    assert len(not_launched) == 1

    for _ in range(2):  # each re-run with the same budget
        spend = budget(clock, device_seconds=35.0)
        spend.spent = sum(r.device_seconds for r in read_records(study))
        rerun = make_loop(
            study, FakeExecutor(clock), n_trials=100, budget=spend, cost_model=cost_model(10)
        )
        reason = rerun.run()
        assert len(study.trials) == before
        assert "raise budget.max_device_hours to go on" in reason
    assert progress_from_study(study, 100).best_accuracy is not None

    # Raised: the config that did not fit runs first, with the same params.
    spend = budget(clock, device_seconds=60.0)
    spend.spent = sum(r.device_seconds for r in read_records(study))
    executor = FakeExecutor(clock)
    make_loop(study, executor, n_trials=100, budget=spend, cost_model=cost_model(10)).run()
    rerun_of = [r for r in read_records(study) if r.requeued_from == not_launched[0].number]
    assert len(rerun_of) == 1 and rerun_of[0].params == not_launched[0].params
    assert executor.requests[0].number == rerun_of[0].number


def test_trial_count_budget() -> None:
    study, clock = new_study(), FakeClock()
    spend = budget(clock, trials=2)
    loop = make_loop(
        study, FakeExecutor(clock), n_trials=10, budget=spend, cost_model=cost_model(5)
    )
    assert loop.run() == "budget: 2 trials done in this run; raise budget.max_trials to go on"
    assert finished_count(study) == 2


def test_side_jobs_take_the_slots_the_last_trials_leave_and_stay_out_of_the_study() -> None:
    study, clock = new_study(), FakeClock()
    executor = FakeExecutor(clock, slots=2)
    seen: list[TrialResult] = []
    side = SideJob(baseline_request(), seen.append)
    loop = make_loop(study, executor, n_trials=3, side_jobs=[side])
    assert loop.run() == "trials: 3 trials done (search.n_trials)"
    # the baseline starts only once no trial will: it never holds a trial back
    assert [r.key for r in executor.requests] == ["trial 0", "trial 1", "trial 2", "baseline"]
    assert [r.job for r in seen if r] == ["baseline"] and loop.running == 0
    assert finished_count(study) == 3 and len(study.trials) == 3


def baseline_request() -> BaselineJob:
    return BaselineJob()


def test_with_a_budget_a_side_job_runs_beside_the_first_trial_on_time_held_for_it() -> None:
    study, clock = new_study(), FakeClock()
    executor = FakeExecutor(clock, slots=2)
    spend = budget(clock, device_seconds=45.0, trials=3)
    seen: list[TrialResult] = []
    loop = make_loop(
        study,
        executor,
        n_trials=10,
        budget=spend,
        cost_model=cost_model(10),
        side_jobs=[SideJob(baseline_request(), seen.append, estimate=10.0)],
    )
    first_allowances: list[float | None] = []
    submit = executor.submit

    def watch(request: TrialJob) -> None:
        if request.number == 0:
            first_allowances.append(request.max_seconds)
            assert spend.held == {"baseline": 20.0}  # the side job's estimate, with SLACK
        submit(request)

    executor.submit = watch  # type: ignore[method-assign]
    assert loop.run() == "budget: 3 trials done in this run; raise budget.max_trials to go on"
    # it took the first slot and the first trial the second; max_trials did not count it
    assert [r.key for r in executor.requests] == ["baseline", "trial 0", "trial 1", "trial 2"]
    assert first_allowances == [20.0]  # 45 less the 20 held: the trial's own 2 x 10
    assert [r.job for r in seen if r] == ["baseline"] and spend.held == {}
    assert spend.spent == pytest.approx(40.0)  # 3 trials and the side job, 10 s each
    assert finished_count(study) == 3


def test_with_a_budget_a_side_job_that_does_not_fit_is_not_run() -> None:
    study, clock = new_study(), FakeClock()
    executor = FakeExecutor(clock, slots=2)
    seen: list[TrialResult] = []
    loop = make_loop(
        study,
        executor,
        n_trials=1,
        budget=budget(clock, device_seconds=25.0),
        cost_model=cost_model(10),
        side_jobs=[SideJob(baseline_request(), seen.append, estimate=30.0)],
    )
    loop.run()
    assert [r.key for r in executor.requests] == ["trial 0"] and seen == [None]


def design_hook(ranks: list[int]):  # type: ignore[no-untyped-def]
    from peftsearch.search.first_configs import enqueue_initial_design

    configs = [(f"rank {r}", "lora", {"method": "lora", "lora.rank": r}) for r in ranks]
    return lambda study: enqueue_initial_design(study, configs, ["lora"])


def test_the_initial_design_runs_first_and_leaves_nothing_queued() -> None:
    """The design's configs run first, in order, queued one at a time: a run that ends
    inside it leaves no trial waiting, and the next run goes on where it stopped."""
    study, clock = new_study(), FakeClock()
    make_loop(study, FakeExecutor(clock), n_trials=2, before_ask=design_hook([32, 2, 8])).run()
    stored = read_records(study)
    assert [r.initial_design for r in stored] == ["rank 32", "rank 2"]
    assert [r.params["lora.rank"] for r in stored] == [32, 2]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}

    make_loop(study, FakeExecutor(clock), n_trials=5, before_ask=design_hook([32, 2, 8])).run()
    stored = read_records(study)
    assert [r.initial_design for r in stored][:3] == ["rank 32", "rank 2", "rank 8"]
    assert [r.initial_design for r in stored][3:] == [None, None]  # then the sampler


def test_a_config_that_did_not_fit_runs_before_the_rest_of_the_design() -> None:
    study, clock = new_study(), FakeClock()
    first = make_loop(
        study,
        FakeExecutor(clock, seconds=10),
        n_trials=100,
        budget=budget(clock, device_seconds=15.0),
        cost_model=cost_model(10),
        before_ask=design_hook([2, 4, 8, 16]),
    )
    first.run()
    not_launched = [r for r in read_records(study) if r.not_launched]
    assert [r.initial_design for r in not_launched] == ["rank 4"]
    spend = budget(clock, device_seconds=100.0)
    spend.spent = sum(r.device_seconds for r in read_records(study))
    executor = FakeExecutor(clock)
    make_loop(
        study,
        executor,
        n_trials=4,
        budget=spend,
        cost_model=cost_model(10),
        before_ask=design_hook([2, 4, 8, 16]),
    ).run()
    ran = {r.number: r for r in read_records(study)}
    first_rerun = ran[executor.requests[0].number]
    assert first_rerun.requeued_from == not_launched[0].number
    # "rank 4" is not run a second time: its label is taken by the not-launched trial,
    # and its re-run carries the same params
    later = [ran[request.number].params["lora.rank"] for request in executor.requests[1:]]
    assert later == [8, 16]


def _memory_model() -> MemoryModel:
    """No base weights, and activations of 100 MB at the batch of 16 (on top of AdamW's
    16 bytes per trainable parameter): what a rank needs is easy to say."""
    per_token = 100 * 2**20 / (16 * 64)
    hidden = int(per_token / (4 * 10 * 2))  # two blocks with gradients, 10 hidden-wide each
    shape = ModelShape(
        num_layers=2, hidden_size=hidden, intermediate_size=0, num_heads=0,
        linear_params=0, other_params=0, logits_width=2, train_tokens=64, eval_tokens=1,
        batch_size=16, eval_batch_size=1, causal_lm=False,
    )  # fmt: skip
    return MemoryModel(shape)


def test_a_config_predicted_over_the_memory_limit_gets_the_levers_or_never_trains() -> None:
    """With 1M params a rank (16 MB of weights, gradients and AdamW states), 100 MB of
    activations at the whole batch and a 375 MB limit (300 MB with the memory model's
    25% headroom before trials have measured its misses): ranks up to 8 fit as they
    are, rank 16 with smaller micro-batches, rank 32 in no way."""
    study, clock = new_study(), FakeClock()
    executor = FakeExecutor(clock)
    loop = make_loop(
        study,
        executor,
        n_trials=8,
        memory_model=_memory_model(),
        memory_limit_mb=375.0,
        memory_limit_configured=True,
        batch_size=16,
    )
    loop.count_params = lambda choice: (int(choice.peft_config["r"]) * 2**20, 10**12)
    progress = SearchProgress(total=8)
    loop.on_result = progress.add_result
    loop.run()
    stored = {r.number: r for r in read_records(study)}
    jobs = {job.number: job for job in executor.requests if isinstance(job, TrialJob)}
    ranks = {n: int(r.peft_config["r"]) for n, r in stored.items()}
    assert jobs and all(ranks[n] <= 16 for n in jobs)
    for number, job in jobs.items():
        if ranks[number] <= 8:
            assert job.micro_batch_size is None
        else:
            assert job.micro_batch_size is not None and job.micro_batch_size < 16
            assert "micro-batch" in str(stored[number].measurement("memory_note"))
        assert stored[number].measurement("predicted_memory_mb") <= 300.0
    skipped = [r for r in stored.values() if r.infeasible]
    assert skipped and all(ranks[r.number] >= 32 for r in skipped)
    for record in skipped:
        error = str(record.measurement("error"))
        assert "needs about" in error and "resources.memory_per_trial_gb is 0.37 GB" in error
        assert records.constraint_of(study.trials[record.number])[1] > 0
    assert progress.out_of_memory == len(skipped)
    assert f"too big for memory {len(skipped)}" in progress.line()
    # `peftsearch status` reads the same from storage
    assert progress_from_study(study, 8).out_of_memory == len(skipped)


class OutOfMemoryExecutor(FakeExecutor):
    """Trials of rank 32 run out of memory on the worker, after their retry."""

    def wait(self) -> list[TrialResult]:
        results = super().wait()
        for result in results:
            request = self.requests[-1]
            if isinstance(request, TrialJob) and int(request.peft_config["r"]) == 32:
                result.status, result.accuracy, result.out_of_memory = "FAIL", None, True
                result.error = "out of memory at micro-batch 8; peaked at 20.00 GB"
        return results


def test_a_trial_out_of_memory_is_infeasible_and_the_search_goes_on() -> None:
    study, clock = new_study(), FakeClock()
    executor = OutOfMemoryExecutor(clock)
    loop = make_loop(study, executor, n_trials=10)
    loop.run()
    stored = read_records(study)
    lost = [r for r in stored if int(r.peft_config["r"]) == 32]
    assert lost and all(r.infeasible and r.status == "INFEASIBLE" for r in lost)
    assert all(records.constraint_of(study.trials[r.number])[1] > 0 for r in lost)
    assert all("out of memory" in str(r.measurement("error")) for r in lost)
    assert sum(r.trained for r in stored) == len(stored) - len(lost) > 0


def test_when_no_config_fits_the_memory_the_stop_line_says_so() -> None:
    study, clock = new_study(), FakeClock()
    loop = make_loop(
        study,
        FakeExecutor(clock),
        n_trials=100,
        memory_model=_memory_model(),
        memory_limit_mb=10.0,
        memory_limit_configured=True,
    )
    loop.count_params = lambda choice: (int(choice.peft_config["r"]) * 2**20, 10**12)
    reason = loop.run()
    assert reason.startswith("memory: 50 configs in a row did not fit; the last ")
    assert "resources.memory_per_trial_gb is 0.01 GB" in reason
    assert not any(r.trained for r in read_records(study))
