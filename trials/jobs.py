"""The work a worker does, one kind a class: a search trial, a cost calibration, the
base model's baseline, and scoring a saved adapter on the test split.

Plain frozen dataclasses, so they cross process boundaries as they are. ``key`` names a
job for the executors' and the loop's bookkeeping (``trial 3``, ``baseline``); its
result carries the same key. The runner picks what to do by the job's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BaselineJob", "CalibrationJob", "Job", "TestScoringJob", "TrialJob"]


@dataclass(frozen=True)
class TrialJob:
    """One trial of the search: train ``peft_config``, evaluate, save the adapter.

    ``max_seconds`` is the device time the budget allows it: it stops before the step
    that would cross it. ``min_seconds`` is the least a useful run costs (setup, a step,
    an evaluation): with less allowance it does not start. At each step in ``rungs`` the
    adapter is evaluated and the judge decides whether it goes on. With
    ``adapter_dir`` the trained adapter comes back in ``result.adapter_files``; the
    executor writes it there on the driver (a worker never writes to driver paths).
    """

    number: int
    method: str
    peft_config: dict[str, Any]
    learning_rate: float
    adapter_dir: str | None
    max_seconds: float | None = None
    min_seconds: float = 0.0
    rungs: tuple[int, ...] = ()
    quantization: str = "none"  # how the base's linear layers are stored (trials/model.py)
    # the memory levers (search/memory_model.py), None: training.batch_size and
    # training.gradient_checkpointing as configured. A smaller micro-batch accumulates
    # gradients up to the same batch, so the maths stays the same.
    micro_batch_size: int | None = None
    gradient_checkpointing: bool | None = None
    # the training seed (adapter and new-head init, dropout, batch order); None: search.seed.
    # Confirmation re-runs a front config with new seeds (search/confirm.py).
    seed: int | None = None
    # seconds one evaluation took when this config ran before (a re-run knows it): the
    # deadline's guess before its own evaluation is measured
    eval_hint: float | None = None
    # LoRA+: B's learning rate as a multiple of A's (peft's create_loraplus_optimizer)
    loraplus_lr_ratio: float | None = None

    @property
    def key(self) -> str:
        return (
            f"trial {self.number}" if self.seed is None else f"trial {self.number} seed {self.seed}"
        )


@dataclass(frozen=True)
class CalibrationJob:
    """``max_steps`` steps of ``method``'s typical config and one evaluation on
    ``eval_rows`` rows, timed: what the cost model starts from (search/cost_model.py)."""

    method: str
    peft_config: dict[str, Any]
    max_steps: int
    eval_rows: int
    learning_rate: float = 1e-4
    quantization: str = "none"

    key = "calibration"
    number = None  # not a trial of the study
    rungs = ()
    adapter_dir = None
    max_seconds = None
    min_seconds = 0.0
    micro_batch_size = None
    gradient_checkpointing = None
    seed = None
    loraplus_lr_ratio = None


@dataclass(frozen=True)
class BaselineJob:
    """The base model as it is (a causal LM zero-shot, a classifier with the head its
    checkpoint has), scored on the evaluation split: what fine-tuning is measured
    against. A base without the task's head is loaded and not scored (its new head's
    random weights score chance: the task's model-free baselines stand for it)."""

    method: str = "baseline"
    quantization: str = "none"
    key = "baseline"
    number = None  # not a trial of the study
    adapter_dir = None
    max_seconds = None
    min_seconds = 0.0


@dataclass(frozen=True)
class TestScoringJob:
    """A saved adapter (its files, shipped from the driver) on the base model it trained
    on, scored once on the held-out test split (``data.test``); nothing trains."""

    number: int
    adapter: dict[str, bytes]
    method: str = "test"
    quantization: str = "none"
    adapter_dir = None
    max_seconds = None
    min_seconds = 0.0

    @property
    def key(self) -> str:
        return f"test {self.number}"


Job = TrialJob | CalibrationJob | BaselineJob | TestScoringJob
