"""The replay harness (benchmarks/search_quality.py) answers trials from a table faithfully:
exact lookups, simulated time, rungs, early stopping and allowances as the runner has them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import search_quality as sq

from peftsearch.search.early_stopping import RungBoard
from peftsearch.trials import TrialJob

CONFIG = {"peft_type": "LORA", "r": 8, "target_modules": ["query", "value"]}


def row(lr: float, accuracy: float, rungs: dict[int, float], params: int = 1000) -> sq.Row:
    return sq.Row(
        method="lora",
        config=json.dumps(CONFIG, sort_keys=True),
        lr=lr,
        accuracy=accuracy,
        rungs=rungs,
        trainable_params=params,
        total_params=100_000,
        step_seconds=1.0,
        eval_seconds=4.0,
        setup_seconds=2.0,
        steps=60,
        eval_rows=256,
        rung_seconds=4.0,
    )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table() -> sq.Table:
    return sq.Table(
        [row(1e-3, 0.6, {6: 0.52, 20: 0.55}), row(1e-2, 0.8, {6: 0.6, 20: 0.7}, params=900)]
    )


def request(lr: float, **kwargs: object) -> TrialJob:
    return TrialJob(0, "lora", CONFIG, lr, None, **kwargs)  # type: ignore[arg-type]


def test_a_sampled_learning_rate_snaps_to_the_nearest_grid_point(table: sq.Table) -> None:
    assert table.lookup("lora", CONFIG, 2e-3).lr == 1e-3  # log scale: 2e-3 is nearer 1e-3
    assert table.lookup("lora", CONFIG, 5e-3).lr == 1e-2
    with pytest.raises(ValueError, match="not measured"):
        table.lookup("lora", {**CONFIG, "r": 4}, 1e-3)


def test_a_full_trial_costs_what_the_row_measured(table: sq.Table) -> None:
    executor = sq.TableExecutor(table, Clock())
    executor.submit(request(1e-2, rungs=(6, 20)))
    (result,) = executor.wait()
    assert result.status == "COMPLETE" and result.accuracy == 0.8
    assert result.device_seconds == pytest.approx(2 + 60 * 1 + 3 * 4)  # setup, steps, 3 evals
    # the config's cost leaves out the two rung evaluations (search overhead)
    assert result.cost_usd * 3600 == pytest.approx(2 + 60 * 1 + 4)
    assert result.spent_usd * 3600 == pytest.approx(result.device_seconds)
    assert result.trainable_params == 900
    assert executor.wait() == []


def test_a_causal_lm_rung_costs_its_teacher_forced_pass(tmp_path: Path) -> None:
    """A causal-LM table's row: its rungs are token accuracy (the product's default rung
    signal) at the cost of the teacher-forced pass; exact match at the rung is kept."""
    import csv

    from peft_table import LLM_COLUMNS

    values = {column: "" for column in LLM_COLUMNS}
    values.update(
        method="lora",
        params=json.dumps({"method": "lora", "lora.lr": 1e-3}),
        peft_config=json.dumps(CONFIG, sort_keys=True),
        lr="0.001",
        status="COMPLETE",
        steps="32",
        accuracy="0.7",
        rung_steps="[10]",
        rung_accuracy="[0.81]",
        rung_exact_match="[0.4]",
        rung_eval_loss="[0.5]",
        rung_tf_seconds="[1.5]",
        trainable_params="1000",
        total_params="100000",
        step_seconds="1.0",
        eval_seconds="4.0",
        setup_seconds="2.0",
        eval_rows="48",
        seed="0",
    )
    path = tmp_path / "table.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LLM_COLUMNS)
        writer.writeheader()
        writer.writerow(values)
    (loaded,) = sq.load_table(path)
    assert loaded.rungs == {10: 0.81} and loaded.rungs_exact_match == {10: 0.4}
    assert loaded.rungs_eval_loss == {10: 0.5}
    # an eval-loss rung scores 1/perplexity at the same teacher-forced cost
    (by_loss,) = sq.eval_loss_rungs(sq.Table([loaded])).rows
    assert by_loss.rungs == {10: pytest.approx(math.exp(-0.5))} and by_loss.rung_seconds == 1.5
    table = sq.Table([loaded])
    assert (table.steps, table.eval_rows) == (32, 48)
    executor = sq.TableExecutor(table, Clock())
    executor.submit(request(1e-3, rungs=(10,)))
    (result,) = executor.wait()
    assert result.device_seconds == pytest.approx(2 + 32 * 1 + 1.5 + 4)
    assert result.cost_usd * 3600 == pytest.approx(2 + 32 * 1 + 4)
    assert result.eval_seconds == pytest.approx(1.5 + 4)


def test_early_stopping_sees_the_rung_accuracies(table: sq.Table) -> None:
    board = RungBoard(eta=3, min_trials=2, margin=0.01)
    board.report(99, 6, 0.9, 10, 1.0)  # a smaller, better trial already reported
    executor = sq.TableExecutor(table, Clock(), board)
    executor.submit(request(1e-3, rungs=(6, 20)))
    (result,) = executor.wait()
    assert result.status == "PRUNED" and result.steps == 6 and result.accuracy == 0.52


def test_the_allowance_stops_a_trial_as_the_runner_would(table: sq.Table) -> None:
    executor = sq.TableExecutor(table, Clock())
    executor.submit(request(1e-2, max_seconds=30.0))
    (result,) = executor.wait()
    assert result.status == "PRUNED" and result.device_seconds <= 30.0


def test_the_true_front_scores_one(table: sq.Table) -> None:
    box = sq.Box(table)
    truth = sq.true_hypervolume(table)
    assert truth > 0
    best = table.rows[1]
    alone = box.hypervolume([box.point(best.accuracy, best.trainable_params, best.full_seconds)])
    assert alone / truth == pytest.approx(1.0)  # the other row is dominated


def test_lr_ranges_span_the_learning_rates_within_noise_of_the_best() -> None:
    import lr_ranges

    rows = [
        row(1e-3, 0.60, {}),
        row(1e-2, 0.80, {}),
        row(3e-2, 0.78, {}),
        row(3e-2, 0.40, {}, params=500),
    ]
    table = sq.Table(rows)
    (lora,) = lr_ranges.method_ranges(table, floor=0.5).values()
    assert lora["best"] == 0.80
    assert lora["in_reach"] == [1e-2, 3e-2]  # 0.78 is tied with 0.80 at 256 rows; 0.60 is not
    assert [g["at_chance"] for g in lora["grid"]] == [0, 0, 1]
    assert lora["best_median_lr"] == 1e-2
