"""Budget, cost model and early-stopping logic, on fake time and fake costs."""

from __future__ import annotations

import math
import random

import pytest

from peftsearch.search.budget import SLACK, Budget, BudgetLimits, retry_allowance
from peftsearch.search.cost_model import CostModel, TrialFeatures, features_of
from peftsearch.search.early_stopping import RungBoard, accuracy_noise, pays_off, rung_steps
from peftsearch.trials import TrialResult
from peftsearch.trials.deadline import STEP_SAFETY, Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FLOOR = 2.0  # the cost model's least trial cost in these simulations


def run_attempt(
    rng: random.Random,
    clock: FakeClock,
    allowance: float | None,
    steps: int,
    step: float,
    evaluation: float,
    setup: float,
    dies_after: int | None,
) -> tuple[float, bool]:
    """One attempt of a trial on fake time, stopping by the Deadline rule the real
    TrialRunner uses; a worker that dies after ``dies_after`` steps loses the attempt.
    Returns (device seconds used, whether the worker died)."""
    started = clock.now
    deadline = Deadline(allowance, clock=clock, started=started)
    clock.now += setup
    if not deadline.has_room(0.0):
        return clock.now - started, False
    for number in range(1, steps + 1):
        # Steps vary, but never beyond STEP_SAFETY x the slowest seen so far.
        cap = max(deadline.step_times, default=step) * STEP_SAFETY
        duration = min(step * rng.uniform(0.7, 1.4), cap)
        clock.now += duration
        deadline.record_step(duration)
        if dies_after is not None and number >= dies_after:
            clock.now += rng.uniform(0, 1.0) * duration  # death noticed a little later
            return clock.now - started, True
        if number < steps and not deadline.has_room(deadline.next_step + evaluation):
            break
    else:
        clock.now += evaluation
    return clock.now - started, False


def simulate(
    seed: int, death_rate: float = 0.0, confirm_runs: int = 0, reruns: list[int] | None = None
) -> tuple[float, float, int]:
    """One search on fake time: trials with noisy costs run under a random budget. With
    ``death_rate``, workers die mid-trial and the trial is retried once on what is left of
    its allowance (``retry_allowance``, as the Ray executor does). With ``confirm_runs``
    the budget keeps them back during the search (``keep_back_for``, as the loop does),
    and they run after it, each holding its trial's measured cost (as
    ``search.confirm.confirm_front`` does). Returns (spent, limit, trials and re-runs)."""
    from peftsearch.search.confirm import RERUN_SLACK, keep_back_for

    rng = random.Random(seed)
    clock = FakeClock()
    limit = rng.uniform(20, 2000)
    limits = BudgetLimits(device_seconds=limit, usd_per_device_hour=1.0)
    budget = Budget(limits, clock=clock, spent=rng.uniform(0, 5))  # the calibration
    ran = 0
    costs: list[float] = []
    estimates: list[float] = []
    shapes: list[tuple[int, float, float, float]] = []
    while budget.exhausted(cheapest_estimate=FLOOR) is None:
        steps = rng.randint(5, 60)
        step = rng.uniform(0.1, 3.0)
        evaluation = rng.uniform(0.2, 8.0)
        setup = rng.uniform(0.1, 2.0)
        # Estimates are off by up to 3x either way.
        estimate = (setup + steps * step + evaluation) * rng.uniform(0.33, 3.0)
        if confirm_runs:
            estimates.append(estimate)
            keep_back_for(budget, confirm_runs, costs, estimates, slots=1)
        allowance = budget.allowance(estimate)
        if allowance is None:
            break
        budget.reserve(ran, allowance)
        used = 0.0
        left: float | None = allowance
        for attempt in (1, 2):
            dies = rng.random() < death_rate
            dies_after = rng.randint(1, steps) if dies else None
            seconds, died = run_attempt(
                rng, clock, left, steps, step, evaluation, setup, dies_after
            )
            if died and left is not None:
                seconds = min(seconds, left)  # as the Ray executor charges a lost attempt
            used += seconds
            if not died or attempt == 2:
                break
            left = retry_allowance(left, seconds)
            if left is not None and left < FLOOR:  # too little left for a useful retry
                break
        budget.settle(ran, used)
        costs.append(used)
        shapes.append((steps, step, evaluation, setup))
        if confirm_runs:
            keep_back_for(budget, confirm_runs, costs, estimates, slots=1)
        ran += 1
    done = 0
    if confirm_runs and shapes:
        budget.keep_back(0.0, 0.0)  # the search is over
        for k in range(confirm_runs):
            pick = k % len(shapes)
            if not budget.hold(f"rerun {k}", costs[pick], RERUN_SLACK):
                continue
            seconds, _ = run_attempt(
                rng, clock, budget.held[f"rerun {k}"], *shapes[pick], dies_after=None
            )
            budget.release(f"rerun {k}", seconds)
            done += 1
    if reruns is not None:
        reruns.append(done)
    return budget.spent, limit, ran


def test_no_overshoot_in_200_randomized_searches() -> None:
    worst = 0.0
    for seed in range(200):
        spent, limit, _ = simulate(seed)
        assert spent <= limit, (seed, spent, limit)
        worst = max(worst, spent / limit)
    assert worst > 0.5  # the budget is actually used, not left idle


def test_no_overshoot_when_workers_die() -> None:
    """A dead worker's trial is retried on what is left of its allowance, so the lost
    attempt and the retry together stay inside the reservation."""
    worst = 0.0
    for seed in range(200):
        spent, limit, _ = simulate(seed, death_rate=0.3)
        assert spent <= limit, (seed, spent, limit)
        worst = max(worst, spent / limit)
    assert worst > 0.5


def test_no_overshoot_with_confirmation_reruns() -> None:
    """Confirmation re-runs are charged inside the budget: kept back during the search,
    each holding its estimate after it."""
    worst, reruns = 0.0, []
    for seed in range(200):
        spent, limit, _ = simulate(seed, confirm_runs=3, reruns=reruns)
        assert spent <= limit, (seed, spent, limit)
        worst = max(worst, spent / limit)
    assert worst > 0.5
    # the search left room for them: most searches run all three (the rest had trials
    # whose costs were far from the median, or a limit a quarter of which is too small)
    assert sum(done == 3 for done in reruns) > 120 and sum(done > 0 for done in reruns) > 180


def test_the_budget_keeps_back_confirmations_cost() -> None:
    """Three re-runs of a 10 s trial keep 45 s back (each may use 1.5x its trial's cost):
    the search stops that much early, the stop reason says so, and the kept time is
    there after it."""
    from peftsearch.search.confirm import RERUN_SLACK, keep_back_for

    budget = Budget(BudgetLimits(device_seconds=200, usd_per_device_hour=1.0), clock=FakeClock())
    keep_back_for(budget, 3, [10.0], [], slots=1)
    assert budget.kept_device == 3 * 10 * RERUN_SLACK == 45 and budget.device_left() == 155
    budget.spent = 150
    assert budget.allowance(10.0) is None
    assert "45 device-seconds kept back for after the search" in budget.no_room(10.0)
    budget.keep_back(0.0, 0.0)
    for k in range(3):
        assert budget.hold(f"trial {k} seed 1", 10.0, RERUN_SLACK)
    assert sum(budget.held.values()) == 45
    # at most a quarter of the budget is kept back, so a small budget still searches
    keep_back_for(budget, 100, [10.0], [], slots=1)
    assert budget.kept_device == 50
    # test scoring is kept back beside it
    keep_back_for(budget, 1, [10.0], [], slots=1, extra=5.0)
    assert budget.kept_device == 20


def test_retry_allowance() -> None:
    assert retry_allowance(None, 50.0) is None  # no time cap, none for the retry either
    assert retry_allowance(100.0, 30.0) == 70.0
    assert retry_allowance(100.0, 130.0) == 0.0


def test_allowance_reserves_and_refuses() -> None:
    clock = FakeClock()
    budget = Budget(BudgetLimits(device_seconds=100), clock=clock)
    assert budget.allowance(30) == 30 * SLACK
    budget.reserve(0, 60)
    assert budget.allowance(30) == 40  # only the unreserved 40 s are left
    assert budget.allowance(41) is None
    budget.settle(0, 50)
    assert budget.spent == 50 and budget.device_left() == 50
    assert budget.exhausted(10) is None
    assert budget.exhausted(60) == (
        "budget: 0.028 device-hours used up; raise budget.max_device_hours to go on"
    )


def test_wall_time_and_trial_limits() -> None:
    clock = FakeClock()
    budget = Budget(BudgetLimits(wall_seconds=60, trials=2), clock=clock)
    clock.now += 50
    assert budget.allowance(20) is None  # 10 s of wall time left
    assert budget.allowance(5) == 10
    budget.settle(0, 1)
    budget.settle(1, 1)
    assert budget.allowance(1) is None
    assert budget.exhausted(1) == (
        "budget: 2 trials done in this run; raise budget.max_trials to go on"
    )


def test_wall_time_counts_in_a_trials_share_of_a_device() -> None:
    """A trial on half a device accrues 0.5 device-seconds per wall second: 100 s of
    wall time left hold 50 of its device-seconds, not 100."""
    clock = FakeClock()
    budget = Budget(BudgetLimits(wall_seconds=100), clock=clock, share=0.5)
    assert budget.allowance(60) is None  # 120 s of wall time
    assert budget.allowance(40) == pytest.approx(50)  # 80 s, capped at the 100 s left
    assert "about 120 s) does not fit in the 100 s of wall time left" in budget.no_room(60)
    assert not budget.fits(51) and budget.fits(49)


def test_a_trial_count_alone_puts_no_time_cap_on_trials() -> None:
    budget = Budget(BudgetLimits(trials=3), clock=FakeClock())
    assert budget.allowance(1e9) == math.inf
    assert budget.exhausted(1e9) is None


def test_limits_in_money_and_hours() -> None:
    limits = BudgetLimits.build(
        max_cost_usd=1.0,
        max_device_hours=1.0,
        max_trials=None,
        max_wall_seconds=None,
        usd_per_device_hour=2.0,
    )
    assert limits.device_seconds == 1800  # $1 at $2/h is half an hour, under the 1 h cap
    assert limits.device_key == "budget.max_cost_usd"
    budget = Budget(limits, spent=900)
    assert budget.summary()["spent_usd"] == pytest.approx(0.5)
    assert budget.summary()["left_usd"] == pytest.approx(0.5)
    assert budget.exhausted(1000) == "budget: $1.0000 used up; raise budget.max_cost_usd to go on"
    assert budget.no_room(1000) == (
        "budget: the next trial (about 1000 device-seconds) does not fit in the $0.5000 left; "
        "raise budget.max_cost_usd to go on"
    )


def result(steps: int, train: float, evaluation: float, setup: float = 1.0) -> TrialResult:
    return TrialResult(
        0,
        "lora",
        "COMPLETE",
        steps=steps,
        train_seconds=train,
        eval_seconds=evaluation,
        evaluations=1,
        setup_seconds=setup,
        trainable_params=1000,
    )


def test_cost_model_learns_the_step_time_law() -> None:
    """Step time grows with trainable params and differs by method; after a dozen trials
    the model predicts unseen configs within 15%."""
    rng = random.Random(0)

    def true_step(f: TrialFeatures) -> float:
        return (
            0.2
            * (f.trainable_params / 1000) ** 0.3
            * (1.6 if f.method == "dora" else 1.0)
            * (0.5 + 0.5 * f.layers_fraction)
        )

    model = CostModel.from_calibration(result(3, 0.6, 0.5), eval_rows_full=400, eval_rows_run=100)
    assert model.step_seconds == pytest.approx(0.2) and model.eval_seconds == pytest.approx(2.0)
    for _ in range(12):
        f = TrialFeatures(
            rng.choice(["lora", "dora"]), rng.randint(1000, 200000), rng.choice([0.5, 1.0])
        )
        model.observe(f, result(50, 50 * true_step(f) * rng.uniform(0.95, 1.05), 2.0))
    for f in (TrialFeatures("lora", 50000, 1.0), TrialFeatures("dora", 5000, 0.5)):
        assert model.step_time(f) == pytest.approx(true_step(f), rel=0.15)
    assert model.predict(TrialFeatures("lora", 1000, 1.0), 10, 2) == pytest.approx(
        1.0 + 10 * 0.2 + 4.0, rel=0.15
    )


def test_cost_model_learns_a_quantized_bases_step_time() -> None:
    """A searched ``model.quantization``: nf4 steps take twice as long here, and the model
    learns it as it learns a method's."""
    rng = random.Random(1)
    model = CostModel.from_calibration(result(3, 0.6, 0.5), eval_rows_full=400, eval_rows_run=100)
    for _ in range(12):
        storage = rng.choice(["none", "nf4"])
        f = TrialFeatures("lora", 1000, 1.0, quantization=storage)
        step = 0.2 * (2.0 if storage == "nf4" else 1.0) * rng.uniform(0.95, 1.05)
        model.observe(f, result(50, 50 * step, 2.0))
    nf4 = model.step_time(TrialFeatures("lora", 1000, 1.0, quantization="nf4"))
    plain = model.step_time(TrialFeatures("lora", 1000, 1.0))
    assert nf4 == pytest.approx(0.4, rel=0.15) and plain == pytest.approx(0.2, rel=0.15)
    assert features_of("lora", {}, 10, 6, quantization="nf4").quantization == "nf4"


def test_features_of_layer_subsets() -> None:
    assert features_of(
        "lora", {"layers_to_transform": [4, 5]}, 10, 6
    ).layers_fraction == pytest.approx(1 / 3)
    assert features_of(
        "ia3", {"target_modules": ["layer.5.key", "layer.5.value"]}, 10, 6
    ).layers_fraction == pytest.approx(1 / 6)
    assert features_of("prompt_tuning", {}, 10, 6).layers_fraction == 1.0


def test_rungs() -> None:
    assert rung_steps(90, 3) == (10, 30)
    assert rung_steps(50, 3) == (5, 16)
    assert rung_steps(6, 3) == (2,)
    assert rung_steps(2, 3) == ()
    assert accuracy_noise(400) == pytest.approx(0.025)


def test_early_stopping_pays_off_from_eta_times_min_trials() -> None:
    assert not pays_off(8.9, eta=3, min_trials=3)
    assert pays_off(9, eta=3, min_trials=3)
    assert pays_off(math.inf, eta=3, min_trials=3)


def test_trials_in_reach_of_each_limit() -> None:
    clock = FakeClock()
    budget = Budget(BudgetLimits(device_seconds=100), clock=clock)
    assert budget.trials_in_reach(10, slots=2) == pytest.approx(10)
    budget.reserve(0, 30)
    assert budget.trials_in_reach(10, slots=2) == pytest.approx(7)  # reserved is not free
    # wall time: each of the slots runs trials side by side, at its share of a device
    walled = Budget(BudgetLimits(wall_seconds=100), clock=clock, share=0.5)
    assert walled.trials_in_reach(10, slots=2) == pytest.approx(10)
    counted = Budget(BudgetLimits(trials=4, device_seconds=1e6), clock=clock)
    counted.settle(0, 1)
    assert counted.trials_in_reach(10, slots=1) == 3
    assert Budget(BudgetLimits(), clock=clock).trials_in_reach(10, slots=1) == math.inf


def test_rung_board_stops_only_dominated_trials() -> None:
    board = RungBoard(eta=3, min_trials=3, margin=0.02)
    assert board.report(0, 10, 0.80, 5000, 1.0)  # too few trials yet to judge
    assert board.report(1, 10, 0.78, 40000, 1.0)
    # Behind trial 0 by more than the noise, with more params and no faster: stopped.
    assert not board.report(2, 10, 0.60, 80000, 1.0)
    # Far behind but with the fewest params: nothing dominates it, it goes on.
    assert board.report(3, 10, 0.55, 1000, 1.0)
    # Behind by less than the evaluation noise: kept.
    assert board.report(4, 10, 0.79, 90000, 1.0)
    # Behind, but trains 3x faster than every more accurate trial: kept (cheaper end).
    assert board.report(5, 10, 0.62, 60000, 0.3)
    # The most accurate at a rung is always kept.
    assert board.report(6, 10, 0.95, 10**6, 9.0)
    assert board.stopped == {2: 10}


def test_rung_board_keeps_top_fraction() -> None:
    board = RungBoard(eta=2, min_trials=2, margin=0.0)
    board.report(0, 5, 0.9, 100, 1.0)
    assert board.report(1, 5, 0.9, 100, 1.0)  # ties with the best
    assert not board.report(2, 5, 0.5, 200, 1.0)
    assert board.stopped == {2: 5}
