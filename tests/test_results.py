"""Pareto extraction and the study-folder files, on a real in-memory Optuna study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from peftsearch.results import StudyFolder, front_title, pareto_numbers, trial_rows
from peftsearch.search import DEFAULT_OBJECTIVES, objectives_of


def study_with(values: list[tuple[float, float, float] | str]) -> optuna.Study:
    study = optuna.create_study(directions=[o.direction for o in objectives_of(DEFAULT_OBJECTIVES)])
    for value in values:
        trial = study.ask()
        trial.set_user_attr("method", "lora")
        trial.set_user_attr("summary", {"rank": 8, "lr": 1e-3})
        if isinstance(value, str):
            trial.set_user_attr("result", {"error": "boom"})
            study.tell(trial, state=getattr(optuna.trial.TrialState, value))
        else:
            trial.set_user_attr(
                "result", {"accuracy": value[0], "trainable_params": value[1], "cost_usd": value[2]}
            )
            study.tell(trial, list(value))
    return study


def test_front_is_the_non_dominated_set() -> None:
    study = study_with(
        [
            (0.90, 1000, 0.10),  # 0: front (most accurate)
            (0.85, 100, 0.10),  # 1: front (smaller)
            (0.80, 1000, 0.20),  # 2: dominated by 0
            (0.70, 100, 0.05),  # 3: front (cheapest)
            "FAIL",  # 4: never on the front
            "PRUNED",  # 5: never on the front
            (0.85, 100, 0.10),  # 6: ties with 1: both stay
        ]
    )
    assert pareto_numbers(study) == [0, 1, 3, 6]


def test_no_complete_trial_means_empty_front() -> None:
    assert pareto_numbers(study_with(["FAIL"])) == []


def test_front_is_counted_against_the_complete_trials() -> None:
    rows = [
        {"status": "COMPLETE", "steps": 30},
        {"status": "COMPLETE", "steps": 30},
        {"status": "PRUNED", "steps": 10},  # early-stopped
        {"status": "PRUNED", "steps": None},  # did not fit the budget
        {"status": "INFEASIBLE", "steps": None},
        {"status": "FAIL", "steps": 3},
    ]
    assert front_title(rows, 1) == (
        "Pareto front: 1 of 2 complete trials (also 1 stopped, 1 not launched, "
        "1 over the params cap, 1 failed)"
    )
    assert front_title(rows[:2], 2) == "Pareto front: 2 of 2 complete trials"


def test_the_study_folder_round_trips(tmp_path: Path) -> None:
    """What StudyFolder writes it reads back; every write is whole (no temp files), and
    the files have the names the README promises."""
    from types import SimpleNamespace

    from peftsearch.errors import UserError

    study = study_with([(0.9, 10, 0.1), (0.8, 20, 0.2), "FAIL"])
    rows = trial_rows(study)
    assert [r["status"] for r in rows] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert rows[0]["params"] == "rank=8" and rows[0]["lr"] == pytest.approx(1e-3)
    assert rows[2]["error"] == "boom"
    front = pareto_numbers(study)
    folder = StudyFolder(tmp_path)
    with pytest.raises(UserError, match="not a study folder"):
        folder.require()
    assert folder.read_summary() == {} and folder.read_front_rows() == []

    folder.write_config("model: {}\n")
    data = SimpleNamespace(
        label_names=["neg", "pos"], pad_token_id=0, task="sequence-classification", stats={"a": 1}
    )
    folder.write_labels(data)  # type: ignore[arg-type]
    extra = {"summary": {"trials": 3}, "metric": "accuracy", "stop_reason": "trials: done"}
    folder.write_tables(rows, front, extra)
    page = folder.write_report("<html></html>")

    assert folder.require() is folder and folder.config_file.read_text() == "model: {}\n"
    assert folder.read_labels() == {
        "id2label": {"0": "neg", "1": "pos"},
        "label2id": {"neg": 0, "pos": 1},
        "pad_token_id": 0,
        "task": "sequence-classification",
        "data": {"a": 1},
    }
    assert folder.read_summary() == extra
    assert [r["trial"] for r in folder.read_front_rows()] == [0]
    table = folder.read_trials()
    assert [int(r["trial"]) for r in table] == [0, 1, 2] and table[0]["accuracy"] == "0.9"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml",
        "labels.json",
        "pareto.csv",
        "pareto.json",
        "report.html",
        "trials.csv",
    ]
    assert page == folder.report_file and set(folder.result_files) <= set(tmp_path.iterdir())
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_front_adapters_replace_the_old_set(tmp_path: Path) -> None:
    for n in (0, 1, 2):
        (tmp_path / "trial_adapters" / str(n)).mkdir(parents=True)
        (tmp_path / "trial_adapters" / str(n) / "adapter_config.json").write_text("{}")
    folder = StudyFolder(tmp_path)
    folder.copy_front_adapters([0, 2])
    folder.copy_front_adapters([1])
    assert folder.has_adapter(2) and not folder.has_adapter(3)
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["1"]
