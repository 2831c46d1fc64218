"""The search: an Optuna study driven by ask/tell, trials dispatched to an executor."""

from __future__ import annotations

from peftsearch.search._loop import SearchLoop, SideJob, finished_count
from peftsearch.search.executor import InProcessExecutor, TrialExecutor
from peftsearch.search.objectives import (
    DEFAULT_OBJECTIVES,
    Objective,
    get_objective,
    objectives_of,
    register_objective,
    study_objectives,
    unregister_objective,
)
from peftsearch.search.records import TrialRecord, read_records
from peftsearch.search.study import (
    load_existing_study,
    make_sampler,
    open_study,
    quiet_optuna,
)
from peftsearch.search.tracking import NullTracker, Tracker, TrialTracker, flatten

__all__ = [
    "DEFAULT_OBJECTIVES",
    "InProcessExecutor",
    "NullTracker",
    "Objective",
    "SearchLoop",
    "SideJob",
    "Tracker",
    "TrialExecutor",
    "TrialRecord",
    "TrialTracker",
    "finished_count",
    "flatten",
    "get_objective",
    "load_existing_study",
    "make_sampler",
    "objectives_of",
    "open_study",
    "quiet_optuna",
    "read_records",
    "register_objective",
    "study_objectives",
    "unregister_objective",
]
