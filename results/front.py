"""Rows for every trial and the Pareto front, read back from the study storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    import optuna

__all__ = ["COLUMNS", "describe_params", "pareto_numbers", "trial_rows"]

COLUMNS = (
    "trial",
    "method",
    "params",
    "lr",
    *MEASUREMENTS,
    "estimated_seconds",
    "steps",
    "status",
    "error",
)


def describe_params(summary: dict[str, Any]) -> str:
    """``rank=8 alpha=16 targets=qv layers=top-half`` (lr has its own column)."""
    return " ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if k != "lr"
    )


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    interrupted = study.user_attrs.get("interrupted_trials", {})
    rows = []
    for trial in study.get_trials(deepcopy=False):
        result = trial.user_attrs.get("result", {})
        summary = trial.user_attrs.get("summary", {})
        rows.append(
            {
                "trial": trial.number,
                "method": trial.user_attrs.get("method", result.get("method", "")),
                "params": describe_params(summary),
                "lr": summary.get("lr"),
                **{c: result.get(c) for c in (*MEASUREMENTS, "estimated_seconds", "steps")},
                "status": _status(trial),
                "error": result.get("error") or interrupted.get(str(trial.number)),
            }
        )
    return rows


def _status(trial: optuna.trial.FrozenTrial) -> str:
    if trial.user_attrs.get("infeasible"):
        return "INFEASIBLE"
    return str(trial.state.name)


def pareto_numbers(study: optuna.Study) -> list[int]:
    """Trial numbers on the front: trained, COMPLETE trials that no other such trial
    dominates. Failed, pruned and infeasible trials never enter it."""
    from peftsearch.search.study import DIRECTIONS

    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE" and not t.user_attrs.get("infeasible")
    ]
    signs = [1.0 if d == "maximize" else -1.0 for d in DIRECTIONS]
    scored = [(t.number, [s * v for s, v in zip(signs, t.values, strict=True)]) for t in trials]
    return sorted(
        number
        for number, mine in scored
        if not any(_dominates(other, mine) for n, other in scored if n != number)
    )


def _dominates(a: list[float], b: list[float]) -> bool:
    """``a`` is no worse everywhere and better somewhere (all objectives maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )
