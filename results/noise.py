"""Noise-aware comparison of trials: what the data can and cannot tell apart.

An accuracy measured on n evaluation rows has a binomial standard error of
sqrt(p(1-p)/n): about 2 points at n = 400. Device time varies by a few percent from run
to run, and more on a shared machine. A front that takes every nominal difference at face
value keeps trials that are beaten by 4 points at equal size because they happened to
run 3 seconds faster, and a recommendation that picks 0.792 over 0.782 at 15x the
parameters is picking noise.

The rule (deterministic, from the data alone), per objective (search/objectives.py says
which noise each has):

- Two accuracies (the task's metric) differ **clearly** when the gap exceeds one standard
  error of the difference, sqrt(e_a^2 + e_b^2); otherwise they are **tied**. A score's
  error e is what the task measured (``accuracy_se``: a bootstrap over sentences for
  entity F1), else binomial, sqrt(p(1-p)/n).
- Two costs differ clearly when they differ by more than ``cost_tolerance`` (relative):
  the median relative error of the cost model on this study's finished trials (which
  includes run-to-run timing noise), clamped to [5%, 25%]; 5% when nothing was estimated.
- Trainable parameters are exact counts: any difference is clear. Other objectives
  differ clearly beyond a fixed 5% (``relative``) or at all (``exact``).
- Trial A **dominates** B when A is nowhere worse than B beyond the noise and clearly
  better on at least one objective. This relation has no cycles but is not transitive,
  so the front is built in its order: a trained trial is on the front unless a trial on
  the front dominates it (``results.front.front_of``). A trial no other dominates is
  always on it, so the front is never empty.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

__all__ = ["Tolerances", "accuracy_error", "dominates", "tied"]

if TYPE_CHECKING:
    from peftsearch.search.objectives import Objective

MIN_COST_TOLERANCE = 0.05
MAX_COST_TOLERANCE = 0.25


def accuracy_error(row: dict[str, Any]) -> float | None:
    """The standard error of a row's accuracy: the task's own measure of it where it has
    one, else binomial over the rows it was measured on."""
    accuracy, rows = row.get("accuracy"), row.get("eval_rows")
    if accuracy is None:
        return None
    if row.get("accuracy_se") is not None:
        return float(row["accuracy_se"])
    if not rows:
        return None
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / rows)


@dataclass(frozen=True)
class Tolerances:
    """How large a difference must be to count, per objective."""

    cost: float = MIN_COST_TOLERANCE

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Tolerances:
        errors = [
            abs(r["device_seconds"] / r["estimated_seconds"] - 1)
            for r in rows
            if r.get("status") == "COMPLETE"
            and r.get("estimated_seconds")
            and r.get("device_seconds")
        ]
        spread = statistics.median(errors) if errors else MIN_COST_TOLERANCE
        return cls(cost=min(MAX_COST_TOLERANCE, max(MIN_COST_TOLERANCE, spread)))

    def accuracy_gap(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """One standard error of ``a``'s accuracy minus ``b``'s (0 without eval sizes)."""
        errors = [accuracy_error(a), accuracy_error(b)]
        return math.sqrt(sum(e * e for e in errors if e is not None))


def tied(a: dict[str, Any], b: dict[str, Any], tolerances: Tolerances) -> bool:
    """Accuracies the evaluation cannot tell apart."""
    return abs(a["accuracy"] - b["accuracy"]) <= tolerances.accuracy_gap(a, b)


def _beyond(
    objective: Objective, a: dict[str, Any], b: dict[str, Any], tolerances: Tolerances
) -> tuple[bool, bool]:
    """(``a`` worse than ``b`` beyond the noise, ``a`` better beyond it) on one objective."""
    x, y = float(a[objective.column]), float(b[objective.column])
    if not objective.maximize:
        x, y = y, x  # "a better" is now "x above y", as for a maximised objective
    if objective.noise == "score":
        gap = tolerances.accuracy_gap(a, b)
        return x < y - gap, x > y + gap
    relative = {"timing": tolerances.cost, "relative": MIN_COST_TOLERANCE}.get(objective.noise)
    if relative is None:  # exact
        return x < y, x > y
    return x * (1 + relative) < y, x > y * (1 + relative)


def dominates(
    a: dict[str, Any],
    b: dict[str, Any],
    tolerances: Tolerances,
    objectives: tuple[Objective, ...] | None = None,
) -> bool:
    """``a`` is nowhere worse than ``b`` beyond the noise and clearly better somewhere,
    over ``objectives`` (default: accuracy, trainable params, cost)."""
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    verdicts = [
        _beyond(objective, a, b, tolerances)
        for objective in objectives or objectives_of(DEFAULT_OBJECTIVES)
    ]
    return not any(worse for worse, _ in verdicts) and any(better for _, better in verdicts)
