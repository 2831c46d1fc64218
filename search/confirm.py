"""Confirming the front: its most promising configs re-run with new training seeds.

A front built from one training run per config is optimistic twice over: training-seed
noise (often 2 to 3 points) is left out of its tie rule, and the most accurate of many
noisy runs is picked for being lucky as much as good. After the search, the ``top``
most accurate front configs are trained again with ``seeds`` new training seeds each
(``search.confirm``), on the same data and eval rows, to the full steps, without early
stopping. Their mean is what the front, the tie rule (with the study's pooled seed
variance, results/noise.py), ``recommend``, the report and the model card use.

The re-runs are charged inside the budget: while the search runs, the budget keeps back
their expected cost (``keep_back_for``), so the search stops early enough to leave it;
once it ends, the kept time is handed over and each re-run holds its own estimate
(``Budget.hold``) like any work outside the trials. A re-run that no longer fits is
skipped and said so. The device time is added to the study's overhead, so a continued
study's budget counts it too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peftsearch.search import records

if TYPE_CHECKING:
    import optuna

    from peftsearch.search.budget import Budget
    from peftsearch.search.executor import TrialExecutor
    from peftsearch.search.records import TrialRecord
    from peftsearch.trials import TrialJob, TrialResult

__all__ = [
    "Confirmation",
    "confirm_front",
    "confirm_seeds",
    "keep_back_for",
    "rerun_job",
    "run_cost",
]

# At most this share of a budget is kept back for confirmation: a small budget confirms
# fewer configs rather than searching hardly at all.
MAX_KEPT_SHARE = 0.25
# A re-run may use up to this multiple of its trial's measured cost (a trial's allowance
# is twice a cost model's estimate; a re-run's is known better: the same config ran)
RERUN_SLACK = 1.5


@dataclass
class Confirmation:
    """What confirmation did: re-runs per trial, and what it could not do."""

    runs: dict[int, int] = field(default_factory=dict)  # trial -> completed re-runs
    skipped: int = 0  # re-runs the budget had no room for
    failed: dict[str, str] = field(default_factory=dict)  # job key -> error
    device_seconds: float = 0.0

    def line(self) -> str:
        """One line for the console."""
        if not self.runs and not self.skipped and not self.failed:
            return "Confirmation: nothing to confirm (no trial on the front)."
        done = sum(self.runs.values())
        trials = ", ".join(str(n) for n in sorted(self.runs))
        text = (
            f"Confirmed the front: {done} re-run(s) with new training seeds of trial(s) "
            f"{trials or '-'} ({self.device_seconds:.0f} device-seconds)"
        )
        if self.skipped:
            text += f"; {self.skipped} skipped, no budget left for them"
        if self.failed:
            text += f"; {len(self.failed)} failed ({next(iter(self.failed.values()))})"
        return text + "."


def confirm_seeds(search_seed: int, seeds: int) -> list[int]:
    """The new training seeds: the search trained every trial with ``search.seed``."""
    return [search_seed + k for k in range(1, seeds + 1)]


def run_cost(result: TrialResult | dict[str, float]) -> float:
    """Device-seconds a re-run of a finished trial should take: its own time without
    the search's overhead (loading the model, rung evaluations, the frozen-layer cache,
    an attempt lost to memory)."""
    get = result.get if isinstance(result, dict) else lambda k, d=0.0: getattr(result, k, d)
    overhead = sum(
        float(get(k, 0.0) or 0.0)
        for k in ("load_seconds", "rung_seconds", "cache_seconds", "lost_seconds")
    )
    return max(0.0, float(get("device_seconds", 0.0) or 0.0) - overhead)


def keep_back_for(
    budget: Budget,
    runs: int,
    costs: list[float],
    estimates: list[float],
    slots: int,
    extra: float = 0.0,
) -> None:
    """Keep back the allowance of ``runs`` re-runs of a typical trial (``RERUN_SLACK``
    times the median of the full trials' ``costs`` so far, else of the launched trials'
    ``estimates``), in device time and, ``slots`` at a time, in wall time; plus
    ``extra`` device-seconds of other work after the search (scoring the front on
    ``data.test``); at most ``MAX_KEPT_SHARE`` of each limit."""
    sample = costs or estimates
    typical = statistics.median(sample) * RERUN_SLACK if sample and runs > 0 else 0.0
    device = runs * typical + extra
    wall = (math.ceil(runs / max(1, slots)) * typical + extra) / max(budget.share, 1e-9)
    if budget.limits.device_seconds is not None:
        device = min(device, MAX_KEPT_SHARE * budget.limits.device_seconds)
    if budget.limits.wall_seconds is not None:
        wall = min(wall, MAX_KEPT_SHARE * budget.limits.wall_seconds)
    budget.keep_back(device, wall)


def rerun_job(
    record: TrialRecord, seed: int, allowance: float | None, min_seconds: float = 0.0
) -> TrialJob:
    """Trial ``record``'s config again with training seed ``seed``, as it last trained
    (its base, and the memory levers it needed), to the full steps, saving nothing; like
    a trial, it does not start on an allowance below ``min_seconds`` (the cost model's
    least useful run)."""
    from peftsearch.trials import TrialJob

    result = record.result
    return TrialJob(
        number=record.number,
        method=record.method,
        peft_config=dict(record.peft_config or {}),
        learning_rate=float(record.summary["lr"]),
        loraplus_lr_ratio=record.summary.get("loraplus_lr_ratio"),
        adapter_dir=None,
        max_seconds=allowance,
        min_seconds=min_seconds,
        quantization=result.get("quantization") or "none",
        micro_batch_size=result.get("micro_batch_size"),
        gradient_checkpointing=result.get("gradient_checkpointing"),
        seed=seed,
        eval_hint=result["eval_seconds"] / result["evaluations"]
        if result.get("evaluations") and result.get("eval_seconds")
        else None,
    )


def confirm_front(
    study: optuna.Study,
    executor: TrialExecutor,
    front: Callable[[], list[int]],
    *,
    top: int,
    seeds: list[int],
    budget: Budget | None,
    min_seconds: float = 0.0,
    keep: float = 0.0,
) -> Confirmation:
    """Re-run the ``top`` most accurate trials of the front once per seed in ``seeds``,
    ``executor.slots`` at a time, until the ``top`` most accurate of the front as it then
    stands (``front()``, ranked by their mean over seeds) are all confirmed: a config
    whose new seeds pull its mean down makes room for the next one, which is confirmed in
    turn, so the recommendation is not an unconfirmed lucky run. At most ``2 x top``
    configs are confirmed, and none once the budget has no room. Each re-run is estimated
    at its trial's own cost (``run_cost``) or the cost model's estimate of it, whichever
    is larger. Results are stored per trial (``records.save_confirmation``) and their
    device time as the study's overhead. ``keep``: device-seconds the budget goes on
    keeping back for later work (scoring the front on ``data.test``)."""
    outcome = Confirmation()
    if budget is not None:  # the search is over: what it kept is confirmation's
        budget.keep_back(keep, keep / max(budget.share, 1e-9))
    confirmed: set[int] = set()
    while len(confirmed) < 2 * top:
        stored = {r.number: r for r in records.read_records(study)}
        ranked = sorted(
            (n for n in front() if n in stored), key=lambda n: (-_mean_score(stored[n]), n)
        )[:top]
        todo = [
            (number, seed)
            for number in ranked
            for seed in seeds
            if seed not in {r["seed"] for r in stored[number].confirmations}
        ][: max(0, 2 * top - len(confirmed)) * len(seeds)]
        if not todo:
            break
        confirmed.update(number for number, _ in todo)
        skipped = outcome.skipped
        _run_reruns(study, executor, stored, todo, budget, min_seconds, outcome)
        if outcome.skipped > skipped:  # the budget is spent: no further round
            break
    return outcome


def _run_reruns(
    study: optuna.Study,
    executor: TrialExecutor,
    stored: dict[int, TrialRecord],
    todo: list[tuple[int, int]],
    budget: Budget | None,
    min_seconds: float,
    outcome: Confirmation,
) -> None:
    """Run the (trial, seed) re-runs of ``todo``, each holding its estimate."""
    running: set[str] = set()
    todo = list(todo)
    while todo or running:
        while todo and len(running) < executor.slots:
            number, seed = todo.pop(0)
            record = stored[number]
            allowance = None
            if budget is not None:
                key = f"trial {number} seed {seed}"
                # what it cost, or what the cost model expected of it (setup included)
                estimate = max(
                    run_cost(record.result), record.estimated_seconds or 0.0, min_seconds
                )
                if not budget.hold(key, estimate, RERUN_SLACK):
                    outcome.skipped += 1
                    continue
                allowance = None if math.isinf(budget.held[key]) else budget.held[key]
            job = rerun_job(record, seed, allowance, min_seconds)
            running.add(job.key)
            executor.submit(job)
        if not running:
            break
        for result in executor.wait():
            running.discard(result.job)
            number, seed = result.number, _seed_of(result.job)
            assert number is not None
            if budget is not None:
                budget.release(result.job, result.device_seconds)
            records.add_overhead(study, result.device_seconds)
            records.save_confirmation(study, number, seed, result)
            outcome.device_seconds += result.device_seconds
            if result.status == "COMPLETE":
                outcome.runs[number] = outcome.runs.get(number, 0) + 1
            else:
                outcome.failed[result.job] = str(result.error)


def _mean_score(record: TrialRecord) -> float:
    scores = record.seed_scores
    return statistics.fmean(scores) if scores else -math.inf


def _seed_of(key: str) -> int:
    """The seed of a re-run's job key (``trial 3 seed 1``)."""
    return int(key.rsplit(" ", 1)[1])
