"""Objectives have one owner (search/objectives.py): a fourth one, added here, is told to
the study by the loop, stored under its name, and traded off by the front."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from test_loop import FakeClock, FakeExecutor, make_loop

from peftsearch.config import parse_config
from peftsearch.errors import UserError
from peftsearch.results.front import columns, front_of, pareto_numbers, trial_rows
from peftsearch.search import (
    DEFAULT_OBJECTIVES,
    Objective,
    objectives_of,
    open_study,
    read_records,
    register_objective,
    study_objectives,
    unregister_objective,
)
from peftsearch.search.study import make_sampler

EVAL_TIME = Objective("eval_time", "eval_seconds", "minimize", "evaluation time", "relative")


@pytest.fixture
def fourth() -> Iterator[tuple[Objective, ...]]:
    register_objective(EVAL_TIME)
    try:
        yield objectives_of([*DEFAULT_OBJECTIVES, "eval_time"])
    finally:
        unregister_objective("eval_time")


def test_the_loop_tells_every_objective_in_order(
    fourth: tuple[Objective, ...], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = open_study("four", storage, make_sampler("random", 0, 5), fourth)
    assert study.metric_names == ["accuracy", "trainable_params", "cost", "eval_time"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE", "MINIMIZE"]
    clock = FakeClock()
    make_loop(study, FakeExecutor(clock), n_trials=3, objectives=fourth).run()
    for record in read_records(study):
        result = record.result
        assert record.values == (
            result["accuracy"],
            result["trainable_params"],
            result["cost_usd"],
            result["eval_seconds"],
        )
    again = optuna.load_study(study_name="four", storage=storage)
    assert study_objectives(again) == fourth
    rows = trial_rows(again)
    assert "eval_seconds" in columns(rows) and all(r["eval_seconds"] > 0 for r in rows)
    assert pareto_numbers(again) == front_of(rows, fourth)


def test_a_study_keeps_its_objectives(fourth: tuple[Objective, ...], tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    open_study("three", storage, make_sampler("random", 0, 5))
    with pytest.raises(UserError) as error:
        open_study("three", storage, make_sampler("random", 0, 5), fourth)
    assert error.value.where == "search.objectives"
    assert "(accuracy, trainable_params, cost)" in str(error.value)


def row(trial: int, accuracy: float, params: int, cost: float, eval_seconds: float) -> dict:
    return {
        "trial": trial,
        "status": "COMPLETE",
        "accuracy": accuracy,
        "eval_rows": 10_000,
        "trainable_params": params,
        "cost_usd": cost,
        "eval_seconds": eval_seconds,
    }


def test_the_front_trades_off_a_fourth_objective(fourth: tuple[Objective, ...]) -> None:
    rows = [
        row(0, 0.90, 1000, 1.0, 10.0),
        row(1, 0.80, 2000, 2.0, 2.0),  # beaten on the three, fastest to evaluate
        row(2, 0.80, 2000, 2.0, 20.0),  # beaten everywhere
        row(3, 0.80, 2000, 2.0, 10.3),  # beaten on the three, eval time within 5% of 0's
    ]
    assert front_of(rows) == [0]
    assert front_of(rows, fourth) == [0, 1]


def test_objectives_are_checked_in_the_config(fourth: tuple[Objective, ...]) -> None:
    base = {"model": {"name_or_path": "m"}, "data": {"train": "x:train"}}
    config = parse_config({**base, "search": {"objectives": ["accuracy", "eval_time"]}})
    assert config.search.objectives == ["accuracy", "eval_time"]
    for objectives, message in (
        (["accuracy", "speed"], "unknown objective 'speed'; known objectives: accuracy, "),
        (["trainable_params", "cost"], "list accuracy (the task's metric)"),
        (["accuracy"], "list at least two objectives"),
        (["accuracy", "cost", "cost"], "an objective is listed twice"),
    ):
        with pytest.raises(UserError, match=r"search\.objectives: " + re.escape(message)):
            parse_config({**base, "search": {"objectives": objectives}})


def test_peak_memory_is_an_objective_a_user_can_add() -> None:
    """``search.objectives: [accuracy, trainable_params, cost, peak_memory]``: a trial no
    better on the three but far lighter on memory joins the front; 5% apart is a tie."""
    memory = objectives_of(("accuracy", "trainable_params", "cost", "peak_memory"))
    assert memory[-1].column == "peak_memory_mb" and not memory[-1].maximize
    base = {"status": "COMPLETE", "accuracy": 0.8, "trainable_params": 1000, "cost_usd": 0.01}
    rows = [
        {**base, "trial": 0, "peak_memory_mb": 4000.0},
        {**base, "trial": 1, "accuracy": 0.7, "trainable_params": 2000, "peak_memory_mb": 1000.0},
        {**base, "trial": 2, "accuracy": 0.7, "trainable_params": 2000, "peak_memory_mb": 3900.0},
    ]
    assert front_of(rows) == [0]
    assert front_of(rows, memory) == [0, 1]
    names = ["accuracy", "trainable_params", "cost", "peak_memory"]
    base = {"model": {"name_or_path": "m"}, "data": {"train": "x:train"}}
    assert parse_config({**base, "search": {"objectives": names}}).search.objectives == names
