"""Reusable contract suite for ``TrialExecutor`` implementations.

Subclass ``ExecutorContract`` in a test module and give it an ``executor`` fixture that
yields a fresh executor over the tiny BERT (its trials train a few steps). Every
executor the product ships runs the same checks (optuna's ``pytest_samplers`` style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import LORA

from peftsearch.trials import TrialJob, TrialResult


def drain(executor: Any) -> list[TrialResult]:
    results: list[TrialResult] = []
    while batch := executor.wait():
        results += batch
    return results


class ExecutorContract:
    def test_slots_is_positive(self, executor: Any) -> None:
        assert executor.slots >= 1

    def test_wait_with_nothing_in_flight_returns_nothing(self, executor: Any) -> None:
        assert executor.wait() == []

    def test_every_submitted_trial_comes_back_once(self, executor: Any, tmp_path: Path) -> None:
        numbers = list(range(executor.slots + 1))
        for number in numbers:
            executor.submit(TrialJob(number, "lora", LORA, 1e-3, str(tmp_path / str(number))))
        results = drain(executor)
        assert sorted(r.number for r in results) == numbers
        assert all(r.status == "COMPLETE" for r in results), [r.error for r in results]
        assert all((tmp_path / str(n) / "adapter_config.json").is_file() for n in numbers)

    def test_a_failing_trial_is_a_result_not_an_exception(self, executor: Any) -> None:
        bad = {**LORA, "target_modules": ["no_such_module"]}
        executor.submit(TrialJob(7, "lora", bad, 1e-3, None))
        (result,) = drain(executor)
        assert result.number == 7 and result.status == "FAIL" and result.error

    def test_the_allowance_is_honoured(self, executor: Any) -> None:
        executor.submit(TrialJob(3, "lora", LORA, 1e-3, None, max_seconds=1e-6))
        (result,) = drain(executor)
        assert result.status == "PRUNED"
        assert (result.error or "").startswith("stopped by the budget")

    def test_close_is_safe_twice(self, executor: Any) -> None:
        executor.close()
        executor.close()
