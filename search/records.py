"""The stored trial record: what a search keeps in Optuna for each trial, and how it reads back.

Optuna stores a trial's params, values and state. peftsearch adds user attrs (the sampled
choice, the measured result, why a trial never trained...) and study attrs (the baseline,
test scores, overhead). This module is their one owner: the search loop and the run's
phases (pipelines/) write through the ``save_*`` functions, and results, progress,
recovery and the budget read through ``read_records`` and the ``*_of`` functions. No
other module names a key. The values' order is the study's objectives
(search/objectives.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces import PeftChoice
    from peftsearch.trials import TrialResult

__all__ = [
    "TrialRecord",
    "add_overhead",
    "baseline_of",
    "confirmations_of",
    "constraint_of",
    "estimate_of",
    "initial_design_attrs",
    "mark_interrupted",
    "memory_of",
    "overhead_of",
    "read_records",
    "requeue_attrs",
    "save_baseline",
    "save_choice",
    "save_confirmation",
    "save_constraint",
    "save_estimate",
    "save_memory",
    "save_result",
    "save_run_id",
    "save_test_score",
    "warm_start_attrs",
]

# Trial user attrs.
_METHOD = "method"
_SUMMARY = "summary"
_PEFT_CONFIG = "peft_config"
_RESULT = "result"
_INFEASIBLE = "infeasible"
_NOT_LAUNCHED = "not_launched"
_CONSTRAINT = "constraint"
_MEMORY = "predicted_memory_mb"
_ESTIMATE = "estimated_seconds"
_RUN_ID = "mlflow_run_id"
_REQUEUED_FROM = "requeued_from"
_WARM_START = "warm_start_from"
_INITIAL_DESIGN = "initial_design"
# Study user attrs: trial number -> why it was re-run (its driver died); device time
# spent outside trials (each run's cost calibration).
_INTERRUPTED = "interrupted_trials"
_OVERHEAD = "overhead_device_seconds"
# Study user attrs (a finished trial can no longer change): trial number -> its score on
# the held-out test split.
_TEST_SCORES = "test_scores"
# Study user attr: the model without an adapter, scored once per study.
_BASELINE = "baseline"
# Study user attr: trial number -> its confirmation re-runs, one per new training seed.
_CONFIRMATIONS = "confirmations"

_FINISHED = ("COMPLETE", "FAIL", "PRUNED")


def save_choice(trial: optuna.Trial, choice: PeftChoice) -> None:
    """What the space sampled, before anything runs."""
    trial.set_user_attr(_METHOD, choice.method)
    trial.set_user_attr(_SUMMARY, {**choice.summary, "lr": choice.learning_rate})
    trial.set_user_attr(_PEFT_CONFIG, choice.peft_config)


# the constraints, in order: trainable share over space.max_trainable_pct, predicted
# memory over the limit (relative); Optuna's convention: a value > 0 is infeasible
CONSTRAINTS = ("trainable_pct", "memory")


def save_constraint(trial: optuna.Trial, **excess: float) -> None:
    """Each named constraint's excess (see ``CONSTRAINTS``; unnamed ones: 0)."""
    values = list(constraint_of(trial))
    for name, value in excess.items():
        values[CONSTRAINTS.index(name)] = value
    trial.set_user_attr(_CONSTRAINT, values)


def constraint_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> list[float]:
    """The ``constraints_func`` the samplers call: one value per ``CONSTRAINTS`` (a
    study recorded before the memory constraint had one; the rest read as 0)."""
    values = list(trial.user_attrs.get(_CONSTRAINT, []))
    return values + [0.0] * (len(CONSTRAINTS) - len(values))


def save_memory(trial: optuna.Trial, megabytes: float) -> None:
    """The memory model's prediction of the trial's peak, with its levers."""
    trial.set_user_attr(_MEMORY, megabytes)


def memory_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> float | None:
    value = trial.user_attrs.get(_MEMORY)
    return None if value is None else float(value)


def save_estimate(trial: optuna.Trial, seconds: float) -> None:
    trial.set_user_attr(_ESTIMATE, seconds)


def estimate_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> float | None:
    value = trial.user_attrs.get(_ESTIMATE)
    return None if value is None else float(value)


def save_run_id(trial: optuna.Trial, run_id: str) -> None:
    trial.set_user_attr(_RUN_ID, run_id)


def save_result(
    trial: optuna.Trial,
    result: TrialResult,
    *,
    infeasible: bool = False,
    not_launched: bool = False,
) -> None:
    """The measured result (the loss curve lives in MLflow, not here). ``infeasible``:
    over the trainable-params cap, never trained; ``not_launched``: did not fit the budget."""
    record = result.to_dict()
    record.pop("losses")
    record.pop("adapter_files", None)
    trial.set_user_attr(_RESULT, record)
    if infeasible:
        trial.set_user_attr(_INFEASIBLE, True)
    if not_launched:
        trial.set_user_attr(_NOT_LAUNCHED, True)


def requeue_attrs(from_number: int) -> dict[str, Any]:
    """User attrs of a trial enqueued to re-run ``from_number`` with the same params."""
    return {_REQUEUED_FROM: from_number}


def warm_start_attrs(source: str) -> dict[str, Any]:
    """User attrs of a trial enqueued from an earlier study's front (``study:trial``)."""
    return {_WARM_START: source}


def initial_design_attrs(label: str) -> dict[str, Any]:
    """User attrs of a trial enqueued by the initial design (``lora targets=qv``)."""
    return {_INITIAL_DESIGN: label}


def mark_interrupted(study: optuna.Study, reasons: dict[int, str]) -> None:
    """Trials a dead driver left: they stay FAIL in Optuna, with this reason."""
    stored = dict(study.user_attrs.get(_INTERRUPTED, {}))
    stored.update({str(number): reason for number, reason in reasons.items()})
    study.set_user_attr(_INTERRUPTED, stored)


def add_overhead(study: optuna.Study, device_seconds: float) -> None:
    """Device time spent outside any trial (a run's cost calibration): it counts against
    the budget of every later run of the study too."""
    study.set_user_attr(_OVERHEAD, overhead_of(study) + device_seconds)


def save_test_score(study: optuna.Study, number: int, result: TrialResult) -> None:
    """A Pareto trial's score on ``data.test``, measured once after the search."""
    scores = dict(study.user_attrs.get(_TEST_SCORES, {}))
    scores[str(number)] = {"accuracy": result.accuracy, "rows": result.eval_rows}
    study.set_user_attr(_TEST_SCORES, scores)


def save_confirmation(study: optuna.Study, number: int, seed: int, result: TrialResult) -> None:
    """One confirmation re-run of trial ``number`` with training seed ``seed``."""
    stored = dict(study.user_attrs.get(_CONFIRMATIONS, {}))
    runs = [r for r in stored.get(str(number), []) if r["seed"] != seed]
    metrics = {k: v for k, v in result.metrics.items() if k != "example"}
    runs.append(
        {
            "seed": seed,
            "status": result.status,
            "accuracy": result.accuracy,
            "metrics": metrics,
            "device_seconds": result.device_seconds,
            "error": result.error,
        }
    )
    stored[str(number)] = sorted(runs, key=lambda r: r["seed"])
    study.set_user_attr(_CONFIRMATIONS, stored)


def confirmations_of(study: optuna.Study) -> dict[int, list[dict[str, Any]]]:
    """Trial number -> its confirmation re-runs (``save_confirmation``)."""
    return {int(k): list(v) for k, v in study.user_attrs.get(_CONFIRMATIONS, {}).items()}


def save_baseline(study: optuna.Study, baseline: dict[str, Any]) -> None:
    study.set_user_attr(_BASELINE, baseline)


def baseline_of(study: optuna.Study) -> dict[str, Any] | None:
    """``{"majority_class": {...}, "untrained_head": {...}}``, with the trials' metric
    keys, or None before it was measured."""
    value = study.user_attrs.get(_BASELINE)
    return dict(value) if value else None


def overhead_of(study: optuna.Study) -> float:
    return float(study.user_attrs.get(_OVERHEAD, 0.0))


@dataclass(frozen=True)
class TrialRecord:
    """One trial as stored, in the terms the rest of peftsearch uses."""

    number: int
    state: str
    method: str
    params: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    peft_config: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    infeasible: bool = False
    not_launched: bool = False
    interrupted: str | None = None
    requeued_from: int | None = None
    warm_start_from: str | None = None
    initial_design: str | None = None
    test: dict[str, Any] = field(default_factory=dict)
    # its re-runs with new training seeds (search/confirm.py), COMPLETE or not
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    estimated_seconds: float | None = None
    started: float | None = None
    completed: float | None = None

    @property
    def status(self) -> str:
        """Optuna's state, except INFEASIBLE for configs over the params cap."""
        return "INFEASIBLE" if self.infeasible else self.state

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED

    @property
    def counted(self) -> bool:
        """Counts against ``search.n_trials``: it ran (or failed) in a live driver. Configs
        never trained and trials a dead driver left (re-queued) do not count."""
        return (
            self.finished
            and self.interrupted is None
            and not self.infeasible
            and not self.not_launched
        )

    @property
    def trained(self) -> bool:
        """Complete with measured objectives: may enter the front."""
        return self.state == "COMPLETE" and not self.infeasible and self.values is not None

    @property
    def device_seconds(self) -> float:
        return float(self.result.get("device_seconds") or 0.0)

    @property
    def error(self) -> str | None:
        return self.result.get("error") or self.interrupted

    def measurement(self, name: str) -> Any:
        return self.result.get(name)

    @property
    def seed_scores(self) -> list[float]:
        """Its accuracy at every training seed that completed: the search's run first."""
        first = self.result.get("accuracy")
        again = [
            float(r["accuracy"])
            for r in self.confirmations
            if r["status"] == "COMPLETE" and r.get("accuracy") is not None
        ]
        return ([float(first)] if first is not None else []) + again

    def to_result(self) -> TrialResult:
        from peftsearch.trials import TrialResult

        return TrialResult.from_dict({**self.result, "losses": []})


def _record(
    trial: optuna.trial.FrozenTrial,
    interrupted: dict[str, str],
    tests: dict[str, Any],
    confirmations: dict[str, Any],
) -> TrialRecord:
    attrs = trial.user_attrs
    result = dict(attrs.get(_RESULT, {}))
    method = attrs.get(_METHOD) or result.get("method") or trial.params.get("method", "")
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        method=str(method),
        params=dict(trial.params),
        summary=dict(attrs.get(_SUMMARY, {})),
        peft_config=attrs.get(_PEFT_CONFIG),
        result=result,
        values=tuple(trial.values) if trial.values is not None else None,
        infeasible=bool(attrs.get(_INFEASIBLE)),
        not_launched=bool(attrs.get(_NOT_LAUNCHED)),
        interrupted=interrupted.get(str(trial.number)),
        requeued_from=attrs.get(_REQUEUED_FROM),
        warm_start_from=attrs.get(_WARM_START),
        initial_design=attrs.get(_INITIAL_DESIGN),
        test=dict(tests.get(str(trial.number), {})),
        confirmations=list(confirmations.get(str(trial.number), [])),
        run_id=attrs.get(_RUN_ID),
        estimated_seconds=attrs.get(_ESTIMATE),
        started=trial.datetime_start.timestamp() if trial.datetime_start else None,
        completed=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
    )


def read_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in number order."""
    interrupted = study.user_attrs.get(_INTERRUPTED, {})
    tests = study.user_attrs.get(_TEST_SCORES, {})
    confirmed = study.user_attrs.get(_CONFIRMATIONS, {})
    return [_record(t, interrupted, tests, confirmed) for t in study.get_trials(deepcopy=False)]
