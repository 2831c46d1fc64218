"""One progress line, from the live search or from storage (`peftsearch status`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftsearch.search.records import read_records

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchProgress", "progress_from_study"]


@dataclass
class SearchProgress:
    """Counts and bests over every trial of the study, earlier runs included."""

    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    best_accuracy: float | None = None  # of the task's metric (``metric`` names it)
    best_trial: int | None = None  # the trial that measured it
    metric: str | None = None
    fewest_params: int | None = None
    lowest_cost: float | None = None
    # configs skipped before training, or lost after their retry, for want of memory
    out_of_memory: int = 0
    started: float = 0.0
    ended: float | None = None
    budget: Any = None

    def add(
        self,
        status: str,
        accuracy: float | None,
        params: int | None,
        cost: float | None,
        metric: str | None = None,
        trial: int | None = None,
    ) -> None:
        """Fold in one finished trial that counts against ``search.n_trials``."""
        self.done += 1
        self.metric = self.metric or metric
        self.failed += status == "FAIL"
        if status != "COMPLETE" or accuracy is None or params is None or cost is None:
            return
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_accuracy, self.best_trial = accuracy, trial
        self.fewest_params = min(self.fewest_params or params, params)
        self.lowest_cost = min(self.lowest_cost if self.lowest_cost is not None else cost, cost)

    def add_result(self, result: Any) -> None:
        """Fold in a live ``TrialResult``."""
        if getattr(result, "infeasible", False):  # not trained: does not count
            self.out_of_memory += bool(result.out_of_memory or "memory" in (result.error or ""))
            return
        metric = (result.metrics or {}).get("metric")
        self.add(
            result.status,
            result.accuracy,
            result.trainable_params,
            result.cost_usd,
            metric,
            result.number,
        )

    def line(self) -> str:
        from peftsearch.trials.tasks import metric_label

        best = f"best {metric_label(self.metric)} "
        elapsed = (self.ended or time.time()) - self.started if self.started else 0.0
        minutes, seconds = divmod(int(elapsed), 60)
        parts = [
            f"trials {self.done}/{self.total}",
            f"running {self.running}",
            f"failed {self.failed}",
            best
            + ("-" if self.best_accuracy is None else f"{self.best_accuracy:.3f}")
            + ("" if self.best_trial is None else f" (trial {self.best_trial})"),
            "fewest params " + ("-" if self.fewest_params is None else f"{self.fewest_params:,}"),
            "lowest cost " + ("-" if self.lowest_cost is None else f"${self.lowest_cost:.4f}"),
            f"elapsed {minutes}:{seconds:02d}",
        ]
        if self.out_of_memory:
            parts.insert(3, f"too big for memory {self.out_of_memory}")
        if self.budget is not None:
            money = self.budget.summary()
            if money["limit_usd"] is not None:
                parts.append(f"spent ${money['spent_usd']:.4f} of ${money['limit_usd']:.4f}")
        return " | ".join(parts)


def progress_from_study(study: optuna.Study, total: int) -> SearchProgress:
    """The numbers from storage: every trial that counts, whichever run made it.

    Configs over the params cap and trials never launched are left out: they were not
    trained, so they have no accuracy or cost to show.
    """
    stored = read_records(study)
    progress = SearchProgress(total=total)
    progress.started = min((r.started for r in stored if r.started), default=0.0)
    progress.running = sum(r.state == "RUNNING" for r in stored)
    if not progress.running:
        progress.ended = max((r.completed for r in stored if r.completed), default=None)
    for record in stored:
        if record.infeasible and "memory" in (record.error or ""):
            progress.out_of_memory += 1
        if record.counted:
            progress.add(
                record.state,
                record.measurement("accuracy"),
                record.measurement("trainable_params"),
                record.measurement("cost_usd"),
                (record.measurement("metrics") or {}).get("metric"),
                record.number,
            )
    return progress
