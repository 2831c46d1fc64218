"""The budget: the search never spends more device time, money or wall time than allowed.

Every launched trial reserves an allowance before it starts, and stops itself before the
step that would cross it. Spent plus reserved never exceeds the limit, so neither does
spent. Work outside the trials (the baseline, test scoring, confirmation re-runs) starts
only when its estimate fits, and beside running trials it holds up to twice that
estimate. Confirmation is planned from the start: the budget keeps its runs back
(``keep_back``) so the search stops early enough to leave them. The clock is injected so
the guarantee is tested with fake time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Budget", "BudgetLimits", "retry_allowance", "spent_device_seconds"]

SLACK = 2.0  # an allowance covers up to twice the estimate, so estimates may be rough


@dataclass(frozen=True)
class BudgetLimits:
    """Limits in device-seconds (money and device-hours converted), trials and wall time.

    ``device_key`` names the config key that set ``device_seconds`` (the tighter of
    money and device-hours), so a stop can say which key to raise.
    """

    device_seconds: float | None = None
    trials: int | None = None
    wall_seconds: float | None = None
    usd_per_device_hour: float = 0.0
    device_key: str = "budget.max_device_hours"

    @classmethod
    def build(
        cls,
        *,
        max_cost_usd: float | None,
        max_device_hours: float | None,
        max_trials: int | None,
        max_wall_seconds: float | None,
        usd_per_device_hour: float,
    ) -> BudgetLimits:
        limits: list[tuple[float, str]] = []
        if max_cost_usd is not None:
            seconds = max_cost_usd / usd_per_device_hour * 3600 if usd_per_device_hour else math.inf
            limits.append((seconds, "budget.max_cost_usd"))
        if max_device_hours is not None:
            limits.append((max_device_hours * 3600, "budget.max_device_hours"))
        device, key = min(limits) if limits else (None, "budget.max_device_hours")
        return cls(
            device_seconds=device,
            trials=max_trials,
            wall_seconds=max_wall_seconds,
            usd_per_device_hour=usd_per_device_hour,
            device_key=key,
        )


@dataclass
class Budget:
    limits: BudgetLimits
    clock: Callable[[], float] = time.monotonic
    spent: float = 0.0
    trials: int = 0
    reserved: dict[int, float] = field(default_factory=dict)
    # work outside the trials running beside them (the baseline): held like a trial's
    # reservation, but it is not a trial (budget.max_trials does not count it)
    held: dict[str, float] = field(default_factory=dict)  # by job key (trials/jobs.py)
    started: float | None = None
    # device-seconds a trial accrues per wall second (its share of a device): a trial
    # that must end within the wall time left may use that many device-seconds
    share: float = 1.0
    # set aside for the confirmation re-runs after the search (search/confirm.py):
    # trials may not spend it; ``keep_back(0, 0)`` hands it over when they start
    kept_device: float = 0.0
    kept_wall: float = 0.0

    def __post_init__(self) -> None:
        if self.started is None:
            self.started = self.clock()

    def wall_left(self) -> float:
        if self.limits.wall_seconds is None:
            return math.inf
        assert self.started is not None
        return self.limits.wall_seconds - (self.clock() - self.started)

    def wall_room(self) -> float:
        """The wall time left (less what is kept back), in the device-seconds one trial
        can accrue in it."""
        return (self.wall_left() - self.kept_wall) * self.share

    def device_left(self) -> float:
        if self.limits.device_seconds is None:
            return math.inf
        committed = sum(self.reserved.values()) + sum(self.held.values()) + self.kept_device
        return self.limits.device_seconds - self.spent - committed

    def keep_back(self, device_seconds: float, wall_seconds: float) -> None:
        """Set device time (and wall time) aside for work planned after the search; only
        the limits that are set keep anything back."""
        limited = self.limits.device_seconds is not None
        self.kept_device = device_seconds if limited else 0.0
        self.kept_wall = wall_seconds if self.limits.wall_seconds is not None else 0.0

    def allowance(self, estimate: float) -> float | None:
        """Device-seconds a new trial may use (``inf``: no time limit is set), or None
        when it must not start.

        A trial starts only if its estimate fits both in the unreserved device time and
        in the wall time left; it may then use up to ``SLACK`` times its estimate.
        """
        if (
            self.limits.trials is not None
            and self.trials + len(self.reserved) >= self.limits.trials
        ):
            return None
        room = min(self.device_left(), self.wall_room())
        if estimate > room:
            return None
        if math.isinf(room):
            return math.inf  # only a trial count is limited: no time cap on the trial
        return min(room, estimate * SLACK)

    def reserve(self, trial: int, allowance: float) -> None:
        self.reserved[trial] = allowance

    def settle(self, trial: int, device_seconds: float) -> None:
        """A trial finished (or was stopped) after ``device_seconds``; free its reservation."""
        self.reserved.pop(trial, None)
        self.spent += device_seconds
        self.trials += 1

    def fits(self, device_seconds: float) -> bool:
        """Whether spend outside any trial fits in the device and wall time left (the
        trial-count limit does not apply to it)."""
        return device_seconds <= min(self.device_left(), self.wall_room())

    def trials_in_reach(self, trial_seconds: float, slots: int) -> float:
        """About how many more trials of ``trial_seconds`` device-seconds the limits
        allow, ``slots`` at a time (``inf`` when nothing limits them)."""
        seconds = max(trial_seconds, 1e-9)
        counts = [self.device_left() / seconds, slots * self.wall_room() / seconds]
        if self.limits.trials is not None:
            counts.append(self.limits.trials - self.trials - len(self.reserved))
        return max(0.0, min(counts))

    def hold(self, job: str, estimate: float, slack: float = SLACK) -> bool:
        """Set device time aside for work outside the trials that runs beside them
        (up to ``slack`` times ``estimate``); False when ``estimate`` does not fit."""
        if not self.fits(estimate):
            return False
        self.held[job] = min(self.device_left(), estimate * slack)
        return True

    def release(self, job: str, device_seconds: float) -> None:
        """Held work finished after ``device_seconds``: spend that, free the rest."""
        self.held.pop(job, None)
        self.spent += device_seconds

    def charge(self, device_seconds: float) -> None:
        """Spend outside any trial (scoring the front on the test split)."""
        self.spent += device_seconds

    def exhausted(self, cheapest_estimate: float) -> str | None:
        """Why no further trial can start, or None while one can. Each reason names the
        config key to raise to go on."""
        if self.limits.trials is not None and self.trials >= self.limits.trials:
            return (
                f"budget: {self.limits.trials} trials done in this run; raise "
                "budget.max_trials to go on"
            )
        kept = self._kept_words()
        if self.wall_room() < cheapest_estimate:
            return f"budget: wall time used up{kept}; raise budget.max_wall_time to go on"
        if (
            self.limits.device_seconds is not None
            and self.limits.device_seconds - self.spent - self.kept_device < cheapest_estimate
        ):
            return (
                f"budget: {self._device_words()} used up{kept}; raise "
                f"{self.limits.device_key} to go on"
            )
        return None

    def _kept_words(self) -> str:
        if not (self.kept_device or self.kept_wall):
            return ""
        kept = (
            f"{self.kept_device:.0f} device-seconds"
            if self.kept_device
            else f"{self.kept_wall:.0f} s of wall time"
        )
        return f" ({kept} kept back for after the search: search.confirm, data.test)"

    def no_room(self, estimate: float) -> str:
        """Why a trial estimated at ``estimate`` device-seconds was not launched."""
        if (
            self.limits.trials is not None
            and self.trials + len(self.reserved) >= self.limits.trials
        ):
            return self.exhausted(math.inf) or "budget: budget.max_trials reached"
        if self.wall_room() <= self.device_left():
            wall = estimate / self.share
            return (
                f"budget: the next trial (about {wall:.0f} s) does not fit in the "
                f"{max(0.0, self.wall_left()):.0f} s of wall time left{self._kept_words()}; "
                "raise budget.max_wall_time to go on"
            )
        key, left = self.limits.device_key, self._device_words(left=True)
        return (
            f"budget: the next trial (about {estimate:.0f} device-seconds) does not fit in "
            f"the {left} left{self._kept_words()}; raise {key} to go on"
        )

    def _device_words(self, left: bool = False) -> str:
        """``$0.0100`` or ``0.50 device-hours``, spent or left, in the key's own unit."""
        assert self.limits.device_seconds is not None
        seconds = self.device_left() if left else self.limits.device_seconds
        seconds = max(0.0, seconds)
        if self.limits.device_key == "budget.max_cost_usd":
            return f"${seconds / 3600 * self.limits.usd_per_device_hour:.4f}"
        return f"{seconds / 3600:.3f} device-hours"

    def summary(self) -> dict[str, float | None]:
        price = self.limits.usd_per_device_hour
        limit = self.limits.device_seconds
        return {
            "spent_device_seconds": self.spent,
            "spent_usd": self.spent / 3600 * price,
            "limit_device_seconds": limit,
            "limit_usd": None if limit is None else limit / 3600 * price,
            "left_device_seconds": None if limit is None else limit - self.spent,
            "left_usd": None if limit is None else (limit - self.spent) / 3600 * price,
            "wall_seconds": None if self.started is None else self.clock() - self.started,
            "kept_back_device_seconds": self.kept_device,
        }


def retry_allowance(max_seconds: float | None, lost_seconds: float) -> float | None:
    """What is left of a trial's allowance after an attempt lost ``lost_seconds`` (its
    worker died): the retry gets only that, so the trial's reservation still covers
    every attempt and the budget is never exceeded."""
    if max_seconds is None:
        return None
    return max(0.0, max_seconds - lost_seconds)


def spent_device_seconds(study: Any) -> float:
    """What a continued study already spent, its trials and every run's calibration: its
    budget covers earlier runs too."""
    from peftsearch.search.records import overhead_of, read_records

    return overhead_of(study) + sum(record.device_seconds for record in read_records(study))
