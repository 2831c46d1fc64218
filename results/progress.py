"""One progress line, from the live search or from storage (`peftsearch status`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchProgress", "progress_from_study"]


@dataclass
class SearchProgress:
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    best_accuracy: float | None = None
    fewest_params: int | None = None
    lowest_cost: float | None = None
    started: float = 0.0
    ended: float | None = None
    budget: Any = None

    def add(self, result: Any) -> None:
        """Fold in one finished trial (a ``TrialResult``)."""
        self.done += 1
        if result.status != "COMPLETE":
            self.failed += result.status == "FAIL"
            return
        self.best_accuracy = max(self.best_accuracy or 0.0, result.accuracy)
        self.fewest_params = min(
            self.fewest_params or result.trainable_params, result.trainable_params
        )
        self.lowest_cost = min(
            self.lowest_cost if self.lowest_cost is not None else result.cost_usd, result.cost_usd
        )

    def line(self) -> str:
        elapsed = (self.ended or time.time()) - self.started if self.started else 0.0
        minutes, seconds = divmod(int(elapsed), 60)
        parts = [
            f"trials {self.done}/{self.total}",
            f"running {self.running}",
            f"failed {self.failed}",
            "best accuracy " + ("-" if self.best_accuracy is None else f"{self.best_accuracy:.3f}"),
            "fewest params " + ("-" if self.fewest_params is None else f"{self.fewest_params:,}"),
            "lowest cost " + ("-" if self.lowest_cost is None else f"${self.lowest_cost:.4f}"),
            f"elapsed {minutes}:{seconds:02d}",
        ]
        if self.budget is not None:
            money = self.budget.summary()
            if money["limit_usd"] is not None:
                parts.append(f"spent ${money['spent_usd']:.4f} of ${money['limit_usd']:.4f}")
        return " | ".join(parts)


def progress_from_study(study: optuna.Study, total: int) -> SearchProgress:
    """The same numbers, read from storage while a search runs elsewhere."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    progress = SearchProgress(total=total)
    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start]
    progress.started = min(starts, default=0.0)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    progress.running = len(running)
    if not running:
        ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
        progress.ended = max(ends, default=None)
    for trial in trials:
        if trial.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED):
            record = trial.user_attrs.get("result", {})
            progress.add(_Finished(trial.state.name, record))
    return progress


class _Finished:
    def __init__(self, status: str, record: dict[str, Any]) -> None:
        self.status = status
        self.accuracy = record.get("accuracy")
        self.trainable_params = record.get("trainable_params")
        self.cost_usd = record.get("cost_usd")
