"""Where trials run. The driver asks, an executor trains, the driver tells."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from peftsearch.search.early_stopping import RungBoard
    from peftsearch.trials import Job, TrialResult, TrialRunner

__all__ = ["InProcessExecutor", "TrialExecutor"]


class TrialExecutor(Protocol):
    """Contract of a trial executor.

    ``slots`` is how many jobs may run at once. ``submit`` hands one job (trials/jobs.py)
    over and returns at once. ``wait`` blocks until at least one submitted job has
    finished and returns every finished result not returned before (each carries its
    job's key); it returns an empty list only when nothing is in flight. A result's
    adapter is in the job's ``adapter_dir`` on the driver by the time ``wait`` returns
    it. A job's own failure comes back as a FAIL result, never as an exception.
    ``close`` frees workers; it is safe to call twice. ``describe`` is the user's
    start-up line about the workers, or None.
    """

    @property
    def slots(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def wait(self) -> list[TrialResult]: ...

    def close(self) -> None: ...

    def describe(self) -> str | None:
        """A start-up line for the user (None: nothing worth saying)."""
        ...


class InProcessExecutor:
    """Runs trials one at a time in the driver process (debugging, tests, one device)."""

    def __init__(self, runner: TrialRunner, board: RungBoard | None = None) -> None:
        self.runner = runner
        self.board = board
        self.pending: deque[Job] = deque()

    @property
    def slots(self) -> int:
        return 1

    def submit(self, job: Job) -> None:
        self.pending.append(job)

    def wait(self) -> list[TrialResult]:
        if not self.pending:
            return []
        from peftsearch.trials.file_transfer import deliver_adapter

        judge = self.board.report if self.board is not None else None
        job = self.pending.popleft()
        result = self.runner.run(job, judge)
        deliver_adapter(result, job.adapter_dir)
        return [result]

    def close(self) -> None:
        self.pending.clear()

    def describe(self) -> str | None:
        return None
