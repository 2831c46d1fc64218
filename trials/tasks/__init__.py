"""Tasks: what a trial trains and how it is scored, one plug-in per task.

Each task is one module in this package that calls ``register_task``; every public
module here is imported on first use, so adding a task touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from peftsearch.trials.tasks._registry import (
    CardFacts,
    DataOptions,
    EvalContext,
    Metric,
    Task,
    TaskBase,
    check_task_config,
    default_task,
    get_task,
    head_loading_code,
    metric_label,
    register_task,
    task_names,
    unregister_task,
)

__all__ = [
    "CardFacts",
    "DataOptions",
    "EvalContext",
    "Metric",
    "Task",
    "TaskBase",
    "check_task_config",
    "default_task",
    "get_task",
    "head_loading_code",
    "metric_label",
    "register_task",
    "task_names",
    "unregister_task",
]


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
