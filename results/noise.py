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
  error e combines the evaluation's (what the task measured, ``accuracy_se``: a bootstrap
  over sentences for entity F1; else binomial, sqrt(p(1-p)/n)) with the training seed's:
  e^2 = e_eval^2 + s^2 / k, where k is the number of training seeds the row's accuracy
  averages (``seeds``; confirmation re-runs front configs, search/confirm.py) and s^2
  the study's pooled seed variance, measured on its confirmed configs (0 until some
  are). The eval rows are the same for every seed, so their error does not shrink.
- A trial **beats** the no-adapter baseline when its accuracy is above the baseline's by
  more than one standard error of the difference (``beats``); one that does not never
  enters the front.
- Two costs differ clearly when they differ by more than the cost tolerance (relative):
  the timing noise measured on this study, the larger of (a) the median relative error
  of the cost model's estimates on its finished trials (the model starts from the
  study's calibration run and learns from its trials) and (b) the spread of trials of
  identical shape (method, trainable parameters, steps, base: they differ in learning
  rate only, which costs nothing), one standard deviation of the relative difference of
  two such runs; with neither measured (no budget, no repeated shape), (c) the median
  step-time jitter of its trials (``step_jitter``); at most 25%.
- Trainable parameters and adapter bytes are exact counts: any difference is clear.
  Forgetting differs clearly beyond one standard error of the difference, from the
  error each trial measured (``measured``). Other objectives differ clearly beyond a
  fixed 5% (``relative``).
- Trial A **dominates** B when A is nowhere worse than B beyond the noise and clearly
  better on at least one objective. This relation has no cycles but is not transitive,
  so the front is built in its order: a trained trial is on the front unless a trial on
  the front dominates it (``results.front.verdict``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftsearch.trials.result import score_error

__all__ = [
    "Tolerances",
    "accuracy_error",
    "beats",
    "clearly_better",
    "dominates",
    "seed_variance",
    "tied",
]

if TYPE_CHECKING:
    from peftsearch.search.objectives import Objective

RELATIVE_TOLERANCE = 0.05  # objectives whose noise is "relative" (adapter size aside)
MAX_COST_TOLERANCE = 0.25


def accuracy_error(row: dict[str, Any], seed_var: float = 0.0) -> float | None:
    """The standard error of a row's accuracy: the evaluation's (the task's own measure
    where it has one, else binomial over the rows it was measured on) combined with the
    training seed's, ``seed_var`` over the row's number of seeds."""
    accuracy, rows = row.get("accuracy"), row.get("eval_rows")
    if accuracy is None:
        return None
    evaluation = score_error(accuracy, rows, row.get("accuracy_se"))
    if evaluation is None:
        return math.sqrt(seed_var) if seed_var else None
    seeds = int(row.get("seeds") or 1)
    return math.sqrt(evaluation * evaluation + seed_var / seeds)


def seed_variance(rows: list[dict[str, Any]]) -> float:
    """The pooled variance of accuracy between training seeds of one config, over the
    rows measured at several seeds (``seeds``, ``accuracy_sd``); 0 when none was."""
    weighted = [
        ((int(r["seeds"]) - 1), float(r["accuracy_sd"]) ** 2)
        for r in rows
        if int(r.get("seeds") or 1) > 1 and r.get("accuracy_sd") is not None
    ]
    freedom = sum(k for k, _ in weighted)
    return sum(k * v for k, v in weighted) / freedom if freedom else 0.0


def _shape_spread(rows: list[dict[str, Any]]) -> float | None:
    """One standard deviation of the relative cost difference of two trials of identical
    shape (they differ in learning rate only), pooled over the study's groups of them."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        if r.get("status") == "COMPLETE" and r.get("cost_usd") and r.get("steps"):
            shape = (r["method"], r.get("trainable_params"), r["steps"], r.get("quantization"))
            groups.setdefault(shape, []).append(float(r["cost_usd"]))
    squares, freedom = 0.0, 0
    for costs in (c for c in groups.values() if len(c) > 1):
        mean = statistics.fmean(costs)
        squares += sum((c / mean - 1) ** 2 for c in costs)
        freedom += len(costs) - 1
    return math.sqrt(2 * squares / freedom) if freedom else None


@dataclass(frozen=True)
class Tolerances:
    """How large a difference must be to count, per objective, measured on a study."""

    cost: float = RELATIVE_TOLERANCE
    seed_var: float = 0.0  # the study's pooled training-seed variance of accuracy

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Tolerances:
        errors = [
            abs(r["device_seconds"] / r["estimated_seconds"] - 1)
            for r in rows
            if r.get("status") == "COMPLETE"
            and r.get("estimated_seconds")
            and r.get("device_seconds")
        ]
        measured = [statistics.median(errors)] if errors else []
        spread = _shape_spread(rows)
        if spread is not None:
            measured.append(spread)
        if not measured:
            jitters = [float(r["step_jitter"]) for r in rows if r.get("step_jitter")]
            measured = [statistics.median(jitters)] if jitters else [RELATIVE_TOLERANCE]
        return cls(cost=min(MAX_COST_TOLERANCE, max(measured)), seed_var=seed_variance(rows))

    def error(self, row: dict[str, Any]) -> float | None:
        """The standard error of ``row``'s accuracy, the seed's share included."""
        return accuracy_error(row, self.seed_var)

    def accuracy_gap(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """One standard error of ``a``'s accuracy minus ``b``'s (0 without eval sizes)."""
        errors = [self.error(a), self.error(b)]
        return math.sqrt(sum(e * e for e in errors if e is not None))


def beats(row: dict[str, Any], baseline: dict[str, Any], tolerances: Tolerances) -> bool:
    """``row``'s accuracy is above the no-adapter ``baseline``'s beyond the noise (the
    baseline has no training seed: only its evaluation error counts)."""
    gap = math.sqrt(
        sum(e * e for e in (tolerances.error(row), accuracy_error(baseline)) if e is not None)
    )
    return float(row["accuracy"]) > float(baseline["accuracy"]) + gap


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
    if objective.noise == "measured":
        errors = (a.get(f"{objective.column}_se"), b.get(f"{objective.column}_se"))
        gap = math.sqrt(sum(float(e) ** 2 for e in errors if e is not None))
        return x < y - gap, x > y + gap
    relative = {"timing": tolerances.cost, "relative": RELATIVE_TOLERANCE}.get(objective.noise)
    if relative is None:  # exact
        return x < y, x > y
    return x * (1 + relative) < y, x > y * (1 + relative)


def clearly_better(
    objective: Objective, a: dict[str, Any], b: dict[str, Any], tolerances: Tolerances
) -> bool:
    """``a`` is better than ``b`` on ``objective`` beyond the noise."""
    return _beyond(objective, a, b, tolerances)[1]


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
