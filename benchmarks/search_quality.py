"""Search quality, replayed against the measured PEFT tables (benchmarks/peft_table.py).

Run:

    .venv/bin/python benchmarks/search_quality.py --json        # the figures, one JSON object
    .venv/bin/python benchmarks/search_quality.py --verify 2    # re-measure 2 rows for real
    .venv/bin/python benchmarks/search_quality.py --verify-design   # the initial design, live

Each search is the product's own ``SearchLoop``, sampler, rung board (early stopping),
budget and cost model; only the executor is replaced by ``TableExecutor``, which answers
a trial from its measured row on simulated time: setup, then each step and evaluation at
the row's measured device-seconds, with the rung accuracies at the rungs. A sampled
config maps to exactly one row: the table holds every config of its grid (``table_space``), and a
sampled learning rate is snapped to the nearest of the method's grid points (log scale).

Score: the hypervolume of a search's front as a fraction of the table's true front, on
normalised objectives: error rate 1 - accuracy on [0, 0.5], log10 of the trainable
parameters on the table's range, device-seconds on [0, the table's dearest trial]. The
reference point (``REFERENCE``) is accuracy 0.5, so a trial below it adds nothing, and
10% beyond the largest and the dearest trial, so those still count. Budgets are fractions
of the exhaustive cost (every row, run in full).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peft_table import (
    LLM_DATASETS,
    TABLES,
    grid_params,
    table_config,
    table_name,
    table_space,
)

STRATEGIES = {
    # name: (sampler, early stopping)
    "default": ("tpe", True),
    "tpe_no_early_stopping": ("tpe", False),
    "nsga2": ("nsga2", False),
    "random": ("random", False),
    "random_early_stopping": ("random", True),
}
FRACTIONS = (0.1, 0.15, 0.25, 0.5)
ACCURACY_FLOOR = 0.5  # the reference point's accuracy
REFERENCE = (1.0, 1.1, 1.1)  # in normalised (error, log params, cost) units


@dataclass
class Row:
    method: str
    config: str
    lr: float
    accuracy: float
    rungs: dict[int, float]
    trainable_params: int
    total_params: int
    step_seconds: float
    eval_seconds: float
    setup_seconds: float
    steps: int
    eval_rows: int
    # what one rung's evaluation costs: the final evaluation's seconds, or for a causal
    # LM, whose default rung scores token accuracy, its teacher-forced pass alone
    rung_seconds: float
    # LoRA+ (trained with peft's create_loraplus_optimizer): not in the peft config
    loraplus_lr_ratio: float | None = None
    # a causal LM's rungs scored by exact match too (generating: the full evaluation's cost)
    rungs_exact_match: dict[int, float] = field(default_factory=dict)
    # and their eval loss (the teacher-forced pass's, as token accuracy: no extra cost);
    # measured from the table's 26th row on
    rungs_eval_loss: dict[int, float] = field(default_factory=dict)

    @property
    def full_seconds(self) -> float:
        """The config run in full with its one final evaluation: the true front's cost
        (rung evaluations are what early stopping pays on top)."""
        return self.setup_seconds + self.steps * self.step_seconds + self.eval_seconds


def load_table(path: Path) -> list[Row]:
    """The table's COMPLETE seed-0 rows. A causal-LM table's rungs are its token accuracy
    (the product's default rung signal), each at the cost of its teacher-forced pass."""
    rows = []
    with path.open() as handle:
        for raw in csv.DictReader(handle):
            if raw["status"] != "COMPLETE" or int(raw.get("seed") or 0):
                continue  # other training seeds are the seed-spread rows (peft_table.py)
            steps = json.loads(raw["rung_steps"])
            eval_seconds = float(raw["eval_seconds"])
            teacher_forced = json.loads(raw.get("rung_tf_seconds") or "[]")
            exact = json.loads(raw.get("rung_exact_match") or "[]")
            losses = json.loads(raw.get("rung_eval_loss") or "[]")
            rows.append(
                Row(
                    method=raw["method"],
                    config=raw["peft_config"],
                    lr=float(raw["lr"]),
                    accuracy=float(raw["accuracy"]),
                    rungs=dict(zip(steps, json.loads(raw["rung_accuracy"]), strict=True)),
                    trainable_params=int(raw["trainable_params"]),
                    total_params=int(raw["total_params"]),
                    step_seconds=float(raw["step_seconds"]),
                    eval_seconds=eval_seconds,
                    setup_seconds=float(raw["setup_seconds"]),
                    steps=int(raw["steps"]),
                    eval_rows=int(raw["eval_rows"]),
                    rung_seconds=(
                        statistics.mean(teacher_forced) if teacher_forced else eval_seconds
                    ),
                    loraplus_lr_ratio=_loraplus(json.loads(raw["params"])),
                    rungs_exact_match=dict(zip(steps, exact, strict=True)) if exact else {},
                    rungs_eval_loss=dict(zip(steps, losses, strict=True)) if losses else {},
                )
            )
    return rows


def table_path(dataset: str) -> Path:
    return TABLES / f"{table_name(dataset)}.csv"


def exact_match_rungs(table: Table) -> Table:
    """The causal-LM table as a search with ``rung_metric: exact_match`` sees it: rungs
    that generate, at the cost of a full evaluation."""
    import dataclasses

    return Table(
        [
            dataclasses.replace(r, rungs=r.rungs_exact_match, rung_seconds=r.eval_seconds)
            for r in table.rows
        ]
    )


def eval_loss_rungs(table: Table) -> Table:
    """The causal-LM table as a search with ``rung_metric: eval_loss`` sees it: rungs
    scored by 1/perplexity (the task's score for eval loss) at the teacher-forced
    pass's cost; only the rows that recorded their rung loss."""
    import dataclasses

    return Table(
        [
            dataclasses.replace(
                r, rungs={step: math.exp(-loss) for step, loss in r.rungs_eval_loss.items()}
            )
            for r in table.rows
            if r.rungs_eval_loss
        ]
    )


def rung_signals(table: Table) -> dict[str, Any]:
    """How well each rung signal ranks the configs as the final exact match does
    (Spearman's rank correlation over the table's rows), and what a rung costs with each
    (median seconds): token accuracy and eval loss (one teacher-forced pass) against exact
    match (generating). Eval loss, recorded from the 26th row on, is compared on those
    rows, beside the other two on the same rows."""
    import pandas as pd

    (step,) = sorted({s for r in table.rows for s in r.rungs})[-1:]

    def rho(rows: list[Row], values: list[float]) -> float:
        final = pd.Series([r.accuracy for r in rows])
        return float(pd.Series(values).corr(final, method="spearman"))

    def signals(rows: list[Row]) -> dict[str, float]:
        found = {
            "token_accuracy": rho(rows, [r.rungs[step] for r in rows]),
            "exact_match": rho(rows, [r.rungs_exact_match[step] for r in rows]),
        }
        if rows and all(r.rungs_eval_loss for r in rows):
            found["eval_loss"] = rho(rows, [-r.rungs_eval_loss[step] for r in rows])
        return found

    with_loss = [r for r in table.rows if r.rungs_eval_loss]
    return {
        "rows": len(table.rows),
        "rung_step": step,
        "spearman_with_final_exact_match": signals(table.rows),
        "rows_with_eval_loss": len(with_loss),
        "spearman_on_rows_with_eval_loss": signals(with_loss) if len(with_loss) > 2 else None,
        "rung_seconds": {
            "token_accuracy": statistics.median(r.rung_seconds for r in table.rows),
            "eval_loss": statistics.median(r.rung_seconds for r in table.rows),
            "exact_match": statistics.median(r.eval_seconds for r in table.rows),
        },
    }


def _loraplus(params: dict[str, Any]) -> float | None:
    ratio = params.get(f"{params['method']}.loraplus_lr_ratio")
    return None if ratio in (None, 1.0) else float(ratio)


class Table:
    """The measured rows, looked up by (method, peft config, LoRA+ ratio) and snapped
    learning rate."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        # the table's trial shape (every row has it)
        self.steps = max((r.steps for r in rows), default=0)
        self.eval_rows = max((r.eval_rows for r in rows), default=0)
        self._by_config: dict[tuple[str, str, float | None], list[Row]] = {}
        for row in rows:
            key = (row.method, row.config, row.loraplus_lr_ratio)
            self._by_config.setdefault(key, []).append(row)

    def lookup(
        self,
        method: str,
        peft_config: dict[str, Any],
        lr: float,
        loraplus_lr_ratio: float | None = None,
    ) -> Row:
        config = json.dumps(peft_config, sort_keys=True)
        candidates = self._by_config.get((method, config, loraplus_lr_ratio))
        if not candidates:
            # ValueError: the loop records the trial as FAIL (only a partial table has gaps)
            raise ValueError(f"not measured yet: {method} {config}")
        return min(candidates, key=lambda r: abs(math.log(r.lr) - math.log(lr)))

    @property
    def exhaustive_seconds(self) -> float:
        return sum(r.full_seconds for r in self.rows)


@dataclass
class TableExecutor:
    """``TrialExecutor`` answering from the table on simulated time (one slot)."""

    table: Table
    clock: Any
    board: Any = None
    # a row already measured in full is answered at no cost: the most a search that
    # recognised repeated configs could save (benchmarks/search_variants.py)
    free_repeats: bool = False
    pending: list[Any] = field(default_factory=list)
    measured: dict[int, Any] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        return 1

    def submit(self, request: Any) -> None:
        self.pending.append(request)

    def wait(self) -> list[Any]:
        from peftsearch.trials import TrialResult
        from peftsearch.trials.deadline import Deadline

        if not self.pending:
            return []
        request = self.pending.pop(0)
        row = self.table.lookup(
            request.method,
            request.peft_config,
            request.learning_rate,
            getattr(request, "loraplus_lr_ratio", None),
        )
        if self.free_repeats and id(row) in self.measured:
            return [self.repeat(request.number, self.measured[id(row)])]
        started = self.clock.now
        deadline = Deadline(request.max_seconds, clock=self.clock, started=started)
        result = TrialResult(
            request.number,
            request.method,
            "COMPLETE",
            job=request.key,
            trainable_params=row.trainable_params,
            total_params=row.total_params,
            trainable_pct=100 * row.trainable_params / row.total_params,
            setup_seconds=row.setup_seconds,
        )
        self.clock.now += row.setup_seconds
        total = row.steps
        for step in range(1, total + 1):
            self.clock.now += row.step_seconds
            deadline.record_step(row.step_seconds)
            result.steps = step
            if step in request.rungs and step < total:
                self.clock.now += row.rung_seconds
                result.rung_seconds += row.rung_seconds
                result.evaluations += 1
                result.accuracy = row.rungs.get(step, row.accuracy)
                if self.board is not None and not self.board.report(
                    request.number, step, result.accuracy, row.trainable_params, row.step_seconds
                ):
                    result.status = "PRUNED"
                    break
            if step < total and not deadline.has_room(deadline.next_step + row.eval_seconds):
                result.status = "PRUNED"
                break
        else:
            self.clock.now += row.eval_seconds
            result.evaluations += 1
            result.accuracy = row.accuracy
            result.eval_rows = row.eval_rows
        result.train_seconds = result.steps * row.step_seconds
        result.eval_seconds = result.rung_seconds + (
            row.eval_seconds if result.status == "COMPLETE" else 0.0
        )
        result.device_seconds = self.clock.now - started
        result.spent_usd = result.device_seconds / 3600  # at $1 per device-hour
        result.cost_usd = (result.device_seconds - result.rung_seconds) / 3600
        if result.status == "COMPLETE":
            self.measured[id(row)] = result
        return [result]

    @staticmethod
    def repeat(number: int, earlier: Any) -> Any:
        import dataclasses

        return dataclasses.replace(earlier, number=number, device_seconds=0.0, spent_usd=0.0)

    def close(self) -> None:
        self.pending.clear()


class Box:
    """Normalised objectives and the fixed reference point (see the module docstring)."""

    def __init__(self, table: Table) -> None:
        params = [math.log10(r.trainable_params) for r in table.rows]
        self.params_low, self.params_high = min(params), max(params)
        self.cost_high = max(r.full_seconds for r in table.rows)

    def point(self, accuracy: float, params: int, seconds: float) -> list[float]:
        span = max(1e-9, self.params_high - self.params_low)
        return [
            min(1.0, (1 - accuracy) / (1 - ACCURACY_FLOOR)),
            (math.log10(params) - self.params_low) / span,
            min(1.0, seconds / self.cost_high),
        ]

    def hypervolume(self, points: list[list[float]]) -> float:
        import numpy as np
        from optuna._hypervolume import compute_hypervolume

        inside = [p for p in points if all(v < r for v, r in zip(p, REFERENCE, strict=True))]
        if not inside:
            return 0.0
        return float(compute_hypervolume(np.array(inside), np.array(REFERENCE)))


@dataclass
class Replay:
    """One search: the fraction of the true front's hypervolume after each trial, and
    its Pareto configs as (source, method, Optuna params), what a warm start reads."""

    curve: list[tuple[float, float]]  # (fraction of exhaustive cost spent, HV fraction)
    front: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def at(self, fraction: float) -> float:
        reached = [hv for spent, hv in self.curve if spent <= fraction]
        return max(reached, default=0.0)

    def budget_to(self, target: float) -> float | None:
        return next((spent for spent, hv in self.curve if hv >= target), None)


def replay(
    table: Table,
    info: Any,
    options: dict[str, Any],
    config: Any,
    strategy: str,
    seed: int,
    fraction: float,
    warm: list[tuple[str, str, dict[str, Any]]] | None = None,
    free_repeats: bool = False,
    initial_design: bool | None = None,
) -> Replay:
    """One search at ``fraction`` of the exhaustive cost; ``warm``: configs of an
    earlier study's front, queued first by the product's warm start; ``free_repeats``:
    see ``TableExecutor``; ``initial_design``: queue the product's initial design after
    the warm start (None: as the product does for the strategy's sampler)."""

    import optuna

    from peftsearch.pipelines.builders import (
        build_early_stopping,
        build_initial_design,
        build_rungs,
        build_space_fits,
    )
    from peftsearch.results import front_of, trial_rows
    from peftsearch.search import SearchLoop, make_sampler
    from peftsearch.search.budget import Budget, BudgetLimits
    from peftsearch.search.cost_model import CostModel
    from peftsearch.search.first_configs import enqueue_warm_start
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import TrialResult

    sampler_name, early = STRATEGIES[strategy]
    # The budget ends every search; this cap only bounds a dry run on an unfinished table.
    max_trials = 3 * max(1, len(table.rows))

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    exhaustive = table.exhaustive_seconds
    budget = Budget(BudgetLimits(device_seconds=fraction * exhaustive), clock=clock)
    calibration = statistics.median(r.step_seconds for r in table.rows if r.method == "lora")
    reference = next(r for r in table.rows if r.method == "lora")
    cost_model = CostModel.from_calibration(
        TrialResult(
            -1,
            "lora",
            "COMPLETE",
            steps=3,
            train_seconds=3 * calibration,
            eval_seconds=reference.eval_seconds,
            setup_seconds=reference.setup_seconds,
            trainable_params=reference.trainable_params,
        ),
        table.eval_rows,
        table.eval_rows,
    )
    with optuna_quiet():
        study = optuna.create_study(
            directions=[o.direction for o in objectives_of(DEFAULT_OBJECTIVES)],
            sampler=make_sampler(sampler_name, seed, 10_000),
        )
    # the product's early-stopping defaults and rung policy, as a search of this table
    # builds them: off when the budget affords too few trials for them to pay
    rungs, board = build_early_stopping(config, table.eval_rows) if early else ((), None)
    replay = config.model_copy(
        update={"search": config.search.model_copy(update={"n_trials": max_trials})}
    )
    rungs, _ = build_rungs(replay, study, rungs, budget, cost_model, slots=1)
    board = board if rungs else None
    executor = TableExecutor(table, clock, board, free_repeats)
    if warm:
        with optuna_quiet():
            enqueue_warm_start(study, warm, list(options), build_space_fits(config, info))
    # the product's initial design, as a search with this strategy's sampler has it
    search = config.search.model_copy(update={"sampler": sampler_name})
    if initial_design is not None:
        search.initial_design = initial_design
    before_ask = build_initial_design(config.model_copy(update={"search": search}), info)
    box, truth = Box(table), true_hypervolume(table)
    points: list[list[float]] = []
    curve: list[tuple[float, float]] = []

    def record(result: Any) -> None:
        if result.status == "COMPLETE":
            points.append(
                # the cost objective, as the product's front has it (rungs excluded)
                box.point(result.accuracy, result.trainable_params, result.cost_usd * 3600)
            )
        curve.append((budget.spent / exhaustive, box.hypervolume(points) / truth))

    def count(choice: Any) -> tuple[int, int]:
        row = table.lookup(
            choice.method, choice.peft_config, choice.learning_rate, choice.loraplus_lr_ratio
        )
        return row.trainable_params, row.total_params

    loop = SearchLoop(
        study=study,
        executor=executor,
        sample=lambda trial: sample_choice(trial, options, info),
        n_trials=max_trials,
        adapter_root=Path("unused"),
        count_params=count,
        num_layers=info.num_layers,
        max_steps=table.steps,
        budget=budget,
        cost_model=cost_model,
        rungs=rungs,
        on_result=record,
        before_ask=before_ask,
    )
    with optuna_quiet():
        loop.run()
        front = set(front_of(trial_rows(study)))
    configs = [
        (f"{strategy}:{t.number}", str(t.params.get("method")), dict(t.params))
        for t in study.trials
        if t.number in front
    ]
    return Replay(curve, configs)


def optuna_quiet() -> Any:
    from peftsearch.search import quiet_optuna

    return quiet_optuna()


def true_hypervolume(table: Table) -> float:
    box = Box(table)
    return box.hypervolume(
        [box.point(r.accuracy, r.trainable_params, r.full_seconds) for r in table.rows]
    )


def model_info_and_options(dataset: str) -> tuple[Any, dict[str, Any], Any]:
    """The model's structure, the searched space and the config a search of the table
    would run with (the product's defaults for everything the table does not fix)."""
    import tempfile

    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import build_model_info

    with tempfile.TemporaryDirectory() as temp:
        config = parse_config(table_config(dataset, Path(temp)))
        if dataset in LLM_DATASETS:
            # the table measured the product's default rung (its metrics recorded both)
            early = config.search.early_stopping.model_copy(update={"rung_metric": None})
            search = config.search.model_copy(update={"early_stopping": early})
            config = config.model_copy(update={"search": search})
        labels = {"trec": 6}.get(dataset, 0 if dataset in LLM_DATASETS else 2)
        info, _ = build_model_info(config, [str(label) for label in range(labels)])
        return info, config.method_options(), config


def check_complete(table: Table, options: dict[str, Any], name: str) -> None:
    expected = len(grid_params(name))
    if len(table.rows) < expected:
        raise SystemExit(
            f"{name}: {len(table.rows)} of {expected} configs measured; finish it with "
            f"`python benchmarks/peft_table.py --dataset {name}` (it resumes)"
        )


def horizon(strategy: str) -> float:
    """How far each search runs, as a fraction of the exhaustive cost. Every target is
    read at or below half the cost; random search runs on to the full cost so that the
    budget it needs to reach 95% is known (model-based samplers' per-trial cost grows
    with the trials, and half the cost keeps the command inside its ten minutes)."""
    return 1.0 if STRATEGIES[strategy][0] == "random" else 0.5


def summarise(replays: list[Replay], horizon: float, reach: float = 0.95) -> dict[str, Any]:
    needed = sorted(r.budget_to(reach) or math.inf for r in replays)
    median = statistics.median(needed)
    return {
        "hv_at": {str(f): statistics.median(r.at(f) for r in replays) for f in FRACTIONS},
        # null: the median seed did not reach 95% within the strategy's horizon
        "budget_to_95": None if math.isinf(median) else median,
        "seeds_reaching_95": sum(not math.isinf(n) for n in needed),
        "curve": [
            [f, statistics.median(r.at(f) for r in replays)]
            for f in (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)
            if f <= horizon
        ],
    }


def evaluate(
    dataset: str,
    seeds: int,
    partial: bool = False,
    names: list[str] | None = None,
    rung_signal: str = "token_accuracy",
) -> dict[str, Any]:
    table = Table(load_table(table_path(dataset)))
    if rung_signal == "exact_match":
        table = exact_match_rungs(table)
    elif rung_signal == "eval_loss":
        table = eval_loss_rungs(table)
    info, options, config = model_info_and_options(dataset)
    if not partial:
        check_complete(table, options, dataset)
    strategies: dict[str, Any] = {}
    for name in names or list(STRATEGIES):
        runs = [
            replay(table, info, options, config, name, seed, horizon(name)) for seed in range(seeds)
        ]
        strategies[name] = {"horizon": horizon(name), **summarise(runs, horizon(name))}
    return {"rows": len(table.rows), "strategies": strategies}


def warm_start_value(seeds: int, source: str = "sst2", target: str = "trec") -> dict[str, Any]:
    """Hypervolume on ``target`` at 5/10/15% of its exhaustive cost, with and without a
    warm start from the front of a default search on ``source`` at 15% of its cost. The
    source search uses the target's space, as a team reusing its settings would."""
    source_table = Table(load_table(table_path(source)))
    target_table = Table(load_table(table_path(target)))
    source_info, _, _ = model_info_and_options(source)
    target_info, options, config = model_info_and_options(target)
    check_complete(target_table, options, target)
    cold, warm, queued = [], [], []
    for seed in range(seeds):
        earlier = replay(source_table, source_info, options, config, "default", seed, 0.15)
        queued.append(len(earlier.front))
        cold.append(replay(target_table, target_info, options, config, "default", seed, 0.15))
        warm.append(
            replay(target_table, target_info, options, config, "default", seed, 0.15, earlier.front)
        )
    at = (0.05, 0.1, 0.15)
    return {
        "source": source,
        "target": target,
        "front_configs_queued": statistics.median(queued),
        "cold": {str(f): statistics.median(r.at(f) for r in cold) for f in at},
        "warm": {str(f): statistics.median(r.at(f) for r in warm) for f in at},
    }


@contextlib.contextmanager
def live_runner(dataset: str, num_threads: int = 1) -> Iterator[Any]:
    """``measure(params) -> accuracy``: a config trained for real with the product's
    runner, as the table measured its rows (the rung evaluations included)."""
    import tempfile
    import warnings

    import optuna

    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import (
        build_data,
        build_early_stopping,
        build_model_info,
        build_model_source,
        build_settings,
    )
    from peftsearch.spaces import sample_choice
    from peftsearch.trials import TrialJob, TrialRunner

    with tempfile.TemporaryDirectory() as temp, warnings.catch_warnings():
        # the grid spans the wider learning-rate ranges the table was measured with, so
        # FixedTrial warns that some lie outside today's defaults: expected here
        warnings.filterwarnings("ignore", ".*out of the range", UserWarning)
        config = parse_config(table_config(dataset, Path(temp)))
        data = build_data(config)
        info, _ = build_model_info(config, data.label_names)
        rungs, _ = build_early_stopping(config, len(data.eval))
        runner = TrialRunner(
            build_model_source(config, data),
            data,
            build_settings(config),
            device="cpu",
            device_name="cpu",
            num_threads=num_threads,
        )
        options = config.method_options()

        def measure(params: dict[str, Any]) -> float:
            choice = sample_choice(optuna.trial.FixedTrial(params), options, info)
            request = TrialJob(
                0, choice.method, choice.peft_config, choice.learning_rate, None, rungs=rungs
            )
            return runner.run(request).accuracy or 0.0

        yield measure


def verify(dataset: str, count: int) -> float:
    """Re-measure ``count`` random rows for real with the product's runner."""
    import random

    table = Table(load_table(table_path(dataset)))
    picked = random.Random(1).sample(table.rows, count)
    info, options, _ = model_info_and_options(dataset)
    worst = 0.0
    with live_runner(dataset) as measure:
        for row in picked:
            params = next(p for p in grid_params(dataset) if row_of(table, p, options, info) is row)
            accuracy = measure(params)
            print(
                f"{row.method} lr={row.lr}: table {row.accuracy:.4f}, now {accuracy:.4f}",
                file=sys.stderr,
            )
            worst = max(worst, abs(accuracy - row.accuracy))
    return worst


def row_of(table: Table, params: dict[str, Any], options: dict[str, Any], info: Any) -> Row:
    """The row the replay answers these params with (the learning rate snapped)."""
    import warnings

    import optuna

    from peftsearch.spaces import sample_choice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        choice = sample_choice(optuna.trial.FixedTrial(params), options, info)
    return table.lookup(choice.method, choice.peft_config, choice.learning_rate)


def verify_design(dataset: str) -> dict[str, Any]:
    """The initial design's configs trained for real at their own learning rates (the top
    of each method's range) and at the learning rate of the row the replay answers them
    with, in one run: how far the replay's credit for the design rests on its snapping."""
    from peftsearch.pipelines.builders import build_design_configs

    table = Table(load_table(table_path(dataset)))
    info, options, config = model_info_and_options(dataset)
    rows = []
    with live_runner(dataset, num_threads=2) as measure:
        for label, method, params in build_design_configs(config, info):
            row = row_of(table, params, options, info)
            own = measure(params)
            snapped = own if math.isclose(row.lr, params[f"{method}.lr"]) else None
            if snapped is None:
                snapped = measure({**params, f"{method}.lr": row.lr})
            rows.append(
                {
                    "config": label,
                    "lr": params[f"{method}.lr"],
                    "row_lr": row.lr,
                    "table": row.accuracy,
                    "at_row_lr": snapped,
                    "at_own_lr": own,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    differences = [r["at_own_lr"] - r["at_row_lr"] for r in rows]
    return {"configs": rows, "median_own_minus_row": statistics.median(differences)}


def plot(figures: dict[str, Any], path: Path) -> None:
    """The anytime curves (median HV fraction against the fraction of the exhaustive
    cost), one line per strategy, as a plotly HTML page (docs/screenshot.py makes a PNG)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, strategy in figures["strategies"].items():
        xs, ys = zip(*strategy["curve"], strict=True)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name))
    figure.add_hline(y=0.95, line_dash="dot", annotation_text="95% of the true front")
    figure.add_vline(x=0.15, line_dash="dot", annotation_text="15% of the cost")
    figure.update_layout(
        title=f"Search quality on the {figures['dataset']} table ({figures['rows']} configs, "
        f"median of {figures['seeds']} seeds)",
        xaxis_title="device time spent, as a fraction of running every config",
        yaxis_title="hypervolume / true front's",
        template="plotly_white",
        width=1000,
        height=560,
    )
    figure.update_xaxes(type="log")
    page = figure.to_html(include_plotlyjs=True, full_html=True, config={"displayModeBar": False})
    path.write_text(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--verify", type=int, default=0, help="re-measure N rows for real")
    parser.add_argument(
        "--verify-design",
        action="store_true",
        help="train the initial design for real at its own and at the table's learning rates",
    )
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument(
        "--rung-signal",
        choices=["token_accuracy", "exact_match", "eval_loss"],
        default="token_accuracy",
        help="causal-LM tables: what rungs score (the product's default: token accuracy); "
        "eval_loss replays only the rows that recorded it (with --allow-partial)",
    )
    parser.add_argument("--strategies", nargs="*", choices=list(STRATEGIES), default=None)
    parser.add_argument("--plot", type=Path, default=None, help="write the curves as HTML here")
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="also measure warm-starting the TREC table from an SST-2 search's front",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="replay an unfinished table (unmeasured configs fail at no cost): a dry run of "
        "the harness, not figures to quote",
    )
    args = parser.parse_args()
    if args.verify:
        print(f"largest accuracy deviation: {verify(args.dataset, args.verify):.4f}")
        return
    if args.verify_design:
        print(json.dumps(verify_design(args.dataset)))
        return
    figures = evaluate(
        args.dataset, args.seeds, args.allow_partial, args.strategies, args.rung_signal
    )
    tables = {args.dataset: {"rows": figures["rows"]}}
    for other in ("sst2", "trec"):
        path = table_path(other)
        if other not in tables and path.is_file():
            tables[other] = {"rows": len(load_table(path))}
    output: dict[str, Any] = {
        "tables": tables,
        "seeds": args.seeds,
        "strategies": figures["strategies"],
        "table_space": table_space(args.dataset)[0],
    }
    if args.dataset in LLM_DATASETS:
        output["rung_signal"] = args.rung_signal
        output["rung_signals"] = rung_signals(Table(load_table(table_path(args.dataset))))
    if args.warm_start:
        output["warm_start"] = warm_start_value(args.seeds)
    if args.plot:
        plot({**figures, "dataset": args.dataset, "seeds": args.seeds}, args.plot)
    if args.json:
        print(json.dumps(output))
    else:
        print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
