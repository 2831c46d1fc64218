"""Rows for every trial and the Pareto front, read back from the study storage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftsearch.search.records import TrialRecord, read_records
from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.objectives import Objective

__all__ = [
    "Verdict",
    "baseline_bound",
    "best_trial_line",
    "columns",
    "describe_params",
    "display_name",
    "front_of",
    "metric_columns",
    "metric_name",
    "most_accurate",
    "pareto_numbers",
    "plain_settings",
    "trial_rows",
    "unit_of",
    "verdict",
]


def metric_columns() -> tuple[str, ...]:
    """The metrics trial rows show beside the searched one: every registered task's."""
    from peftsearch.trials.tasks import get_task, task_names

    columns = (c for name in task_names() for c in get_task(name).columns)
    return tuple(dict.fromkeys(columns))


# The study's rows: what every task shares, then each task's own metrics.
BASE_COLUMNS = (
    "trial",
    "method",
    "params",
    "lr",
    *MEASUREMENTS,
    "estimated_seconds",
    "steps",
    "eval_rows",
    "task",
    "metric",  # what ``accuracy`` measures: the task's searched metric
    "accuracy_se",  # its standard error, where the task measures one (else binomial)
    # confirmation (search/confirm.py): the training seeds ``accuracy`` averages, its
    # spread between them, and the search's own single run
    "seeds",
    "accuracy_mean",
    "accuracy_sd",
    "search_accuracy",
    "test_accuracy",
    "test_rows",
)
TAIL_COLUMNS = (
    "quantization",
    "precision",
    "gradient_checkpointing",
    "micro_batch_size",
    "memory_note",
    "peak_allocated_mb",
    "step_jitter",
    "forgetting_seconds",
    "reference_seconds",
    "cached_layers",
    "status",
    "error",
    "description",
)


def objective_columns() -> tuple[str, ...]:
    """Columns of registered objectives that are not among the shared ones."""
    from peftsearch.search.objectives import get_objective, objective_names

    wanted = (get_objective(name).column for name in objective_names())
    return tuple(c for c in dict.fromkeys(wanted) if c not in BASE_COLUMNS)


def columns(rows: list[dict[str, Any]] | None = None) -> tuple[str, ...]:
    """The columns of ``rows`` (trials.csv, the API's tables): the shared ones and the
    metrics and objectives some row has, so a classifier's table carries no generation
    columns."""
    shown = [
        c
        for c in (*objective_columns(), "forgetting_se", *metric_columns())
        if rows is None or any(r.get(c) is not None for r in rows)
    ]
    return (*BASE_COLUMNS, *dict.fromkeys(shown), *TAIL_COLUMNS)


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


def unit_of(row: dict[str, Any]) -> str:
    """What the row's evaluation counted, in its task's words (``prompts``)."""
    from peftsearch.trials.tasks import get_task

    try:
        return get_task(str(row.get("task"))).unit
    except KeyError:  # a study from before tasks were recorded, or a task not installed
        return "rows"


def metric_name(row: dict[str, Any]) -> str:
    """What a row's ``accuracy`` column measures, in words (``exact match``)."""
    from peftsearch.trials.tasks import metric_label

    return metric_label(row.get("metric"))


def _cell(value: Any) -> Any:
    import json

    return json.dumps(value) if isinstance(value, dict | list) else value


def _row(record: TrialRecord) -> dict[str, Any]:
    import statistics

    metrics = record.result.get("metrics") or {}
    scores = record.seed_scores
    measured = {
        c: record.measurement(c) for c in (*MEASUREMENTS, "estimated_seconds", "steps", "eval_rows")
    }
    if len(scores) > 1:  # the front and the noise rule use the mean over the seeds
        measured["accuracy"] = statistics.fmean(scores)
    return {
        "trial": record.number,
        "method": record.method,
        "params": describe_params(record.summary),
        "lr": record.summary.get("lr"),
        **measured,
        "task": record.result.get("task"),
        "metric": metrics.get("metric"),
        "accuracy_se": metrics.get("score_error"),
        "seeds": len(scores) or None,
        "accuracy_mean": statistics.fmean(scores) if scores else None,
        "accuracy_sd": statistics.stdev(scores) if len(scores) > 1 else None,
        "search_accuracy": record.measurement("accuracy"),
        "test_accuracy": record.test.get("accuracy"),
        "test_rows": record.test.get("rows"),
        **{c: _cell(metrics.get(c)) for c in metric_columns()},
        **{c: record.measurement(c) for c in objective_columns()},
        "precision": record.result.get("precision"),
        "quantization": record.result.get("quantization", "none"),
        "peak_allocated_mb": record.result.get("peak_allocated_mb"),
        "step_jitter": record.result.get("step_jitter"),
        "forgetting_se": record.result.get("forgetting_se"),
        "forgetting_seconds": record.result.get("forgetting_seconds"),
        "reference_seconds": record.result.get("reference_seconds"),
        "micro_batch_size": record.result.get("micro_batch_size"),
        "memory_note": record.result.get("memory_note"),
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
    """Trial numbers on the front of the study's trained trials (``front_of``), over the
    objectives the study was created with, bounded by its no-adapter baseline."""
    from peftsearch.search.objectives import study_objectives
    from peftsearch.search.records import baseline_of

    return front_of(trial_rows(study), study_objectives(study), baseline_of(study))


def front_of(
    rows: list[dict[str, Any]],
    objectives: tuple[Objective, ...] | None = None,
    baseline: dict[str, Any] | None = None,
) -> list[int]:
    """The trial numbers of ``verdict(rows, objectives, baseline).front``."""
    return verdict(rows, objectives, baseline).front


@dataclass(frozen=True)
class Verdict:
    """Where each trained trial stands: on the ``front``, ``beaten`` by the no-adapter
    baseline, or dominated by the front members in ``dominated_by``."""

    front: list[int]
    beaten: set[int] = field(default_factory=set)
    dominated_by: dict[int, list[int]] = field(default_factory=dict)
    bound: dict[str, Any] | None = None  # the baseline entry that bounds the front


def baseline_bound(baseline: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best of a study's no-adapter scores (the base model as it is, or a model-free
    answer such as the majority class), as a row the noise rule compares: what every
    trial on the front must beat."""
    entries = [b for b in (baseline or {}).values() if b.get("accuracy") is not None]
    return max(entries, key=lambda b: b["accuracy"]) if entries else None


def verdict(
    rows: list[dict[str, Any]],
    objectives: tuple[Objective, ...] | None = None,
    baseline: dict[str, Any] | None = None,
) -> Verdict:
    """Trained, COMPLETE trials that beat the ``baseline`` (``baseline_bound``) beyond
    the noise and that no trial *on the front* dominates once evaluation, training-seed
    and timing noise are allowed for (the rule is in ``results/noise.py``). Failed,
    pruned and infeasible trials never enter it; with no trial beating the baseline it
    is empty.

    Dominance within the noise is not transitive: A may beat B, and B beat C, while A
    does not beat C. Counting a trial out because a trial that is itself out beats it
    would hide C, even when C is clearly better than everything left (the most accurate
    trial of a demo went missing that way). So trials are decided once every trial that
    dominates them is: a trial joins the front unless a front member dominates it."""
    from peftsearch.results.noise import Tolerances, beats, dominates
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    objectives = objectives or objectives_of(DEFAULT_OBJECTIVES)
    tolerances = Tolerances.from_rows(rows)
    bound = baseline_bound(baseline)
    trained = sorted(
        (
            r
            for r in rows
            if r["status"] == "COMPLETE" and all(r.get(o.column) is not None for o in objectives)
        ),
        key=lambda r: r["trial"],
    )
    beaten = {r["trial"] for r in trained if bound is not None and not beats(r, bound, tolerances)}
    trained = [r for r in trained if r["trial"] not in beaten]
    beaten_by = {
        r["trial"]: [
            o["trial"] for o in trained if o is not r and dominates(o, r, tolerances, objectives)
        ]
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
    dominated = {t: sorted(front.intersection(by)) for t, by in beaten_by.items() if t not in front}
    return Verdict(sorted(front), beaten, dominated, bound)


def most_accurate(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete trial with the highest accuracy (the earlier one of equals)."""
    trained = [r for r in rows if r["status"] == "COMPLETE" and r.get("accuracy") is not None]
    return max(trained, key=lambda r: (r["accuracy"], -r["trial"]), default=None)


def best_trial_line(
    rows: list[dict[str, Any]],
    objectives: tuple[Objective, ...] | None = None,
    baseline: dict[str, Any] | None = None,
    judged: Verdict | None = None,
) -> str | None:
    """The most accurate trial measured and, when the front leaves it out, why, in one
    line: "tied with trial 10 within noise; trial 10 is smaller". None before any.
    ``judged``: the rows' verdict, when the caller has it already."""
    from peftsearch.results.noise import Tolerances, clearly_better
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    objectives = objectives or objectives_of(DEFAULT_OBJECTIVES)
    best = most_accurate(rows)
    if best is None:
        return None
    trained = [r for r in rows if r["status"] == "COMPLETE" and r.get("accuracy") is not None]
    name = metric_name(best)
    head = f"Most accurate trial: {best['trial']} ({name} {best['accuracy']:.3f})"
    judged = judged or verdict(rows, objectives, baseline)
    if best["trial"] in judged.front:
        return f"{head}, on the front."
    if best["trial"] in judged.beaten and judged.bound is not None:
        return (
            f"{head}; not on the front: it does not beat the model with no adapter "
            f"({judged.bound['accuracy']:.3f}) beyond the noise."
        )
    by = {r["trial"]: r for r in trained}
    winners = [by[n] for n in judged.dominated_by.get(best["trial"], []) if n in by]
    if not winners:
        return f"{head}; not on the front."
    tolerances = Tolerances.from_rows(rows)
    winner = max(winners, key=lambda r: (r["accuracy"], -r["trial"]))
    words = [o.better for o in objectives if clearly_better(o, winner, best, tolerances)]
    why = " and ".join(words) or "no worse"
    # a trial that dominates the most accurate one is tied with it on accuracy
    return (
        f"{head}; not on the front: tied with trial {winner['trial']} within noise; "
        f"trial {winner['trial']} is {why}."
    )
