"""One trial: fresh model copy -> peft -> train -> evaluate -> measure -> save adapter."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.trials.cost import price_per_hour
from peftsearch.trials.deadline import STEP_SAFETY, Deadline
from peftsearch.trials.file_transfer import saved_adapter, write_folder
from peftsearch.trials.frozen_cache import (
    PrefixCache,
    PrefixServer,
    frozen_boundary,
    hidden_size,
)
from peftsearch.trials.result import TrialResult
from peftsearch.trials.train import (
    TrainSettings,
    TrialDiverged,
    autocast,
    collate,
    evaluation_mode,
    resolve_precision,
    rows_of,
    train,
)

if TYPE_CHECKING:
    import datasets

    from peftsearch.trials.data import PreparedData
    from peftsearch.trials.model import BaseModelSource

__all__ = ["TrialRequest", "TrialRunner"]


# (trial, step, accuracy, trainable params, seconds per step) -> keep training?
Judge = Callable[[int, int, float, int, float], bool]


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs for one trial, as plain data.

    ``max_seconds`` is the device time the budget allows this trial: it stops before
    the step that would cross it. ``min_seconds`` is the least a useful run costs (setup,
    a step, an evaluation): with less allowance than that the trial does not start. At
    each step in ``rungs`` the adapter is evaluated and the judge decides whether it
    goes on. ``max_steps`` and ``eval_rows`` shorten
    the trial (cost calibration). With ``score_adapter`` (a saved adapter's files),
    nothing trains: that adapter is scored once on the held-out test split (``data.test``).
    With ``adapter_dir``, the trained adapter comes back in ``result.adapter_files``; the
    executor writes it there on the driver (a worker never writes to driver paths).
    With ``baseline``, the base model as it is (its new head untrained) is scored on the
    evaluation split: what fine-tuning is measured against.
    """

    number: int
    method: str
    peft_config: dict[str, Any]
    learning_rate: float
    adapter_dir: str | None
    max_seconds: float | None = None
    min_seconds: float = 0.0
    rungs: tuple[int, ...] = ()
    max_steps: int | None = None
    eval_rows: int | None = None
    score_adapter: dict[str, bytes] | None = None
    baseline: bool = False


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class _Stop(Exception):
    """Training stopped on purpose; the trial is PRUNED with this reason."""


class TrialRunner:
    """Runs trials in one process against one base model and one tokenized dataset.

    Holds both between trials, which is what makes reuse pay: a worker loads the
    model once and copies it per trial, and keeps the frozen-layer cache
    (trials/frozen_cache.py) that trials adapting only upper blocks share.
    """

    def __init__(
        self,
        source: BaseModelSource,
        data: PreparedData,
        settings: TrainSettings,
        *,
        device: str,
        device_name: str,
        usd_per_device_hour: dict[str, float] | None = None,
        num_threads: int | None = None,
        device_share: float = 1.0,
    ) -> None:
        self.source = source
        self.data = data
        self.settings = settings
        self.device = device
        self.device_name = device_name
        self.price = price_per_hour(device_name, usd_per_device_hour)
        self.num_threads = num_threads
        self.share = device_share  # of one priced device (trials/cost.py: device_share)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.cache = (
            PrefixCache(settings.cache_max_mb * 2**20) if settings.cache_frozen_layers else None
        )
        self._tables: dict[str, datasets.Dataset] = {}
        self._tokens: dict[str, float] = {}
        # the slowest adapter save on this worker: the deadline keeps room for it
        self._save_seconds: float | None = None

    def _split(self, name: str) -> datasets.Dataset:
        """A split with a ``row_id`` column when the cache is on (it looks rows up by it)."""
        table = self.data.train if name == "train" else self.data.eval
        if self.cache is None:
            return table
        if name not in self._tables:
            self._tables[name] = table.add_column("row_id", list(range(len(table))))
        return self._tables[name]

    def run(self, request: TrialRequest, judge: Judge | None = None) -> TrialResult:
        """Never raises for a trial's own failure: it comes back as FAIL with its reason."""
        from peftsearch.trials.model import quiet_transformers

        with quiet_transformers():
            return self._run(request, judge)

    def _run(self, request: TrialRequest, judge: Judge | None) -> TrialResult:
        import torch

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        started = time.perf_counter()
        result = TrialResult(
            number=request.number,
            method=request.method,
            status="FAIL",
            task=self.data.task,
            device=self.device_name,
            started_at=time.time(),
            worker=self.worker_name,
            precision=resolve_precision(self.settings.precision, self.device),
            gradient_checkpointing=self.settings.gradient_checkpointing,
        )
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            if request.max_seconds is not None and request.max_seconds < request.min_seconds:
                raise _Stop(
                    f"not started: {request.max_seconds:.1f} device-seconds of allowance are "
                    f"less than a trial needs ({request.min_seconds:.1f})"
                )
            # once per worker, on its first job: device time (the deadline and the budget
            # count it), but neither the config's setup nor its cost
            result.load_seconds = self._load_base()
            if request.baseline:
                model = self.source.fresh_copy().to(self.device)
                result.setup_seconds = time.perf_counter() - started - result.load_seconds
                result.trainable_params, result.total_params = 0, _count(model)
                self._evaluate(model, request, result)
                result.status = "COMPLETE"
                return result
            if request.score_adapter is not None:
                self._score_on_test(request.score_adapter, result)
                result.setup_seconds = (
                    time.perf_counter() - started - result.eval_seconds - result.load_seconds
                )
                return result
            model = self._build(request, result)
            if request.adapter_dir and self._save_seconds is None:
                self._save_seconds = self._time_save(model)  # once per worker
            result.setup_seconds = time.perf_counter() - started - result.load_seconds
            # the allowance is device-seconds; this trial's clock runs at its share of one
            allowance = None if request.max_seconds is None else request.max_seconds / self.share
            deadline = Deadline(allowance, started=started)
            if not deadline.has_room(0.0):  # a retry whose lost attempt used it all
                raise _Stop("stopped by the budget before training: the allowance is used up")
            server = self._prefix_server(model, request)
            try:
                with server or contextlib.nullcontext():
                    self._train(model, request, result, judge, deadline, server)
                    self._evaluate(model, request, result, server=server)
            finally:
                if server is not None:
                    result.cached_layers = server.boundary
                    result.cache_seconds = server.seconds
            if request.adapter_dir:  # saved from the whole model, outside the server
                # shipped back as bytes: the driver's folder may not exist on this node
                began = time.perf_counter()
                result.adapter_files = saved_adapter(model)
                saving = time.perf_counter() - began
                self._save_seconds = max(self._save_seconds or 0.0, saving)
            result.status = "COMPLETE"
        except _Stop as stop:
            result.status = "PRUNED"
            result.error = str(stop)
        except TrialDiverged as error:
            result.error = f"diverged: {error}"
        except Exception as error:
            last = traceback.extract_tb(error.__traceback__)[-1]
            result.error = (
                f"{type(error).__name__}: {error} ({Path(last.filename).name}:{last.lineno})"
            )
        finally:
            result.finished_at = time.time()
            result.wall_seconds = time.perf_counter() - started
            # its share of a device, held for the whole trial
            result.device_seconds = result.wall_seconds * self.share
            result.spent_usd = result.device_seconds / 3600 * self.price
            overhead = result.rung_seconds + result.cache_seconds + result.load_seconds
            config_seconds = (result.wall_seconds - overhead) * self.share
            result.cost_usd = config_seconds / 3600 * self.price
            result.peak_memory_mb = self._peak_memory_mb()
        return result

    def _train(
        self,
        model: Any,
        request: TrialRequest,
        result: TrialResult,
        judge: Judge | None,
        deadline: Deadline,
        server: PrefixServer | None = None,
    ) -> None:
        total = request.max_steps or self.settings.max_steps
        last = [time.perf_counter()]

        def stop_unless_room(need: float, step: int) -> None:
            if not deadline.has_room(need):
                raise _Stop(
                    f"stopped by the budget after {step} of {total} steps "
                    f"(allowance {deadline.allowance:.0f} device-seconds)"
                )

        def after_step(step: int, loss: float) -> bool:
            deadline.record_step(time.perf_counter() - last[0])
            result.losses.append(loss)
            result.steps = step
            if step in request.rungs and step < total:
                stop_unless_room(self._eval_guess(result, deadline.next_step), step)
                began, filling = time.perf_counter(), server.seconds if server else 0.0
                self._evaluate(model, request, result, rung=True, server=server)
                # rows cached during the rung count once, as filling the cache
                filled = (server.seconds if server else 0.0) - filling
                result.rung_seconds += time.perf_counter() - began - filled
                result.rungs.append([step, result.accuracy])
                rate = sum(deadline.step_times) / len(deadline.step_times)
                assert result.accuracy is not None and result.trainable_params is not None
                if judge is not None and not judge(
                    request.number, step, result.accuracy, result.trainable_params, rate
                ):
                    raise _Stop(
                        f"early-stopped at step {step} of {total}: accuracy "
                        f"{result.accuracy:.3f} is clearly behind trials of no more parameters"
                    )
            if step < total:  # room for one more step and the final evaluation?
                # the step, the final evaluation, and saving the adapter afterwards
                saving = (self._save_seconds or 0.0) * STEP_SAFETY if request.adapter_dir else 0.0
                need = deadline.next_step + self._eval_guess(result, deadline.next_step) + saving
                stop_unless_room(need, step)
            last[0] = time.perf_counter()
            return True

        train(
            model,
            self._split("train"),
            learning_rate=request.learning_rate,
            settings=self.settings,
            pad_token_id=self.data.pad_token_id,
            device=self.device,
            after_step=after_step,
            max_steps=total,
            feed=server.feed("train") if server else None,
        )
        result.train_seconds = sum(deadline.step_times)

    def _load_base(self) -> float:
        """Seconds spent loading the base model: 0 once this worker has it."""
        if self.source.loaded:
            return 0.0
        began = time.perf_counter()
        self.source.load()
        return time.perf_counter() - began

    def _eval_guess(self, result: TrialResult, step_seconds: float) -> float:
        """Time the evaluation will take: measured once it ran, else from the step time
        (a forward pass costs about a third of a training step per row)."""
        if result.evaluations:
            return result.eval_seconds / result.evaluations * STEP_SAFETY
        return step_seconds * len(self.data.eval) / self.settings.batch_size * 0.6

    def _score_on_test(self, adapter: dict[str, bytes], result: TrialResult) -> None:
        """The adapter a trial saved (its files, shipped from the driver), on the base
        model it trained on, scored on test."""
        import tempfile

        from peft import PeftModel

        if self.data.test is None:
            raise ValueError("no test split was prepared (data.test is not set)")
        with tempfile.TemporaryDirectory(prefix="peftsearch-test-") as folder:
            write_folder(adapter, Path(folder) / "adapter")
            model = PeftModel.from_pretrained(
                self.source.fresh_copy(), str(Path(folder) / "adapter")
            ).to(self.device)
        trainable, total = model.get_nb_trainable_parameters()
        result.trainable_params, result.total_params = int(trainable), int(total)
        self._evaluate_on(model, self.data.test, result)
        result.status = "COMPLETE"

    def _evaluate(
        self,
        model: Any,
        request: TrialRequest,
        result: TrialResult,
        *,
        rung: bool = False,
        server: PrefixServer | None = None,
    ) -> None:
        table = self._split("eval")
        if request.eval_rows is not None:
            table = table.select(range(min(request.eval_rows, len(table))))
        self._evaluate_on(model, table, result, rung=rung, server=server)

    def _evaluate_on(
        self,
        model: Any,
        table: Any,
        result: TrialResult,
        *,
        rung: bool = False,
        server: PrefixServer | None = None,
    ) -> None:
        """The task scores the adapter: ``result.accuracy`` is the searched metric (at a
        rung, the task's cheaper signal for it); after the last evaluation
        ``result.metrics`` holds every metric the task reports."""
        from peftsearch.trials.tasks import EvalContext, get_task

        began = time.perf_counter()
        context = EvalContext(
            batch_size=self.settings.eval_batch_size,
            pad_token_id=self.data.pad_token_id,
            device=self.device,
            precision=self.settings.precision,
            label_names=self.data.label_names,
            max_new_tokens=self.settings.max_new_tokens,
            tokenizer=self.source.tokenizer,
            feed=server.feed("eval") if server else None,
            full_model=server.full_model if server else None,
        )
        metrics = get_task(self.data.task).evaluate(
            model, table, context, metric=self.settings.metric, rung=rung
        )
        result.accuracy = float(metrics.pop("score"))
        if not rung:
            result.metrics = metrics
        result.eval_seconds += time.perf_counter() - began
        result.evaluations += 1
        result.eval_rows = len(table)

    @staticmethod
    def _time_save(model: Any) -> float:
        """How long saving this adapter takes, timed on the fresh one (same size as the
        trained one): what the deadline keeps free after the last step."""
        began = time.perf_counter()
        saved_adapter(model)
        return time.perf_counter() - began

    def _prefix_server(self, model: Any, request: TrialRequest) -> PrefixServer | None:
        """Serve the blocks below the trial's lowest adapted block from the cache, when
        the cache is on, the method allows it, the rows a trial reads fit in memory, and
        serving that boundary was checked to reproduce the full model on this worker."""
        if self.cache is None:
            return None
        boundary = frozen_boundary(model, str(request.peft_config.get("peft_type", "")))
        if boundary == 0 or self.cache.checked(boundary) is False:
            return None
        row_bytes = hidden_size(model) * (4 if self._precision == "fp32" else 2)
        reads = {  # the rows a trial may read: its steps' batches, the whole eval split
            "train": self.settings.max_steps * self.settings.batch_size,
            "eval": len(self.data.eval),
        }
        splits = {}
        for split, rows in reads.items():
            expected = int(min(rows, len(self._split(split))) * self._mean_tokens(split))
            states = self.cache.states(split, boundary, expected * row_bytes)
            if states is None:
                return None
            splits[split] = states
        server = PrefixServer(
            model, boundary, splits, self.cache, device=self.device, precision=self._precision
        )
        if self.cache.checked(boundary) is None:
            self.cache.record_check(boundary, self._serves_like_full(model, server))
            if not self.cache.checked(boundary):
                return None
        return server

    @property
    def _precision(self) -> str:
        return resolve_precision(self.settings.precision, self.device)

    def _mean_tokens(self, split: str) -> float:
        if split not in self._tokens:
            lengths = [len(ids) for ids in self._split(split)["input_ids"]]
            self._tokens[split] = sum(lengths) / max(1, len(lengths))
        return self._tokens[split]

    def _serves_like_full(self, model: Any, server: PrefixServer) -> bool:
        """One evaluation batch through the full model and through the cache agree (at
        every real token; padding is masked either way)."""
        import torch

        table = self._split("eval")
        batch = collate(rows_of(table[: min(8, len(table))]), self.data.pad_token_id)
        batch.pop("labels", None)
        row_ids = batch.pop("row_id")
        on_device = {k: v.to(self.device) for k, v in batch.items()}
        with (
            evaluation_mode(model),
            torch.no_grad(),
            autocast(self.device, self._precision),
        ):
            full = model(**on_device).logits.float()
            with server:
                feed = server.feed("eval")
                assert feed is not None
                feed(row_ids, batch)
                served = model(**on_device).logits.float()
        if full.shape != served.shape:
            return False
        if full.dim() == 3:  # per token: compare where there are tokens
            mask = on_device["attention_mask"].bool()
            full, served = full[mask], served[mask]
        tolerance = 1e-4 if self._precision == "fp32" else 5e-2
        scale = max(1.0, float(full.abs().max()))
        return bool((full - served).abs().max() <= tolerance * scale)

    def _build(self, request: TrialRequest, result: TrialResult) -> Any:
        """The peft model of ``request``, its random draws (adapter init, then the
        training's dropout) seeded by ``search.seed``: a config's result does not
        depend on which trials its worker ran before."""
        import torch
        from peft import get_peft_config, get_peft_model

        torch.manual_seed(self.settings.seed)
        config = dict(request.peft_config)
        base = self.source.fresh_copy()
        if self.settings.gradient_checkpointing:
            if not getattr(base, "supports_gradient_checkpointing", False):
                raise ValueError(
                    f"{type(base).__name__} does not support gradient checkpointing "
                    "(set training.gradient_checkpointing: false)"
                )
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            base.config.use_cache = False
        if self.source.extra_modules:
            config["modules_to_save"] = sorted(
                {*config.get("modules_to_save", []), *self.source.extra_modules}
            )
        model = get_peft_model(base, get_peft_config(config))
        model.to(self.device)
        trainable, total = model.get_nb_trainable_parameters()
        result.trainable_params, result.total_params = int(trainable), int(total)
        result.trainable_pct = 100.0 * trainable / total
        return model

    def _peak_memory_mb(self) -> float:
        import torch

        if self.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        # On CPU: the worker process's peak resident set (Linux reports KiB).
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
