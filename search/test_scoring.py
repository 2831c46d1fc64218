"""Scoring the front on the held-out test split, once, after the search.

It runs after the search, so the test set never guides a choice. Each scoring is device
time: it is charged to the budget and to the study (later runs count it), and skipped
when the budget has no room left for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peftsearch.search import records

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.budget import Budget
    from peftsearch.search.cost_model import CostModel
    from peftsearch.search.executor import TrialExecutor
    from peftsearch.trials import Job, PreparedData, TrialResult

__all__ = [
    "TestScoring",
    "planned_test_seconds",
    "run_charged",
    "score_on_test",
    "test_scoring_seconds",
]

# front trials the budget plans to score on data.test (it keeps their cost back)
PLANNED_TEST_SCORES = 5


def test_scoring_seconds(eval_seconds: float, test_rows: int, eval_rows: int) -> float:
    """Device-seconds one scoring on ``test_rows`` takes, from an evaluation's
    ``eval_seconds`` on ``eval_rows``."""
    return eval_seconds * test_rows / max(1, eval_rows)


def planned_test_seconds(cost_model: CostModel | None, data: PreparedData) -> float:
    """What the budget keeps back to score the front on ``data.test`` after the search:
    ``PLANNED_TEST_SCORES`` scorings (0 without a test split or a cost model)."""
    if data.test is None or cost_model is None:
        return 0.0
    one = test_scoring_seconds(cost_model.eval_seconds, len(data.test), len(data.eval))
    return PLANNED_TEST_SCORES * one


@dataclass
class TestScoring:
    scored: int = 0
    skipped: int = 0  # no budget left for them
    failed: dict[int, str] = field(default_factory=dict)


def run_charged(
    study: optuna.Study, executor: TrialExecutor, job: Job, budget: Budget | None
) -> TrialResult:
    """Run one job outside the trials and charge its device time to the budget and to
    the study, so later runs count it too."""
    executor.submit(job)
    results: list[TrialResult] = []
    while not results:
        results = executor.wait()
    records.add_overhead(study, results[0].device_seconds)
    if budget is not None:
        budget.charge(results[0].device_seconds)
    return results[0]


def score_on_test(
    study: optuna.Study,
    executor: TrialExecutor,
    front: list[int],
    adapter_of: Callable[[int], dict[str, bytes] | None],
    budget: Budget | None,
    estimate: float,
) -> TestScoring:
    """Score each front trial not scored yet whose adapter ``adapter_of`` finds (its
    files travel to the worker: its disk need not hold the study folder), each
    estimated at ``estimate`` device-seconds."""
    from peftsearch.trials import TestScoringJob

    stored = records.read_records(study)
    done = {r.number for r in stored if r.test}
    bases = {r.number: r.measurement("quantization") or "none" for r in stored}
    outcome = TestScoring()
    for number in (n for n in front if n not in done):
        adapter = adapter_of(number)
        if adapter is None:
            continue
        if budget is not None and not budget.fits(estimate):
            outcome.skipped += 1
            continue
        job = TestScoringJob(number, adapter, quantization=bases.get(number, "none"))
        result = run_charged(study, executor, job, budget)
        if result.status == "COMPLETE":
            records.save_test_score(study, number, result)
            outcome.scored += 1
        else:
            outcome.failed[number] = str(result.error)
    return outcome
