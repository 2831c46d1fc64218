"""`peftsearch resume`: put a study back in order after its driver was killed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peftsearch.search import records

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.tracking import TrialTracker

__all__ = ["Recovery", "recover_study"]

REASON = "its driver stopped before the trial finished; re-queued as trial {}"


@dataclass
class Recovery:
    requeued: dict[int, int] = field(default_factory=dict)  # stale trial -> its re-run
    runs_killed: int = 0
    runs_completed: int = 0


def recover_study(study: optuna.Study, tracker: TrialTracker) -> Recovery:
    """Close what a dead driver left open, exactly once.

    Finished trials are untouched. Trials left RUNNING become FAIL, and their sampled
    parameters are enqueued so the sampler's choice is still tried. MLflow runs left
    RUNNING are ended: a child whose trial did finish in Optuna gets its result and
    FINISHED, every other one KILLED; a stale trial that never got a child run gets
    one, so every Optuna trial keeps exactly one child run.

    Only call this when no other driver is working on the study: a RUNNING trial of a
    live driver looks the same as a dead one's.
    """
    from optuna.trial import TrialState

    recovery = Recovery()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs=records.requeue_attrs(trial.number))
        rerun = study.get_trials(deepcopy=False)[-1].number  # enqueueing numbers it
        recovery.requeued[trial.number] = rerun
    if recovery.requeued:
        records.mark_interrupted(
            study, {stale: REASON.format(rerun) for stale, rerun in recovery.requeued.items()}
        )
    _close_runs(study, tracker, recovery)
    return recovery


def _close_runs(study: optuna.Study, tracker: TrialTracker, recovery: Recovery) -> None:
    name = study.study_name
    for run in tracker.runs(name, "search", status="RUNNING"):
        tracker.end(run.info.run_id, "KILLED")
        recovery.runs_killed += 1
    stored = {r.number: r for r in records.read_records(study)}
    for run in tracker.runs(name, "trial", status="RUNNING"):
        record = stored.get(int(run.data.tags.get("peftsearch.trial", -1)))
        if record is not None and record.state == "COMPLETE" and record.result:
            tracker.finish_child(run.info.run_id, record.to_result())
            recovery.runs_completed += 1
        else:
            tracker.end(run.info.run_id, "KILLED")
            recovery.runs_killed += 1
    with_child = {int(r.data.tags["peftsearch.trial"]) for r in tracker.runs(name, "trial")}
    parents = tracker.runs(name, "search")
    for number in recovery.requeued:
        if number not in with_child and parents:
            record = stored[number]
            run_id = tracker.start_child(
                parents[0].info.run_id, name, number, record.method or "?", record.params
            )
            tracker.close_child(run_id, "FAIL", "KILLED")
            recovery.runs_killed += 1
