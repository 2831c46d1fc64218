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
    from peftsearch.search.executor import TrialExecutor
    from peftsearch.trials import Job, TrialResult

__all__ = ["TestScoring", "run_charged", "score_on_test"]


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
