"""Rows for every trial and the Pareto front, read back from the study storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.search.records import DIRECTIONS, TrialRecord, read_records
from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    import optuna

__all__ = [
    "COLUMNS",
    "describe_params",
    "display_name",
    "pareto_numbers",
    "plain_settings",
    "trial_rows",
]

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
    "description",
)


def describe_params(summary: dict[str, Any]) -> str:
    """``rank=8 alpha=16 targets=qv layers=top-half`` (lr has its own column)."""
    return " ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in summary.items()
        if k != "lr"
    )


def display_name(method: str) -> str:
    """The method's own name for people (``LoRA``), from its plug-in."""
    from peftsearch.spaces import get_method

    try:
        return get_method(method).display_name
    except KeyError:  # a study made with a plug-in that is not installed here
        return method


def plain_settings(method: str, summary: dict[str, Any]) -> str:
    """``LoRA rank 8 on all attention projections in every layer, learning rate 6.7e-03``."""
    from peftsearch.spaces import get_method

    try:
        words = get_method(method).describe(summary)
    except KeyError:
        words = describe_params(summary)
    text = " ".join(part for part in (display_name(method), words) if part)
    if summary.get("lr"):
        text += f", learning rate {summary['lr']:.1e}"
    return text


def _row(record: TrialRecord) -> dict[str, Any]:
    return {
        "trial": record.number,
        "method": record.method,
        "params": describe_params(record.summary),
        "lr": record.summary.get("lr"),
        **{c: record.measurement(c) for c in (*MEASUREMENTS, "estimated_seconds", "steps")},
        "status": record.status,
        "error": record.error,
        "description": plain_settings(record.method, record.summary) if record.method else "",
    }


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [_row(record) for record in read_records(study)]


def pareto_numbers(study: optuna.Study) -> list[int]:
    """Trial numbers on the front: trained, COMPLETE trials that no other such trial
    dominates. Failed, pruned and infeasible trials never enter it."""
    trained = [r for r in read_records(study) if r.trained]
    signs = [1.0 if d == "maximize" else -1.0 for d in DIRECTIONS]
    scored = [
        (r.number, [s * v for s, v in zip(signs, r.values or (), strict=True)]) for r in trained
    ]
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
