"""A real search on the tiny BERT that the budget stops, with early stopping and a cap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def run(config: dict, tmp_path: Path) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def test_budget_stops_the_search(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(
        tiny_model_dir,
        tiny_data,
        tmp_path / "out",
        search={
            "study_name": "tiny",
            "n_trials": 100_000,  # out of reach: the budget must end the search
            "seed": 0,
            "early_stopping": {"eta": 3, "min_trials": 2},
        },
        training={"max_steps": 10, "batch_size": 8, "device": "cpu"},
        # $1 per device-second makes an $8 budget eight device-seconds: dozens of tiny trials
        # on an idle machine (and as many beside 2 busy processes: the loop's own sampling
        # and records take most of the wall time), and still one with the calibration and
        # the baseline at ten times the step time.
        cost={"usd_per_device_hour": {"cpu": 3600.0}},
        budget={"max_cost_usd": 8.0},
    )
    output = run(config, tmp_path)
    assert "Search stopped (budget:" in output, output[-1500:]
    study_dir = tmp_path / "out" / "tiny"
    pareto = json.loads((study_dir / "pareto.json").read_text())
    assert pareto["stop_reason"].startswith("budget:")
    budget = pareto["budget"]
    assert budget["limit_usd"] == 8.0
    assert budget["spent_usd"] <= 8.0
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert 1 <= len(rows) < 100_000  # dozens on an idle machine; one when it is very busy
    spent_by_trials = sum(float(r["device_seconds"] or 0) for r in rows)
    assert spent_by_trials <= budget["spent_device_seconds"] <= 8.0  # calibration, baseline
    ran = [r for r in rows if r["status"] in {"COMPLETE", "PRUNED"} and int(r["steps"] or 0)]
    assert all(r["estimated_seconds"] for r in ran)
    front = {row["trial"] for row in pareto["pareto"]}
    pruned = {int(r["trial"]) for r in rows if r["status"] == "PRUNED"}
    assert front and not front & pruned


def test_trainable_cap_is_enforced_before_training(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(
        tiny_model_dir,
        tiny_data,
        tmp_path / "out",
        search={
            "study_name": "tiny",
            "n_trials": 4,
            "seed": 3,
            "sampler": "random",
            "early_stopping": False,
        },
        space={"methods": ["lora", "ia3"], "max_trainable_pct": 3.0},
    )
    run(config, tmp_path)
    study_dir = tmp_path / "out" / "tiny"
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    infeasible = [r for r in rows if r["status"] == "INFEASIBLE"]
    trained = [r for r in rows if r["status"] == "COMPLETE"]
    assert infeasible, "the random sampler should propose some configs over 3%"
    assert len(trained) == 4  # infeasible configs do not use up n_trials
    assert all(
        float(r["trainable_pct"]) > 3.0 and float(r["wall_seconds"]) == 0 for r in infeasible
    )
    assert all(float(r["trainable_pct"]) <= 3.0 for r in trained)
    assert not any((study_dir / "trial_adapters" / r["trial"]).exists() for r in infeasible)
    front = {row["trial"] for row in json.loads((study_dir / "pareto.json").read_text())["pareto"]}
    assert not front & {int(r["trial"]) for r in infeasible}
    # `peftsearch status` reads the same study, infeasible trials and all.
    status = CliRunner().invoke(app, ["status", str(study_dir)])
    assert status.exit_code == 0, f"{status.output}\n{status.exception!r}"
    assert status.output.startswith("trials 4/4 | running 0 | failed 0 | best accuracy 0.")
