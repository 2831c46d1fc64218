"""The stored trial record round-trips: what the search writes is what results read."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from peftsearch.search import records
from peftsearch.search.budget import spent_device_seconds
from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of, values_of
from peftsearch.spaces import PeftChoice
from peftsearch.trials import TrialResult

CHOICE = PeftChoice(
    method="lora",
    peft_config={"peft_type": "LORA", "r": 8},
    learning_rate=3e-3,
    summary={"rank": 8, "targets": "qv"},
)

DEFAULT = objectives_of(DEFAULT_OBJECTIVES)


def study() -> optuna.Study:
    return optuna.create_study(directions=[o.direction for o in DEFAULT])


def result(number: int, status: str = "COMPLETE", **values: object) -> TrialResult:
    base: dict = {
        "accuracy": 0.8,
        "metrics": {"metric": "accuracy", "accuracy": 0.8, "macro_f1": 0.75},
        "trainable_params": 8000,
        "total_params": 100000,
        "trainable_pct": 8.0,
        "device_seconds": 12.5,
        "cost_usd": 0.01,
        "losses": [1.0, 0.5],
    }
    return TrialResult(number, "lora", status, **{**base, **values})  # type: ignore[arg-type]


def test_a_trained_trial_round_trips() -> None:
    s = study()
    trial = s.ask()
    records.save_choice(trial, CHOICE)
    records.save_estimate(trial, 11.0)
    records.save_run_id(trial, "run-1")
    records.save_constraint(trial, trainable_pct=-2.5)
    measured = result(trial.number)
    records.save_result(trial, measured)
    s.tell(trial, values_of(measured, DEFAULT))

    (record,) = records.read_records(s)
    assert record.method == "lora" and record.status == "COMPLETE"
    assert record.summary == {"rank": 8, "targets": "qv", "lr": 3e-3}
    assert record.peft_config == CHOICE.peft_config
    assert record.estimated_seconds == 11.0 and record.run_id == "run-1"
    assert record.values == (0.8, 8000.0, 0.01)
    assert record.trained and record.counted and record.finished
    assert record.device_seconds == 12.5
    assert records.constraint_of(s.trials[0]) == [-2.5, 0.0]
    back = record.to_result()
    assert back.losses == []  # the loss curve lives in MLflow, not in the study
    assert {**back.to_dict(), "losses": measured.losses} == measured.to_dict()
    assert dict(zip(DEFAULT_OBJECTIVES, record.values, strict=True))["accuracy"] == 0.8


def test_never_trained_and_interrupted_trials_do_not_count() -> None:
    s = study()
    over = s.ask()
    records.save_choice(over, CHOICE)
    records.save_result(over, result(over.number, device_seconds=0.0), infeasible=True)
    s.tell(over, [0.0, 8000.0, 0.0])
    skipped = s.ask()
    no_spend = result(skipped.number, "PRUNED", device_seconds=0.0)
    records.save_result(skipped, no_spend, not_launched=True)
    s.tell(skipped, state=TrialState.PRUNED)
    dead = s.ask()
    s.tell(dead, state=TrialState.FAIL)
    records.mark_interrupted(s, {dead.number: "its driver stopped"})
    s.enqueue_trial({}, user_attrs=records.requeue_attrs(dead.number))

    stored = records.read_records(s)
    assert [r.status for r in stored] == ["INFEASIBLE", "PRUNED", "FAIL", "WAITING"]
    assert [r.counted for r in stored] == [False, False, False, False]
    assert not stored[0].trained and stored[1].not_launched
    assert stored[2].interrupted == "its driver stopped" == stored[2].error
    assert stored[3].requeued_from == dead.number
    assert spent_device_seconds(s) == 0.0
    records.add_overhead(s, 4.0)  # two runs' cost calibrations
    records.add_overhead(s, 3.0)
    assert spent_device_seconds(s) == 7.0
