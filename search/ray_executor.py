"""Trials on Ray: an actor pool whose workers keep the model and data between trials.

Ray Tune's ``OptunaSearch`` is not used: it never prunes and it ignores intermediate
results in multi-objective runs. The driver keeps the study and only dispatches here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftsearch.search.budget import retry_allowance
from peftsearch.search.early_stopping import RungBoard
from peftsearch.trials import TrialJob, TrialResult
from peftsearch.trials.file_transfer import ShippedModel, deliver_adapter, ship_model

if TYPE_CHECKING:
    from peftsearch.trials import Job, PreparedData, WorkerSetup

__all__ = ["RayExecutor", "TrialWorker", "start_workers"]


class TrialWorker:
    """A Ray actor body: one process, one base model, many trials.

    Created early (``start_workers``, while the driver still reads the data), it imports
    the training stack; ``attach`` then gives it the study's setup and data, and it loads
    the base model at once, before its first job arrives.
    """

    def __init__(self, num_threads: int | None = None) -> None:
        from peftsearch.search.start_up import pause_collection

        # the imports and the base model live as long as this process (search/start_up.py)
        self._collector = pause_collection()
        import torch

        from peftsearch.trials._run import import_training_stack

        # Ray starts workers with 1 torch thread; give the trial what it reserved.
        if num_threads:
            torch.set_num_threads(num_threads)
        import_training_stack()
        self.runner: Any = None

    def attach(
        self, setup: WorkerSetup, data: PreparedData, model: ShippedModel | None = None
    ) -> None:
        import torch

        from peftsearch.search.start_up import freeze_start_up
        from peftsearch.trials.file_transfer import local_checkpoint

        try:
            # a base model in a folder only the driver has arrives as bytes (``model``)
            setup.source.checkpoint = local_checkpoint(setup.source.checkpoint, model)
            if setup.num_threads:
                torch.set_num_threads(setup.num_threads)
            self.runner = setup.runner(data)
            if setup.preload is not None:
                self.runner.preload(setup.preload)
        finally:
            freeze_start_up(self._collector)

    def identity(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, job: Job, board: Any = None) -> TrialResult:
        import ray

        def judge(*report: Any) -> bool:
            return bool(ray.get(board.report.remote(*report)))

        if self.runner is None:  # attach raised: its error is in this worker's log
            return TrialResult(
                number=job.number,
                method=job.method,
                status="FAIL",
                job=job.key,
                error="the worker could not take the study's setup and data (see its Ray log)",
            )
        return self.runner.run(job, judge if board is not None else None)


def _only_this_node() -> bool:
    """Whether the Ray cluster is the driver's own machine and nothing else."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    return len(alive) == 1 and alive[0].get("NodeID") == here


def worker_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> int:
    """How many trials run at once: what the cluster's CPUs and GPUs fit, at most
    ``max_concurrent``."""
    import ray

    total = ray.cluster_resources()
    counts = [math.floor(total.get("CPU", 0) / cpus_per_trial + 1e-9)]
    if gpus_per_trial > 0:
        counts.append(math.floor(total.get("GPU", 0) / gpus_per_trial + 1e-9))
    fits = min(counts)
    return max(1, min(max_concurrent, fits) if max_concurrent else fits)


def start_workers(
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_concurrent: int | None,
    num_threads: int | None,
) -> list[Any]:
    """The pool's actors, started now: each imports the training stack while the driver
    goes on (``RayExecutor(workers=...)`` attaches them to the study)."""
    actor = _worker_actor(cpus_per_trial, gpus_per_trial)
    slots = worker_slots(cpus_per_trial, gpus_per_trial, max_concurrent)
    return [actor.remote(num_threads) for _ in range(slots)]


def _worker_actor(cpus_per_trial: float, gpus_per_trial: float) -> Any:
    """``TrialWorker`` as a Ray actor class holding one trial's resources."""
    import ray

    return ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_restarts=0)(TrialWorker)


@dataclass
class _Attempt:
    job: Job
    worker: Any
    tries: int  # this attempt's number: 1, then 2 for the retry
    lost_seconds: float = 0.0
    started: float = field(default_factory=time.time)


def _charge(result: TrialResult, attempt: _Attempt) -> None:
    """A retried trial also pays for the device time its dead attempts held (search
    overhead: charged to the budget and ``spent_usd``, not to the config's cost)."""
    result.attempts = attempt.tries
    if attempt.lost_seconds:
        rate = result.spent_usd / result.device_seconds if result.device_seconds else 0.0
        result.device_seconds += attempt.lost_seconds
        result.spent_usd = result.device_seconds * rate


class RayExecutor:
    """``TrialExecutor`` over a pool of Ray actors.

    A worker that dies mid-trial is replaced, and its trial is retried once on another
    worker; a second death marks the trial FAIL with the reason.
    """

    MAX_ATTEMPTS = 2

    def __init__(
        self,
        setup: WorkerSetup,
        data: PreparedData,
        *,
        cpus_per_trial: float,
        gpus_per_trial: float,
        max_concurrent: int | None = None,
        board: RungBoard | None = None,
        workers: list[Any] | None = None,
    ) -> None:
        """``workers``: actors ``start_workers`` started earlier with these resources;
        without them the pool starts its own."""
        import ray

        self._ray = ray
        # Workers ask one board actor at each rung, so every trial is judged on all
        # rung results so far, wherever it runs.
        self._board = (
            ray.remote(num_cpus=0)(RungBoard).remote(board.eta, board.min_trials, board.margin)
            if board is not None
            else None
        )
        self._actor = _worker_actor(cpus_per_trial, gpus_per_trial)
        self._setup = setup
        self._threads = setup.num_threads
        self._data = ray.put(data)
        # a local model folder travels once per study (each node writes it once), unless
        # the cluster is this machine alone: then every worker reads the folder itself
        alone = _only_this_node()
        self._model = ray.put(None if alone else ship_model(setup.source.checkpoint))
        if not workers:
            workers = start_workers(cpus_per_trial, gpus_per_trial, max_concurrent, self._threads)
        self._slots = len(workers)
        self._workers = list(workers)
        # Each actor runs its calls in order: where it is (once its imports are done),
        # then attach (the base model loads: the driver does not wait), then its jobs.
        placed = [w.identity.remote() for w in self._workers]
        for worker in self._workers:
            worker.attach.remote(self._setup, self._data, self._model)
        # (pid, node) per worker, asked for now and read when first needed: the driver
        # goes on setting up while the workers finish their imports
        self._identities: dict[Any, tuple[int, str]] = {}
        self._placing: dict[Any, Any] = dict(zip(self._workers, placed, strict=True))
        self._idle: deque[Any] = deque(self._workers)
        self._queue: deque[tuple[Job, int, float]] = deque()
        self._inflight: dict[Any, _Attempt] = {}
        # replacements for dead workers, by their pending identity() call: a lost node
        # shrinks the cluster, and the driver must not block until one can be placed
        self._starting: dict[Any, Any] = {}

    def _start_worker(self) -> Any:
        worker: Any = self._actor.remote(self._threads)
        worker.attach.remote(self._setup, self._data, self._model)
        return worker

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def board(self) -> Any:
        """The rung board actor every worker reports to (None without early stopping)."""
        return self._board

    @property
    def identities(self) -> dict[Any, tuple[int, str]]:
        """(pid, node id) of each worker; waits for workers still starting."""
        if self._placing:
            found = self._ray.get(list(self._placing.values()))
            self._identities.update(zip(self._placing, found, strict=True))
            self._placing.clear()
        return self._identities

    @property
    def nodes(self) -> int:
        """How many cluster nodes the workers landed on (waits for them to start)."""
        return len({node for _, node in self.identities.values()})

    def submit(self, job: Job) -> None:
        self._queue.append((job, 1, 0.0))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            job, tries, lost = self._queue.popleft()
            worker = self._idle.popleft()
            ref = worker.run.remote(job, self._board)
            self._inflight[ref] = _Attempt(job, worker, tries, lost)

    def _started(self, ref: Any) -> None:
        """A replacement worker is up: it joins the idle pool (or is dropped if it died)."""
        from ray.exceptions import RayActorError

        worker = self._starting.pop(ref)
        try:
            self._identities[worker] = self._ray.get(ref)
        except RayActorError:
            self._workers.remove(worker)
            return
        self._idle.append(worker)

    def wait(self) -> list[TrialResult]:
        from ray.exceptions import RayActorError

        results: list[TrialResult] = []
        # a retry may wait for a replacement worker when nothing else runs
        while not results and (self._inflight or (self._queue and self._starting)):
            refs = [*self._inflight, *self._starting]
            ready, _ = self._ray.wait(refs, num_returns=1)
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                if ref in self._starting:
                    self._started(ref)
                    continue
                attempt = self._inflight.pop(ref)
                try:
                    result: TrialResult = self._ray.get(ref)
                except RayActorError as error:
                    results.extend(self._worker_died(attempt, error))
                    continue
                _charge(result, attempt)
                deliver_adapter(result, attempt.job.adapter_dir)  # written by the driver
                self._idle.append(attempt.worker)
                results.append(result)
            self._dispatch()
        return results

    def _worker_died(self, attempt: _Attempt, error: Exception) -> list[TrialResult]:
        dead = attempt.worker
        self._workers.remove(dead)
        self._placing.pop(dead, None)
        self._identities.pop(dead, None)
        replacement = self._start_worker()
        self._workers.append(replacement)
        # It joins the idle pool once placed (maybe never, if the cluster lost a node);
        # idle survivors take the retry first, so it lands on another worker.
        self._starting[replacement.identity.remote()] = replacement
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        job = attempt.job
        this_attempt = (time.time() - attempt.started) * self._setup.device_share
        if job.max_seconds is not None:
            # A live worker stops itself at its allowance; the rest is the time the
            # driver took to notice the death, not device time the trial used.
            this_attempt = min(this_attempt, job.max_seconds)
        lost = attempt.lost_seconds + this_attempt
        left = retry_allowance(job.max_seconds, this_attempt)
        if attempt.tries < self.MAX_ATTEMPTS and (left is None or left >= job.min_seconds):
            # The retry gets what is left of the trial's allowance, not a fresh one.
            retry = dataclasses.replace(job, max_seconds=left) if isinstance(job, TrialJob) else job
            self._queue.appendleft((retry, attempt.tries + 1, lost))
            return []
        why = "" if left is None or left >= job.min_seconds else "; its allowance is used up"
        return [
            TrialResult(
                number=job.number,
                method=job.method,
                status="FAIL",
                job=job.key,
                attempts=attempt.tries,
                started_at=attempt.started,
                finished_at=time.time(),
                device_seconds=lost,
                error=f"worker process died in {attempt.tries} attempts ({reason}){why}",
            )
        ]

    def describe(self) -> str:
        """The start-up line; it does not wait for workers still importing: then it
        names the cluster's nodes they start on."""
        pending = list(self._placing.values())
        ready = self._ray.wait(pending, num_returns=len(pending), timeout=0)[0] if pending else []
        if len(ready) == len(pending):
            return (
                f"Ray: {self.slots} worker(s) on {self.nodes} node(s) running trials in parallel."
            )
        alive = sum(1 for n in self._ray.nodes() if n.get("Alive"))
        return (
            f"Ray: {self.slots} worker(s) starting on a {alive}-node cluster, to run trials "
            "in parallel."
        )

    def close(self) -> None:
        for worker in self._workers:
            self._ray.kill(worker)
        if self._board is not None:
            self._ray.kill(self._board)
            self._board = None
        self._workers.clear()
        self._idle.clear()
        self._inflight.clear()
        self._starting.clear()
