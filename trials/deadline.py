"""A trial's device-time allowance, enforced before each step and each evaluation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["STEP_SAFETY", "Deadline"]

# The next step is assumed to take up to this many times the slowest step seen so far.
STEP_SAFETY = 1.5


@dataclass
class Deadline:
    """Stops a trial before the work that would cross its allowance.

    The rule is checked with what is known: the slowest step so far (times
    ``STEP_SAFETY``) and the measured or estimated evaluation time. ``allowance`` None
    means no limit. The clock is injectable so budget tests run on fake time.
    """

    allowance: float | None
    clock: Callable[[], float] = time.perf_counter
    started: float = field(default=0.0)
    step_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def record_step(self, seconds: float) -> None:
        self.step_times.append(seconds)

    @property
    def next_step(self) -> float:
        return max(self.step_times, default=0.0) * STEP_SAFETY

    def has_room(self, need: float) -> bool:
        return self.allowance is None or self.elapsed + need <= self.allowance
