"""The no-adapter baseline: what fine-tuning is measured against, once per study.

One route: the loop runs a ``BaselineJob`` (the base model scored as it is) as a side
job on a worker, and the task (trials/tasks/) computes every score, its model-free ones
(the majority class, every word tagged ``O``) included. A base that lacks the task's head
(a classifier or tagger built on a bare encoder or LM) is not scored: its new head's
random weights score chance, which the model-free baselines state exactly, so the job
only loads it and ends. With a budget the job runs
beside the first trial, its estimate held; without one it takes a slot the last trials
leave idle (run first, it would hold a worker back while it loads the model). A budget
too small for it drops the job, and the model-free baselines are recorded alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from peftsearch.search import records

if TYPE_CHECKING:
    import optuna

    from peftsearch.search._loop import SideJob
    from peftsearch.search.cost_model import CostModel
    from peftsearch.trials import PreparedData, TrialResult

__all__ = ["baseline_side_job", "record_baseline"]


def baseline_side_job(
    study: optuna.Study,
    data: PreparedData,
    metric: str,
    cost_model: CostModel | None,
    on_saved: Callable[[dict[str, Any]], None] = lambda baseline: None,
    quantization: str = "none",
) -> SideJob | None:
    """The loop's side job that measures the baseline, with its cost estimate (setup and
    one evaluation); None when the study has its baseline already. ``quantization``: the
    base as the search first trains on it (model.quantization)."""
    from peftsearch.search._loop import SideJob
    from peftsearch.trials import BaselineJob

    if records.baseline_of(study):
        return None

    def done(result: TrialResult | None) -> None:
        """``result``: the base model scored, or None when the budget could not afford it
        (the model-free baselines are recorded alone)."""
        if result is not None:  # the loop spent it; later runs count it too
            records.add_overhead(study, result.device_seconds)
        saved = record_baseline(study, data, metric, result)
        if saved:
            on_saved(saved)

    estimate = cost_model.setup_seconds + cost_model.eval_seconds if cost_model else 0.0
    return SideJob(BaselineJob(quantization=quantization), done, estimate)


def record_baseline(
    study: optuna.Study, data: PreparedData, metric: str, result: TrialResult | None
) -> dict[str, Any] | None:
    """Store the task's model-free baselines and, when it ran, the base model's scores
    (``result``); returns what was stored (None when the study had it already)."""
    from peftsearch.trials.tasks import get_task

    if records.baseline_of(study):
        return None
    task = get_task(data.task)
    free = {"trainable_params": 0, "cost_usd": 0.0, "device_seconds": 0.0}
    baseline: dict[str, Any] = {
        key: {**entry, **free} for key, entry in task.baselines(data, metric).items()
    }
    # not scored (accuracy None): a new head's random weights (trials/_run.py: NEW_HEAD)
    if result is not None and result.status == "COMPLETE" and result.accuracy is not None:
        baseline["base_model"] = {
            "method": task.base_model_baseline,
            "accuracy": result.accuracy,
            **{k: v for k, v in result.metrics.items() if k != "example"},
            "trainable_params": 0,
            "cost_usd": result.cost_usd,
            "device_seconds": result.device_seconds,
            "eval_rows": result.eval_rows,
        }
        if data.task == "causal-lm":  # the rise of the base's own loss over itself
            baseline["base_model"]["forgetting"] = 0.0
    if baseline:
        records.save_baseline(study, baseline)
    return baseline or None
