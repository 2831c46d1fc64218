"""Rows for every trial and the Pareto front, read back from the study storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    import optuna

__all__ = ["COLUMNS", "describe_params", "pareto_numbers", "trial_rows"]

COLUMNS = ("trial", "method", "params", "lr", *MEASUREMENTS, "status", "error")


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
                **{c: result.get(c) for c in MEASUREMENTS},
                "status": trial.state.name,
                "error": result.get("error") or interrupted.get(str(trial.number)),
            }
        )
    return rows


def pareto_numbers(study: optuna.Study) -> list[int]:
    """Trial numbers on the front. Optuna's ``best_trials`` counts only COMPLETE trials,
    so failed and pruned ones never enter it."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return []
    return sorted(t.number for t in study.best_trials)
