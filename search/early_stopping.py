"""Multi-fidelity early stopping for a multi-objective search.

Optuna cannot prune a multi-objective study (``Trial.report`` raises there) and Ray
Tune's schedulers take one metric, so the rule lives here. Trials are evaluated at
rungs (``max_steps / eta**k``, successive-halving style); at each rung a trial reports
its accuracy, and this board decides whether it goes on.

Why the rule is sound for accuracy x trainable params x cost: a trial's trainable
params are known exactly before training and never change, and its cost grows with
its steps at a rate measured in its first steps. Accuracy is the only objective still
uncertain at a rung. A trial is stopped only when it is outside the top ``1/eta`` by
accuracy at that rung *and* some other trial at the same rung beats it on accuracy by
more than the evaluation's noise while having no more params and training no slower.
Such a trial can only reach the final front if its accuracy overtakes a trial that
already dominates it on the known objectives, which partial results make unlikely; and
because only dominated trials stop, the small-params and cheap ends of the front are
never pruned away just for being less accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RungBoard", "accuracy_noise", "pays_off", "rung_steps", "rungs_that_pay"]


def rung_steps(max_steps: int, eta: int, rungs: int = 2) -> tuple[int, ...]:
    """Steps before the last at which trials are judged: max_steps/eta^k, k = rungs..1."""
    steps = {max_steps // eta**k for k in range(rungs, 0, -1)}
    return tuple(sorted(s for s in steps if 1 <= s < max_steps))


def pays_off(trials: float, eta: int, min_trials: int) -> bool:
    """Whether judging trials at rungs can pay for the rung evaluations in a run of about
    ``trials`` trials: from ``eta * min_trials`` on.

    A rung stops nothing until ``min_trials`` trials reached it, and then at most the
    trials outside its top ``1/eta``; every trial pays the rung's evaluation. In the
    replayed tables (benchmarks/search_variants.py --horizon) early stopping lost
    hypervolume in searches of 4 to 7 trials and broke even at about 10.
    """
    return trials >= eta * min_trials


def rungs_that_pay(
    rungs: tuple[int, ...], trials: float, limit: str, eta: int, min_trials: int
) -> tuple[tuple[int, ...], str | None]:
    """``rungs``, or none when a run of about ``trials`` trials (as ``limit`` allows) is
    too short for them to pay (``pays_off``), with a line that says so."""
    # under one trial: nothing will run, and the loop's stop line says why
    if not rungs or trials < 1 or pays_off(trials, eta, min_trials):
        return rungs, None
    return (), (
        f"Early stopping is off for this run: {limit} allows about {trials:.0f} trials, and "
        f"judging trials at a rung pays off from {eta * min_trials} "
        "(search.early_stopping.eta x min_trials)."
    )


def accuracy_noise(eval_rows: int) -> float:
    """One standard error of an accuracy measured on ``eval_rows`` rows (worst case p=0.5)."""
    return math.sqrt(0.25 / max(1, eval_rows))


@dataclass(frozen=True)
class _Report:
    accuracy: float
    params: int
    seconds_per_step: float


class RungBoard:
    """Rung results of every trial; answers keep-going or stop. Runs in the driver, or as
    a Ray actor that workers call (one board per search)."""

    SLOWER = 1.1  # a peer training up to 10% slower still counts as "no slower" (timing noise)

    def __init__(self, eta: int = 3, min_trials: int = 3, margin: float = 0.0) -> None:
        self.eta = eta
        self.min_trials = min_trials
        self.margin = margin
        self.rungs: dict[int, dict[int, _Report]] = {}
        self.stopped: dict[int, int] = {}

    def report(
        self, trial: int, step: int, accuracy: float, params: int, seconds_per_step: float
    ) -> bool:
        """Record a rung result; True means keep training."""
        reports = self.rungs.setdefault(step, {})
        mine = _Report(accuracy, params, seconds_per_step)
        reports[trial] = mine
        if len(reports) < self.min_trials:
            return True
        ranked = sorted((r.accuracy for r in reports.values()), reverse=True)
        keep = max(1, math.ceil(len(ranked) / self.eta))
        if accuracy >= ranked[keep - 1]:
            return True
        dominated = any(
            other.accuracy > mine.accuracy + self.margin
            and other.params <= mine.params
            and other.seconds_per_step <= mine.seconds_per_step * self.SLOWER
            for number, other in reports.items()
            if number != trial
        )
        if dominated:
            self.stopped[trial] = step
        return not dominated
