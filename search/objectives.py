"""The objectives a study can have: one owner for their names, directions, columns and noise.

A study optimises ``search.objectives`` (default: accuracy, trainable parameters, cost),
in that order in Optuna's values. ``accuracy`` means the task's searched metric
(``evaluation.metric``: exact match for a causal LM, entity F1 for a tagger...). The
loop tells these values, the study stores their names (``set_metric_names``), and the
front, the noise rule and the report read them from here. A new objective is one
``register_objective`` call, with the trial-row column that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_OBJECTIVES",
    "Objective",
    "get_objective",
    "objective_names",
    "objectives_of",
    "register_objective",
    "study_objectives",
    "unregister_objective",
    "values_of",
]

Direction = Literal["maximize", "minimize"]
# How a difference between two trials counts as real (results/noise.py):
# score: beyond one standard error of the difference of two evaluation scores;
# timing: beyond the cost model's measured relative error (run-to-run timing noise);
# relative: beyond a fixed 5%; exact: any difference (counts, sizes); measured: beyond
# one standard error of the difference, from the ``<column>_se`` each row measured.
Noise = Literal["score", "timing", "relative", "exact", "measured"]


@dataclass(frozen=True)
class Objective:
    """``name`` is what ``search.objectives`` lists; ``column`` the trial-row key and
    ``TrialResult`` field that holds the value; ``label`` how people read it;
    ``log_scale`` whether its axis is logarithmic in the report."""

    name: str
    column: str
    direction: Direction
    label: str
    noise: Noise
    log_scale: bool = False
    better: str = "better"  # how a trial that wins on it is said to be: "smaller"

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


_OBJECTIVES: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    if objective.name in _OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} is registered twice")
    _OBJECTIVES[objective.name] = objective
    return objective


def unregister_objective(name: str) -> None:
    """Remove an objective (tests that add a throwaway one clean up with this)."""
    _OBJECTIVES.pop(name, None)


def get_objective(name: str) -> Objective:
    try:
        return _OBJECTIVES[name]
    except KeyError:
        known = ", ".join(_OBJECTIVES)
        raise KeyError(f"unknown objective {name!r}; known objectives: {known}") from None


def objective_names() -> list[str]:
    return list(_OBJECTIVES)


def objectives_of(names: list[str] | tuple[str, ...]) -> tuple[Objective, ...]:
    return tuple(get_objective(name) for name in names)


ACCURACY = register_objective(
    Objective(
        "accuracy", "accuracy", "maximize", "the task's metric", "score", better="more accurate"
    )
)
register_objective(
    Objective(
        "trainable_params",
        "trainable_params",
        "minimize",
        "trainable parameters",
        "exact",
        log_scale=True,
        better="smaller",
    )
)
register_objective(
    Objective("cost", "cost_usd", "minimize", "cost per trial", "timing", better="cheaper")
)
# measured per trial (trials/memory.py); allocator and page-level noise: 5% either way
register_objective(
    Objective(
        "peak_memory",
        "peak_memory_mb",
        "minimize",
        "peak memory (MB)",
        "relative",
        better="uses less memory",
    )
)

# the saved adapter's files (trials/_run.py): size does not follow parameter count for
# every method (a bottleneck adapter saves its layer norms, prompt tuning its embedding)
register_objective(
    Objective(
        "adapter_bytes",
        "adapter_bytes",
        "minimize",
        "adapter size (bytes)",
        "exact",
        log_scale=True,
        better="smaller on disk",
    )
)
# causal LMs: the rise of the model's loss on reference text (trials/forgetting.py)
register_objective(
    Objective(
        "forgetting",
        "forgetting",
        "minimize",
        "forgetting (loss rise, nats)",
        "measured",
        better="forgets less",
    )
)

DEFAULT_OBJECTIVES = ("accuracy", "trainable_params", "cost")


def values_of(source: Any, objectives: tuple[Objective, ...]) -> list[float]:
    """The study's values of a ``TrialResult`` or a trial row, in ``objectives`` order."""
    values = []
    for objective in objectives:
        value = (
            source.get(objective.column)
            if isinstance(source, dict)
            else getattr(source, objective.column, None)
        )
        if value is None:
            raise ValueError(f"no {objective.column} to tell for objective {objective.name}")
        values.append(float(value))
    return values


def study_objectives(study: optuna.Study) -> tuple[Objective, ...]:
    """The objectives a study was created with (its metric names); a study from before
    they were named has the default three."""
    names = study.metric_names or DEFAULT_OBJECTIVES
    return objectives_of(tuple(LEGACY_NAMES.get(name, name) for name in names))


# what studies stored before the objectives had one owner
LEGACY_NAMES = {"cost_usd": "cost"}
