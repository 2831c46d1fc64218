"""The search: an Optuna study driven by ask/tell, trials dispatched to an executor."""

from __future__ import annotations

from peftsearch.search._loop import SearchLoop, SideJob, finished_count
from peftsearch.search.executor import InProcessExecutor, TrialExecutor
from peftsearch.search.records import DIRECTIONS, OBJECTIVES, TrialRecord, read_records
from peftsearch.search.study import (
    load_existing_study,
    make_sampler,
    open_study,
    quiet_optuna,
)
from peftsearch.search.tracking import NullTracker, Tracker, TrialTracker, flatten

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "InProcessExecutor",
    "NullTracker",
    "SearchLoop",
    "SideJob",
    "Tracker",
    "TrialExecutor",
    "TrialRecord",
    "TrialTracker",
    "finished_count",
    "flatten",
    "load_existing_study",
    "make_sampler",
    "open_study",
    "quiet_optuna",
    "read_records",
]
