"""The Optuna study: its objectives, persistent storage, a sampler fit for the space."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from peftsearch.errors import UserError
from peftsearch.search.objectives import DEFAULT_OBJECTIVES, Objective, objectives_of
from peftsearch.search.records import constraint_of

if TYPE_CHECKING:
    import optuna

__all__ = [
    "load_existing_study",
    "make_sampler",
    "open_study",
    "quiet_optuna",
]


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines and experimental-feature warnings, silenced for one call only:
    library code leaves the caller's logging and warning filters as they were."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # optuna 5 deprecates the samplers' constraints_func (for Trial.set_constraint,
            # removed in 7); it still works, and the user cannot act on the notice
            warnings.filterwarnings(
                "ignore", message=".*constraints_func.*deprecated", category=FutureWarning
            )
            yield
    finally:
        optuna.logging.set_verbosity(level)


def make_sampler(
    name: str, seed: int, n_trials: int, constrained: bool = False
) -> optuna.samplers.BaseSampler:
    """TPE by default.

    The space is conditional (each method has its own knobs), small in trials (tens,
    not thousands) and multi-objective. TPE with ``group=True`` splits the space by the
    parameters that occur together, so it models each method's knobs separately
    instead of falling back to random for them; it handles three objectives (MOTPE)
    and learns from its first few trials. NSGA-II crosses over only the parameters
    every trial has (here the method alone, which its default mutation rate of one over
    the parameter count then always redraws), so in this space it samples as random
    search does (benchmarks/search_variants.py --variants nsga2 random): it stays for
    comparisons.
    ``constant_liar`` keeps concurrent workers from sampling the same point. With
    ``constrained``, the samplers learn which configs break ``space.max_trainable_pct``.
    """
    import optuna

    constraint = constraint_of if constrained else None
    with quiet_optuna():
        if name == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                multivariate=True,
                group=True,
                constant_liar=True,
                n_startup_trials=max(3, min(10, n_trials // 3)),
                constraints_func=constraint,
            )
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraint)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}", where="search.sampler")


def open_study(
    name: str,
    storage_url: str,
    sampler: optuna.samplers.BaseSampler,
    objectives: tuple[Objective, ...] = objectives_of(DEFAULT_OBJECTIVES),
) -> optuna.Study:
    """Create the study, or continue it when the name exists in storage; its metric
    names are the objectives' (what optuna-dashboard shows)."""
    import optuna

    from peftsearch.search.objectives import study_objectives

    try:
        with quiet_optuna():
            study = optuna.create_study(
                study_name=name,
                storage=storage_url,
                sampler=sampler,
                directions=[o.direction for o in objectives],
                load_if_exists=True,
            )
    except (ImportError, ValueError) as error:
        raise UserError(f"cannot open study storage: {error}", where="storage") from None
    except Exception as error:  # SQLAlchemy raises its own error types
        raise UserError(
            f"cannot open study storage {storage_url!r}: {error}", where="storage"
        ) from None
    stored = study_objectives(study) if study.metric_names else None
    if [d.name.lower() for d in study.directions] != [o.direction for o in objectives] or (
        stored is not None and stored != objectives
    ):
        had = ", ".join(o.name for o in stored) if stored else "other directions"
        raise UserError(
            f"study {name!r} exists in storage with other objectives ({had})",
            where="search.objectives",
            hint="keep the study's objectives, or choose a new search.study_name",
        )
    with quiet_optuna():
        study.set_metric_names([o.name for o in objectives])
    return study


def load_existing_study(name: str, storage_url: str) -> optuna.Study:
    """Open a study for reading (status, export); never creates one."""
    import optuna

    try:
        with quiet_optuna():
            return optuna.load_study(study_name=name, storage=storage_url)
    except KeyError:
        raise UserError(
            f"no study named {name!r} in {storage_url}", where="search.study_name"
        ) from None
