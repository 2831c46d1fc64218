"""Predicting what a trial will cost before it runs.

A trial holds its device for setup + steps x step time + evaluations x evaluation time
(wall seconds), and is charged its share of the device for that long (device-seconds).
Step time depends on the method, on how many parameters train, on how many layers
carry an adapter and on how the base is stored (model.quantization); sequence length
and batch size are fixed within a study, so the calibration run captures them.
log(step time) is a ridge regression on those features, pulled toward the calibration
run, so it predicts from the first trial on and learns from every finished one.

A trial whose blocks below ``k`` come from the frozen-layer cache (trials/frozen_cache.py)
skips their forward pass. Without the cache a step runs the forward of all L blocks and
the backward of the L - k adapted ones (a frozen linear's backward costs about a
forward), with it both over L - k only: with a = (L - k) / L, a step costs 2a / (1 + a)
of an uncached one and an evaluation a of one. The model predicts and learns in
uncached units and applies those factors, so cached trials are cheaper from the start.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.search.executor import TrialExecutor
    from peftsearch.spaces import ModelInfo
    from peftsearch.trials import CalibrationJob, TrialResult

__all__ = ["CostModel", "TrialFeatures", "calibrate", "calibration_job", "features_of"]

CALIBRATION_STEPS = 3


@dataclass(frozen=True)
class TrialFeatures:
    method: str
    trainable_params: int
    layers_fraction: float
    cached_fraction: float = 0.0  # of the blocks, served from the frozen-layer cache
    # the base's storage (model.quantization): 4-bit kernels run at their own speed
    quantization: str = "none"

    @property
    def step_factor(self) -> float:
        """A step's cost against the same trial without the cache (module docstring)."""
        run = 1.0 - self.cached_fraction
        return 2 * run / (1 + run)

    @property
    def eval_factor(self) -> float:
        return 1.0 - self.cached_fraction


def features_of(
    method: str,
    peft_config: dict[str, Any],
    trainable_params: int,
    num_layers: int,
    cache_frozen_layers: bool = False,
    quantization: str = "none",
) -> TrialFeatures:
    """Share of the blocks that carry an adapter (prompt methods touch the whole stack)
    and, with the cache on, the share below the lowest of them."""
    from peftsearch.search.memory_model import lowest_adapted_block
    from peftsearch.trials.frozen_cache import PROMPT_LEARNING

    layers = peft_config.get("layers_to_transform")
    if layers is None:
        names = peft_config.get("target_modules") or []
        indices = {int(part) for name in names for part in name.split(".") if part.isdigit()}
        fraction = len(indices) / num_layers if indices else 1.0
    else:
        fraction = len(layers) / num_layers
    lowest = lowest_adapted_block(peft_config, num_layers)
    prompt = str(peft_config.get("peft_type", "")).upper() in PROMPT_LEARNING
    cached = lowest / num_layers if cache_frozen_layers and not prompt else 0.0
    return TrialFeatures(method, max(1, trainable_params), min(1.0, fraction), cached, quantization)


def calibration_job(
    method: str, info: ModelInfo, eval_rows: int, quantization: str = "none"
) -> CalibrationJob:
    """A few steps of ``method``'s typical config and one small evaluation, to time this
    model, data and device. The method's plug-in says what a typical config is."""
    from peftsearch.spaces import get_method
    from peftsearch.trials import CalibrationJob

    return CalibrationJob(
        method=method,
        peft_config=get_method(method).calibration_config(info),
        max_steps=CALIBRATION_STEPS,
        eval_rows=eval_rows,
        quantization=quantization,
    )


@dataclass
class CostModel:
    """Device-seconds of a trial, from a calibration run and the trials seen so far."""

    step_seconds: float
    eval_seconds: float
    setup_seconds: float
    reference_params: int
    method: str = "lora"
    ridge: float = 1.0
    # device-seconds per wall second: the share of a priced device a trial holds
    share: float = 1.0
    _rows: list[tuple[TrialFeatures, float]] = field(default_factory=list)
    _evals: list[float] = field(default_factory=list)
    _setups: list[float] = field(default_factory=list)
    _weights: Any = None
    _methods: list[str] = field(default_factory=list)
    _storages: list[str] = field(default_factory=list)  # quantized ones seen
    calibration: TrialResult | None = None  # the run it started from

    @classmethod
    def from_calibration(
        cls, result: TrialResult, eval_rows_full: int, eval_rows_run: int
    ) -> CostModel:
        if result.status != "COMPLETE" or not result.steps:
            raise RuntimeError(f"the cost calibration run failed: {result.error}")
        per_row = result.eval_seconds / max(1, eval_rows_run)
        return cls(
            step_seconds=result.train_seconds / result.steps,
            eval_seconds=per_row * eval_rows_full,
            # with the model's load (the calibration is its worker's first job): until
            # trials are seen, a trial may land on a worker that still has to load it
            setup_seconds=result.setup_seconds + result.load_seconds,
            reference_params=max(1, result.trainable_params or 1),
            method=result.method,
            share=result.device_seconds / result.wall_seconds if result.wall_seconds else 1.0,
            calibration=result,
        )

    def observe(self, features: TrialFeatures, result: TrialResult) -> None:
        """Learn from a finished trial, in uncached units. A trial that spent a tenth of
        its time filling the cache is not what later trials with its boundary cost
        (they find it filled): its step and evaluation times are not learned from."""
        step, evaluation = features.step_factor, features.eval_factor
        if not result.cached_layers:  # the cache was full or off after all
            step = evaluation = 1.0
        filling = result.cache_seconds > 0.1 * (result.train_seconds + result.eval_seconds)
        if result.steps and result.train_seconds > 0 and not filling:
            self._rows.append((features, result.train_seconds / result.steps / step))
            self._weights = None
        if result.evaluations and not filling:
            self._evals.append(result.eval_seconds / result.evaluations / evaluation)
        if result.setup_seconds:
            self._setups.append(result.setup_seconds)

    def _vector(self, features: TrialFeatures) -> list[float]:
        return [
            1.0,
            math.log(features.trainable_params / self.reference_params),
            features.layers_fraction - 1.0,
            *(1.0 if features.method == m else 0.0 for m in self._methods),
            *(1.0 if features.quantization == q else 0.0 for q in self._storages),
        ]

    def _fit(self) -> Any:
        import numpy as np

        self._methods = sorted({f.method for f, _ in self._rows})
        self._storages = sorted({f.quantization for f, _ in self._rows} - {"none"})
        size = 3 + len(self._methods) + len(self._storages)
        prior = np.zeros(size)
        prior[0] = math.log(self.step_seconds)
        if not self._rows:
            return prior
        x = np.array([self._vector(f) for f, _ in self._rows])
        y = np.log([seconds for _, seconds in self._rows])
        # Ridge toward the prior: argmin |xw - y|^2 + ridge |w - prior|^2
        a = x.T @ x + self.ridge * np.eye(size)
        b = x.T @ y + self.ridge * prior
        return np.linalg.solve(a, b)

    def step_time(self, features: TrialFeatures) -> float:
        if self._weights is None:
            self._weights = self._fit()
        uncached = math.exp(float(self._weights @ self._vector(features)))
        return float(uncached * features.step_factor)

    def predict(self, features: TrialFeatures, steps: int, evaluations: int) -> float:
        setup = statistics.median(self._setups) if self._setups else self.setup_seconds
        evals = statistics.median(self._evals) if self._evals else self.eval_seconds
        evals *= features.eval_factor
        return (setup + steps * self.step_time(features) + evaluations * evals) * self.share

    def typical(self, steps: int) -> float:
        """A trial of the calibrated config: ``steps`` steps and one evaluation."""
        return (self.setup_seconds + steps * self.step_seconds + self.eval_seconds) * self.share

    def floor(self) -> float:
        """The least a trial can cost: setup, one step, one evaluation."""
        setup = min(self._setups, default=self.setup_seconds)
        evals = min(self._evals, default=self.eval_seconds)
        return (setup + self.step_seconds * 0.5 + evals) * self.share


def calibrate(
    executor: TrialExecutor,
    method: str,
    info: ModelInfo,
    eval_rows: int,
    eval_batch: int,
    quantization: str = "none",
) -> tuple[CostModel, TrialResult]:
    """Run the calibration on a worker; its device time is real spend, charge it."""
    sample = min(eval_rows, eval_batch)
    executor.submit(calibration_job(method, info, sample, quantization))
    results: list[TrialResult] = []
    while not results:
        results = executor.wait()
    return CostModel.from_calibration(results[0], eval_rows, sample), results[0]
