"""`peftsearch resume`: put a study back in order after its driver was killed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.tracking import Tracker

__all__ = ["INTERRUPTED", "Recovery", "recover_study"]

INTERRUPTED = "interrupted_trials"
REASON = "its driver stopped before the trial finished; re-queued as trial {}"


@dataclass
class Recovery:
    requeued: dict[int, int] = field(default_factory=dict)  # stale trial -> its re-run
    runs_killed: int = 0
    runs_completed: int = 0


def recover_study(study: optuna.Study, tracker: Tracker | None) -> Recovery:
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
    interrupted = dict(study.user_attrs.get(INTERRUPTED, {}))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
        rerun = study.get_trials(deepcopy=False)[-1].number  # enqueueing numbers it
        recovery.requeued[trial.number] = rerun
        interrupted[str(trial.number)] = REASON.format(rerun)
    if recovery.requeued:
        study.set_user_attr(INTERRUPTED, interrupted)
    if tracker is not None:
        _close_runs(study, tracker, recovery)
    return recovery


def _close_runs(study: optuna.Study, tracker: Tracker, recovery: Recovery) -> None:
    from peftsearch.trials import TrialResult

    name = study.study_name
    for run in tracker.runs(name, "search", status="RUNNING"):
        tracker.end(run.info.run_id, "KILLED")
        recovery.runs_killed += 1
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.runs(name, "trial", status="RUNNING"):
        trial = trials.get(int(run.data.tags.get("peftsearch.trial", -1)))
        record = dict(trial.user_attrs.get("result", {})) if trial else {}
        if trial is not None and trial.state.name == "COMPLETE" and record:
            tracker.finish_child(run.info.run_id, TrialResult.from_dict({**record, "losses": []}))
            recovery.runs_completed += 1
        else:
            tracker.end(run.info.run_id, "KILLED")
            recovery.runs_killed += 1
    with_child = {int(r.data.tags["peftsearch.trial"]) for r in tracker.runs(name, "trial")}
    parents = tracker.runs(name, "search")
    for number in recovery.requeued:
        if number not in with_child and parents:
            trial = trials[number]
            method = str(trial.params.get("method", trial.user_attrs.get("method", "?")))
            run_id = tracker.start_child(parents[0].info.run_id, name, number, method, trial.params)
            tracker.client.set_tag(run_id, "status", "FAIL")
            tracker.end(run_id, "KILLED")
            recovery.runs_killed += 1
