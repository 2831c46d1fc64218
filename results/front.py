"""Rows for every trial and the Pareto front, read back from the study storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.search.records import TrialRecord, read_records
from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    import optuna

__all__ = [
    "COLUMNS",
    "describe_params",
    "display_name",
    "front_of",
    "metric_name",
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
    "eval_rows",
    "test_accuracy",
    "test_macro_f1",
    "test_rows",
    "metric",
    "token_accuracy",
    "eval_loss",
    "perplexity",
    "example",
    "precision",
    "gradient_checkpointing",
    "cached_layers",
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


METRIC_NAMES = {
    "accuracy": "accuracy",
    "exact_match": "exact match",
    "token_accuracy": "token accuracy",
    "eval_loss": "1/perplexity",
}


def metric_name(row: dict[str, Any]) -> str:
    """What a row's ``accuracy`` column measures, in words (``exact match``)."""
    metric = row.get("metric") or "accuracy"
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def _row(record: TrialRecord) -> dict[str, Any]:
    import json

    lm = record.result.get("metrics") or {}
    example = lm.get("example")
    return {
        "trial": record.number,
        "method": record.method,
        "params": describe_params(record.summary),
        "lr": record.summary.get("lr"),
        **{
            c: record.measurement(c)
            for c in (*MEASUREMENTS, "estimated_seconds", "steps", "eval_rows")
        },
        "test_accuracy": record.test.get("accuracy"),
        "test_macro_f1": record.test.get("macro_f1"),
        "test_rows": record.test.get("rows"),
        "metric": lm.get("metric", "accuracy" if record.method else None),
        "token_accuracy": lm.get("token_accuracy"),
        "eval_loss": lm.get("eval_loss"),
        "perplexity": lm.get("perplexity"),
        "example": json.dumps(example) if example else None,
        "precision": record.result.get("precision"),
        "gradient_checkpointing": record.result.get("gradient_checkpointing"),
        # blocks served from the frozen-layer cache (they ran without dropout)
        "cached_layers": record.result.get("cached_layers", 0),
        "status": record.status,
        "error": record.error,
        "description": plain_settings(record.method, record.summary) if record.method else "",
    }


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    return [_row(record) for record in read_records(study)]


def pareto_numbers(study: optuna.Study) -> list[int]:
    """Trial numbers on the front of the study's trained trials (``front_of``)."""
    return front_of(trial_rows(study))


def front_of(rows: list[dict[str, Any]]) -> list[int]:
    """Trained, COMPLETE trials that no trial *on the front* dominates once evaluation and
    timing noise are allowed for (the rule is in ``results/noise.py``). Failed, pruned
    and infeasible trials never enter it.

    Dominance within the noise is not transitive: A may beat B, and B beat C, while A
    does not beat C. Counting a trial out because a trial that is itself out beats it
    would hide C, even when C is clearly better than everything left (the most accurate
    trial of a demo went missing that way). So trials are decided once every trial that
    dominates them is: a trial joins the front unless a front member dominates it."""
    from peftsearch.results.noise import Tolerances, dominates

    trained = sorted(
        (
            r
            for r in rows
            if r["status"] == "COMPLETE"
            and r["accuracy"] is not None
            and r["trainable_params"] is not None
        ),
        key=lambda r: r["trial"],
    )
    tolerances = Tolerances.from_rows(rows)
    beaten_by = {
        r["trial"]: [o["trial"] for o in trained if o is not r and dominates(o, r, tolerances)]
        for r in trained
    }
    front: set[int] = set()
    decided: set[int] = set()
    waiting = [r["trial"] for r in trained]
    while waiting:
        ready = [t for t in waiting if decided.issuperset(beaten_by[t])]
        # the relation has no cycles (tests/test_noise.py); were one to appear, the lowest
        # trial number would be decided first
        for trial in ready or waiting[:1]:
            if not front.intersection(beaten_by[trial]):
                front.add(trial)
            decided.add(trial)
        waiting = [t for t in waiting if t not in decided]
    return sorted(front)
