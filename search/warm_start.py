"""Warm start: try the Pareto configs of earlier studies first, re-measured on this data.

A front found on one dataset is a strong prior on another (the same methods, placements
and learning rates tend to win). The configs travel as Optuna params (method names,
target sets and layer subsets by name), so they transfer across datasets and models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from peftsearch.search import records

if TYPE_CHECKING:
    import optuna

__all__ = ["enqueue_warm_start"]


def enqueue_warm_start(
    study: optuna.Study,
    configs: Iterable[tuple[str, str, dict[str, Any]]],
    methods: list[str],
    fits: Callable[[dict[str, Any]], bool] = lambda params: True,
) -> int:
    """Enqueue each ``(source, method, params)`` whose method this study searches and
    whose params ``fits`` this study's space, once per source across runs (a continued
    study does not re-queue them). Returns how many were queued now."""
    seen = {r.warm_start_from for r in records.read_records(study) if r.warm_start_from}
    queued = 0
    for source, method, params in configs:
        if source in seen or method not in methods:
            continue
        fixed = dict(params)
        if len(methods) == 1:
            fixed.pop("method", None)  # one method: the space samples none
        else:
            fixed["method"] = method
        if not fits(fixed):
            continue
        study.enqueue_trial(fixed, user_attrs=records.warm_start_attrs(source))
        seen.add(source)
        queued += 1
    return queued
