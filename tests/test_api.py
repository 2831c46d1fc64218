"""The Python API (`peftsearch.run`, `peftsearch.load`), the run phases one by one, and
library code leaving no global state behind."""

from __future__ import annotations

import gc
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from helpers import tiny_config
from rich.console import Console

import peftsearch
from peftsearch.config import parse_config
from peftsearch.pipelines import builders
from peftsearch.pipelines.builders import build_rungs
from peftsearch.pipelines.run import reconcile, start_progress


def global_state() -> dict[str, Any]:
    import datasets
    import optuna
    import transformers

    return {
        # A set: a library that re-adds its own filter on a late import only moves it.
        "warning filters": set(warnings.filters),
        "environment": dict(os.environ),
        "optuna verbosity": optuna.logging.get_verbosity(),
        "transformers verbosity": transformers.logging.get_verbosity(),
        "transformers bars": transformers.utils.logging.is_progress_bar_enabled(),
        "datasets verbosity": datasets.logging.get_verbosity(),
        "datasets bars": datasets.is_progress_bar_enabled(),
        "mlflow log level": logging.getLogger("mlflow").level,
        # paused and frozen during start-up only (search/start_up.py)
        "garbage collector": (gc.isenabled(), gc.get_freeze_count()),
    }


@pytest.fixture(scope="module")
def study(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("api")
    config = tiny_config(tiny_model_dir, tiny_data, out)
    config["space"] = {"methods": ["lora", "ia3"], "lora": {"lr": {"low": 5e-3, "high": 2e-2}}}
    # Imported first, as a notebook would: some add warning filters or set up their
    # loggers on import, which is theirs to do, not peftsearch's.
    import datasets  # noqa: F401
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import plotly.graph_objects
    import plotly.graph_objs._deprecations
    import plotly.io
    import plotly.tools  # noqa: F401
    import requests  # noqa: F401
    import transformers  # noqa: F401

    before = global_state()
    result = peftsearch.run(config, overrides=["search.n_trials=2"], quiet=True)
    return {"result": result, "before": before, "after": global_state(), "out": out}


def test_run_returns_the_study(study: dict[str, Any]) -> None:
    result = study["result"]
    assert list(result.trials["trial"]) == [0, 1]
    assert set(result.front["trial"]) == set(result.front_numbers) and result.front_numbers
    assert result.front["accuracy"].is_monotonic_decreasing
    assert result.stop_reason == "trials: 2 trials done (search.n_trials)"
    assert result.recommend(prefer="params").met
    assert result.report().is_file()


def test_load_reads_the_same_study(study: dict[str, Any], tmp_path: Path) -> None:
    result = study["result"]
    loaded = peftsearch.load(result.study_dir)
    assert loaded.rows == result.rows and loaded.front_numbers == result.front_numbers
    out = loaded.export(tmp_path / "adapter", trial=loaded.front_numbers[0])
    assert (out / "adapter_config.json").is_file()
    with pytest.raises(peftsearch.UserError, match="--trial: trial 99 is not in study"):
        loaded.export(tmp_path / "other", trial=99)


def test_library_code_leaves_no_global_state(study: dict[str, Any]) -> None:
    before, after = study["before"], study["after"]
    for key in before:
        assert before[key] == after[key], key


def test_tracking_off_writes_no_mlflow_store(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["space"] = {"methods": ["ia3"]}
    config["search"]["n_trials"] = 1
    config["tracking"] = {"enabled": False}
    result = peftsearch.run(config, quiet=True)
    assert list(result.trials["status"]) == ["COMPLETE"]
    assert not (tmp_path / "out" / "mlflow.db").exists()
    assert not (tmp_path / "out" / "mlartifacts").exists()


def test_phase_start_progress_counts_earlier_runs(study: dict[str, Any]) -> None:
    config = peftsearch.load(study["result"].study_dir).config
    console = Console(quiet=True)
    progress = start_progress(builders.build_study(config), 5, console)
    assert progress.done == 2 and progress.best_accuracy is not None
    assert progress.line().startswith("trials 2/5 | running 0 | failed 0 | best accuracy 0.")


def test_phase_reconcile_warns_about_running_trials(study: dict[str, Any]) -> None:
    config = peftsearch.load(study["result"].study_dir).config
    storage = builders.build_study(config)
    storage.ask()  # left RUNNING, as by a driver that died
    console = Console(record=True, width=200)
    reconcile(storage, builders.build_tracker(config), console, resume=False, study_dir=Path("S"))
    assert "1 trial(s) of this study are RUNNING" in console.export_text()
    reconcile(storage, builders.build_tracker(config), console, resume=True, study_dir=Path("S"))
    assert "1 interrupted trial(s) re-queued" in console.export_text()


def test_early_stopping_is_off_for_a_run_of_few_trials(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Rungs cost an evaluation per trial and pay off only from eta x min_trials trials:
    a run with fewer (by search.n_trials or by its budget) says it and goes without."""
    import optuna

    from peftsearch.search.budget import Budget, BudgetLimits
    from peftsearch.search.cost_model import CostModel

    data = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    data["search"]["n_trials"] = 9
    config = parse_config(data)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    assert build_rungs(config, study, (2,), None, None, 2) == ((2,), None)
    model = CostModel(step_seconds=1.0, eval_seconds=3.0, setup_seconds=1.0, reference_params=1)
    trial_seconds = model.typical(config.training.max_steps)  # 1 + 6 steps + 3
    assert trial_seconds == 10.0
    eight = Budget(BudgetLimits(device_seconds=8 * trial_seconds))
    rungs, note = build_rungs(config, study, (2,), eight, model, 2)
    assert rungs == () and note == (
        "Early stopping is off for this run: the budget allows about 8 trials, and judging "
        "trials at a rung pays off from 9 (search.early_stopping.eta x min_trials)."
    )
    nine = Budget(BudgetLimits(device_seconds=9 * trial_seconds))
    assert build_rungs(config, study, (2,), nine, model, 2) == ((2,), None)
    spent = Budget(BudgetLimits(device_seconds=0.5 * trial_seconds))
    # no trial will run: nothing to say (the loop's stop line says why)
    assert build_rungs(config, study, (2,), spent, model, 2) == ((2,), None)
    few = parse_config(data, overrides=["search.n_trials=5"])
    rungs, note = build_rungs(few, study, (2,), None, None, 2)
    assert rungs == () and note is not None and "search.n_trials allows about 5 trials" in note


def test_builders_give_flat_arguments(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    data = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config = parse_config(data)
    rungs, board = builders.build_early_stopping(config, eval_rows=48)
    assert rungs == (2,) and board is not None  # 6 steps, eta 3
    off = parse_config(data, overrides=["search.early_stopping=false"])
    assert builders.build_early_stopping(off, eval_rows=48) == ((), None)
    checkpoint = builders.build_checkpoint(config)
    assert checkpoint.name_or_path == str(tiny_model_dir) and checkpoint.revision is None
    settings = builders.build_settings(config)
    assert settings.max_steps == 6 and settings.batch_size == 8


def test_a_search_starts_with_the_initial_design(study: dict[str, Any]) -> None:
    """Each method's smallest adapter at the top of its range first, one method after
    another (the fixture's run had two trials; other tests add to its study later)."""
    from peftsearch.search import read_records

    result = study["result"]
    first_run = read_records(earlier_study(result))[:2]
    assert [r.initial_design for r in first_run] == ["lora targets=qv", "ia3 targets=kv+ffn"]
    assert first_run[0].params["lora.lr"] == result.config.space.lora.lr.high
    assert first_run[0].params["lora.rank"] == min(result.config.space.lora.rank)
    assert [r.state for r in first_run] == ["COMPLETE", "COMPLETE"]


def test_warm_start_runs_the_earlier_front_first(
    study: dict[str, Any], tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from peftsearch.search import load_existing_study, read_records

    earlier = study["result"]
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["search"].update(study_name="warm", n_trials=len(earlier.front_numbers))
    config["search"]["warm_start"] = [str(earlier.study_dir)]
    config["space"] = {"methods": ["lora", "ia3"]}
    result = peftsearch.run(config, quiet=True)
    stored = read_records(load_existing_study("warm", result.config.storage_url))
    assert sorted(r.warm_start_from for r in stored) == [f"tiny:{n}" for n in earlier.front_numbers]
    params = {r.number: r.params for r in read_records(earlier_study(earlier))}
    assert sorted(str(r.params) for r in stored) == sorted(
        str(params[n]) for n in earlier.front_numbers
    )
    # Continuing the study does not queue them again.
    again = peftsearch.run(result.config, overrides=["search.n_trials=3"], quiet=True)
    stored = read_records(load_existing_study("warm", again.config.storage_url))
    assert len([r for r in stored if r.warm_start_from]) == len(earlier.front_numbers)
    assert len(stored) == 3


def earlier_study(result: Any) -> Any:
    from peftsearch.search import load_existing_study

    return load_existing_study(result.config.search.study_name, result.config.storage_url)


def test_front_is_scored_once_on_a_held_out_test_set(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from helpers import sentiment_rows

    test_csv = tmp_path / "test.csv"
    test_csv.write_text(
        "text,label\n" + "".join(f"{t},{y}\n" for t, y in sentiment_rows(40, seed=3))
    )
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["data"]["test"] = str(test_csv)
    config["search"]["n_trials"] = 3
    config["space"] = {"methods": ["lora", "ia3"], "lora": {"lr": {"low": 5e-3, "high": 2e-2}}}
    config["budget"] = {"max_trials": 3}
    result = peftsearch.run(config, quiet=True)
    trials = result.trials
    on_front = trials["trial"].isin(result.front_numbers)
    assert trials.loc[on_front, "test_accuracy"].notna().all()
    assert (trials.loc[on_front, "test_rows"] == 40).all()
    assert trials.loc[~on_front, "test_accuracy"].isna().all()
    assert "on the held-out test set" in result.recommend().text
    out = result.export(tmp_path / "adapter", trial=result.front_numbers[0])
    assert "accuracy on the held-out test set (40 rows)" in (out / "README.md").read_text()
    # Scoring is device time: the budget counts it.
    spent = result.extra["budget"]["spent_device_seconds"]
    assert spent > float(trials["device_seconds"].sum())


def test_warm_start_leaves_out_configs_the_space_cannot_express(
    study: dict[str, Any], tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The earlier front used ranks 4-16 and IA3 in every layer; this space offers
    neither, so nothing is queued and no trial fails for it."""
    from peftsearch.search import load_existing_study, read_records

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["search"].update(study_name="narrow", n_trials=1)
    config["search"]["warm_start"] = [str(study["result"].study_dir)]
    config["space"] = {
        "methods": ["lora", "ia3"],
        "lora": {"rank": [32]},
        "ia3": {"targets": ["kv"], "layers": ["top-half"]},
    }
    result = peftsearch.run(config, quiet=True)
    stored = read_records(load_existing_study("narrow", result.config.storage_url))
    assert not [r for r in stored if r.warm_start_from]
    assert list(result.trials["status"]) == ["COMPLETE"]


def test_the_model_without_an_adapter_is_the_baseline(study: dict[str, Any]) -> None:
    """Once per study: the majority class, in pareto.json and in the recommendation, so
    a non-expert sees what fine-tuning bought; the tiny BERT has no classifier head, so
    the base model is not scored (a new head's random weights score chance)."""
    import json

    result = study["result"]
    saved = json.loads((result.study_dir / "pareto.json").read_text())
    baseline = saved["summary"]["baseline"]
    assert set(baseline) == {"majority_class"}
    for plain in baseline.values():
        assert {"accuracy", "macro_f1", "trainable_params", "cost_usd"} <= set(plain)
        assert plain["trainable_params"] == 0
    assert baseline["majority_class"]["accuracy"] == pytest.approx(0.5)  # balanced tiny data
    text = peftsearch.load(result.study_dir).recommend().text
    assert "Fine-tuning adds " in text and "over the model as it is" in text
