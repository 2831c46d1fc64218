"""Configs a search tries first: the fronts of earlier studies (warm start) and the
initial design (spaces/_initial_design.py), each queued once per study.

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

__all__ = ["enqueue_initial_design", "enqueue_warm_start", "untried_design"]

Configs = Iterable[tuple[str, str, dict[str, Any]]]


def enqueue_warm_start(
    study: optuna.Study,
    configs: Configs,
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
        fixed = _for_study(params, method, methods)
        if not fits(fixed):
            continue
        study.enqueue_trial(fixed, user_attrs=records.warm_start_attrs(source))
        seen.add(source)
        queued += 1
    return queued


def untried_design(
    study: optuna.Study,
    configs: Configs,
    methods: list[str],
    fits: Callable[[dict[str, Any]], bool] = lambda params: True,
) -> list[tuple[str, dict[str, Any]]]:
    """``(label, params)`` of the initial design's configs this study has not tried: in
    its methods, expressible (``fits``), neither run under their label nor already held
    with the same params (a warm start queued it)."""
    seen = {r.initial_design for r in records.read_records(study) if r.initial_design}
    left = []
    for label, method, params in configs:
        if label in seen or method not in methods:
            continue
        fixed = _for_study(params, method, methods)
        if fits(fixed) and not _holds(study, fixed):
            left.append((label, fixed))
    return left


def enqueue_initial_design(
    study: optuna.Study,
    configs: Configs,
    methods: list[str],
    fits: Callable[[dict[str, Any]], bool] = lambda params: True,
) -> bool:
    """Queue the next untried config of the design, only while no other trial waits
    (a warm start and a re-queued trial go first); called before each ``ask``, so a run
    that ends inside the design leaves nothing queued. Returns whether it queued one."""
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return False
    left = untried_design(study, configs, methods, fits)
    if not left:
        return False
    label, params = left[0]
    study.enqueue_trial(params, user_attrs=records.initial_design_attrs(label))
    return True


def _for_study(params: dict[str, Any], method: str, methods: list[str]) -> dict[str, Any]:
    fixed = dict(params)
    if len(methods) == 1:
        fixed.pop("method", None)  # one method: the space samples none
    else:
        fixed["method"] = method
    return fixed


def _holds(study: optuna.Study, params: dict[str, Any]) -> bool:
    """A trial with these params is queued or was run already."""
    return any(
        trial.params == params or trial.system_attrs.get("fixed_params") == params
        for trial in study.get_trials(deepcopy=False)
    )
