"""The search: an Optuna study driven by ask/tell, trials dispatched to an executor."""

from __future__ import annotations

from peftsearch.search._loop import SearchLoop, finished_count
from peftsearch.search.executor import InProcessExecutor, TrialExecutor
from peftsearch.search.study import (
    DIRECTIONS,
    OBJECTIVES,
    load_existing_study,
    make_sampler,
    open_study,
)
from peftsearch.search.tracking import Tracker, flatten

__all__ = [
    "DIRECTIONS",
    "OBJECTIVES",
    "InProcessExecutor",
    "SearchLoop",
    "Tracker",
    "TrialExecutor",
    "finished_count",
    "flatten",
    "load_existing_study",
    "make_sampler",
    "open_study",
]
