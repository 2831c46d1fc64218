"""Noise-aware comparison of trials: what the data can and cannot tell apart.

An accuracy measured on n evaluation rows has a binomial standard error of
sqrt(p(1-p)/n): about 2 points at n = 400. Device time varies by a few percent from run
to run, and more on a shared machine. A front that takes every nominal difference at face
value keeps trials that are beaten by 4 points at equal size because they happened to
run 3 seconds faster, and a recommendation that picks 0.792 over 0.782 at 15x the
parameters is picking noise.

The rule (deterministic, from the data alone):

- Two accuracies differ **clearly** when the gap exceeds one standard error of the
  difference, sqrt(p_a(1-p_a)/n_a + p_b(1-p_b)/n_b); otherwise they are **tied**.
- Two costs differ clearly when they differ by more than ``cost_tolerance`` (relative):
  the median relative error of the cost model on this study's finished trials (which
  includes run-to-run timing noise), clamped to [5%, 25%]; 5% when nothing was estimated.
- Trainable parameters are exact counts: any difference is clear.
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
from typing import Any

__all__ = ["Tolerances", "accuracy_error", "dominates", "tied"]

MIN_COST_TOLERANCE = 0.05
MAX_COST_TOLERANCE = 0.25


def accuracy_error(row: dict[str, Any]) -> float | None:
    """The standard error of a row's accuracy, from the rows it was measured on."""
    accuracy, rows = row.get("accuracy"), row.get("eval_rows")
    if accuracy is None or not rows:
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


def dominates(a: dict[str, Any], b: dict[str, Any], tolerances: Tolerances) -> bool:
    """``a`` is nowhere worse than ``b`` beyond the noise and clearly better somewhere."""
    gap = tolerances.accuracy_gap(a, b)
    slack = tolerances.cost
    not_worse = (
        a["accuracy"] >= b["accuracy"] - gap
        and a["trainable_params"] <= b["trainable_params"]
        and a["cost_usd"] <= b["cost_usd"] * (1 + slack)
    )
    clearly_better = (
        a["accuracy"] > b["accuracy"] + gap
        or a["trainable_params"] < b["trainable_params"]
        or a["cost_usd"] * (1 + slack) < b["cost_usd"]
    )
    return not_worse and clearly_better
