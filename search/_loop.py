"""Ask -> dispatch -> tell. The driver alone writes to the study storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from peftsearch.trials import TrialRequest, TrialResult

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.executor import TrialExecutor
    from peftsearch.search.tracking import Tracker
    from peftsearch.spaces import PeftChoice

__all__ = ["SearchLoop", "finished_count"]

FINISHED_STATES = ("COMPLETE", "FAIL", "PRUNED")


def finished_count(study: optuna.Study) -> int:
    """Finished trials, not counting those a dead driver left behind (they were re-queued)."""
    interrupted = study.user_attrs.get("interrupted_trials", {})
    return sum(
        t.state.name in FINISHED_STATES and str(t.number) not in interrupted
        for t in study.get_trials(deepcopy=False)
    )


@dataclass
class SearchLoop:
    """Runs trials until the study holds ``n_trials`` finished ones.

    ``sample`` turns an Optuna trial into a ``PeftChoice`` (the search space);
    ``on_result`` sees every finished trial (progress display).
    """

    study: optuna.Study
    executor: TrialExecutor
    sample: Callable[[optuna.Trial], PeftChoice]
    n_trials: int
    adapter_root: Path
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    on_result: Callable[[TrialResult], None] | None = None
    _inflight: dict[int, tuple[optuna.Trial, str | None]] = field(default_factory=dict)

    @property
    def running(self) -> int:
        return len(self._inflight)

    def run(self) -> list[TrialResult]:
        results: list[TrialResult] = []
        to_launch = max(0, self.n_trials - finished_count(self.study))
        while to_launch or self._inflight:
            while to_launch and len(self._inflight) < self.executor.slots:
                to_launch -= 1
                launched = self._launch()
                if launched is not None:
                    results.append(launched)
            for result in self.executor.wait():
                self._finish(result)
                results.append(result)
        return results

    def _launch(self) -> TrialResult | None:
        trial = self.study.ask()
        try:
            choice = self.sample(trial)
        except ValueError as error:  # the space cannot express this point for the model
            result = TrialResult(
                number=trial.number,
                method=str(trial.user_attrs.get("method", "?")),
                status="FAIL",
                error=str(error),
            )
            self._inflight[trial.number] = (trial, None)
            self._finish(result)
            return result
        params = {
            "method": choice.method,
            "learning_rate": choice.learning_rate,
            "peft": choice.peft_config,
        }
        trial.set_user_attr("summary", {**choice.summary, "lr": choice.learning_rate})
        trial.set_user_attr("peft_config", choice.peft_config)
        run_id = None
        if self.tracker is not None and self.parent_run_id is not None:
            run_id = self.tracker.start_child(
                self.parent_run_id, self.study.study_name, trial.number, choice.method, params
            )
            trial.set_user_attr("mlflow_run_id", run_id)
        self._inflight[trial.number] = (trial, run_id)
        self.executor.submit(
            TrialRequest(
                number=trial.number,
                method=choice.method,
                peft_config=choice.peft_config,
                learning_rate=choice.learning_rate,
                adapter_dir=str(self.adapter_root / str(trial.number)),
            )
        )
        return None

    def _finish(self, result: TrialResult) -> None:
        import optuna

        trial, run_id = self._inflight.pop(result.number)
        record = result.to_dict()
        record.pop("losses")
        trial.set_user_attr("result", record)
        if result.status == "COMPLETE":
            self.study.tell(trial, result.objectives())
        else:
            state = (
                optuna.trial.TrialState.PRUNED
                if result.status == "PRUNED"
                else optuna.trial.TrialState.FAIL
            )
            self.study.tell(trial, state=state)
        if self.tracker is not None and run_id is not None:
            self.tracker.finish_child(run_id, result)
        if self.on_result is not None:
            self.on_result(result)
