"""A worker's jobs (trials/jobs.py) against one base model and one tokenized dataset:
a trial (fresh model copy -> peft -> train -> evaluate -> measure -> save adapter), a
cost calibration (a short trial, timed), the base model's baseline, and scoring a saved
adapter on the test split."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.spaces.lora import changes_base_weights
from peftsearch.trials.cost import price_per_hour
from peftsearch.trials.deadline import STEP_SAFETY, Deadline
from peftsearch.trials.file_transfer import initial_adapter, saved_adapter, write_folder
from peftsearch.trials.frozen_cache import FrozenLayers, PrefixServer
from peftsearch.trials.jobs import BaselineJob, CalibrationJob, Job, TestScoringJob, TrialJob
from peftsearch.trials.memory import PeakMemory, device_memory_mb, eval_rows, release_memory
from peftsearch.trials.model import redraw_new_head
from peftsearch.trials.result import TrialResult
from peftsearch.trials.train import TrainSettings, TrialDiverged, resolve_precision, train

if TYPE_CHECKING:
    import datasets

    from peftsearch.trials.data import PreparedData
    from peftsearch.trials.model import BaseModelSource

__all__ = ["TrialRunner", "WorkerSetup", "import_training_stack"]


# why a base without the task's head is not scored as a baseline (BaselineJob)
NEW_HEAD = "its head is new: untrained weights score chance, as the model-free baselines say"
EVA_BATCHES = 8  # training batches EVA's SVD cycles over (trials/_run.py: _eva_init)

# (trial, step, accuracy, trainable params, seconds per step) -> keep training?
Judge = Callable[[int, int, float, int, float], bool]


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker builds its ``TrialRunner`` from, in process or on Ray (where ``data``
    travels through the object store once per study, not once per job)."""

    source: BaseModelSource
    settings: TrainSettings
    device: str = "auto"
    usd_per_device_hour: dict[str, float] = field(default_factory=dict)
    num_threads: int | None = 1
    device_share: float = 1.0  # of one priced device, per job (trials/cost.py)
    # a job's memory (resources.memory_per_trial_gb): on a GPU, the caching allocator
    # is held to it, so a trial that outgrows it fails alone, not its neighbours
    memory_limit_mb: float | None = None
    # the base (model.quantization) a Ray worker loads as soon as it has its data, while
    # the driver still sets up (TrialRunner.preload); None: in its first job
    preload: str | None = None

    def runner(self, data: PreparedData) -> TrialRunner:
        from peftsearch.trials.cost import detect_device

        device, device_name = detect_device(self.device)
        return TrialRunner(
            self.source,
            data,
            self.settings,
            device=device,
            device_name=device_name,
            usd_per_device_hour=self.usd_per_device_hour,
            num_threads=self.num_threads,
            device_share=self.device_share,
            memory_limit_mb=self.memory_limit_mb,
        )


def jitter(times: list[float]) -> float | None:
    """sd / mean of step times (None with fewer than three)."""
    import statistics

    if len(times) < 3 or not statistics.fmean(times):
        return None
    return statistics.stdev(times) / statistics.fmean(times)


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


class _Stop(Exception):
    """Training stopped on purpose; the job is PRUNED with this reason."""


class _OutOfMemory(Exception):
    """Out of memory, after the retry with the memory levers: the config is infeasible."""


def _next_lever(job: TrialJob | CalibrationJob, settings: TrainSettings) -> TrialJob | None:
    """The job with the next memory lever (search/memory_model.py): half the micro-batch,
    else gradient checkpointing; None when both are spent (or not a trial)."""
    import dataclasses

    if not isinstance(job, TrialJob):
        return None
    micro = job.micro_batch_size or settings.batch_size
    if micro > 1:
        return dataclasses.replace(job, micro_batch_size=micro // 2)
    checkpointing = job.gradient_checkpointing
    if not (settings.gradient_checkpointing if checkpointing is None else checkpointing):
        return dataclasses.replace(job, gradient_checkpointing=True)
    return None


def import_training_stack() -> None:
    """Set up, before the first job's memory is measured, what a worker's first training
    step sets up once (tens of MB: peft and the bitsandbytes it imports, the autograd
    engine, AdamW, the schedule): one step of a LoRA on a 4 x 4 linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    model = get_peft_model(
        torch.nn.Sequential(torch.nn.Linear(4, 4)), LoraConfig(r=1, target_modules=["0"])
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, 1)
    model(torch.ones(1, 4)).sum().backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()


def _levers(job: Job, settings: TrainSettings) -> str:
    """The micro-batch and checkpointing a job trains with, in words."""
    micro = getattr(job, "micro_batch_size", None) or settings.batch_size
    checkpointing = getattr(job, "gradient_checkpointing", None)
    if checkpointing is None:
        checkpointing = settings.gradient_checkpointing
    return f"micro-batch {micro}" + (" with gradient checkpointing" if checkpointing else "")


class TrialRunner:
    """Runs jobs in one process against one base model and one tokenized dataset.

    Holds both between jobs, which is what makes reuse pay: a worker loads the model
    once and copies it per trial, and keeps the frozen-layer cache
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
        memory_limit_mb: float | None = None,
    ) -> None:
        self.source = source
        source.device = device  # a quantized base loads onto it
        self.data = data
        self.settings = settings
        self.device = device
        self.device_name = device_name
        self.price = price_per_hour(device_name, usd_per_device_hour)
        self.num_threads = num_threads
        self.share = device_share  # of one priced device (trials/cost.py: device_share)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.precision = resolve_precision(settings.precision, device)
        self.frozen = (
            FrozenLayers(data, settings, device=device, precision=self.precision)
            if settings.cache_frozen_layers
            else None
        )
        # the slowest adapter save on this worker: the deadline keeps room for it
        self._save_seconds: float | None = None
        # per base (quantization): the forgetting reference and the base's losses on it
        self._references: dict[str, Any] = {}
        self._preloaded = 0.0  # seconds of a preload the next job has not yet been charged
        self.device_memory_mb = device_memory_mb(device)
        self.memory_limit_mb = memory_limit_mb
        if device.startswith("cuda") and memory_limit_mb and self.device_memory_mb:
            import torch

            # the allocator raises OutOfMemoryError past it (caught per trial, below)
            torch.cuda.set_per_process_memory_fraction(
                min(1.0, memory_limit_mb / self.device_memory_mb)
            )

    @property
    def cache(self) -> Any:
        """The frozen-layer cache (None when training.cache_frozen_layers is off)."""
        return self.frozen.cache if self.frozen is not None else None

    def split(self, name: str) -> datasets.Dataset:
        """The train or eval split as trials read it (with row ids when the cache is on)."""
        if self.frozen is not None:
            return self.frozen.split(name)
        return self.data.train if name == "train" else self.data.eval

    def run(self, job: Job, judge: Judge | None = None) -> TrialResult:
        """Never raises for a job's own failure: it comes back as FAIL with its reason."""
        from peftsearch.trials.model import quiet_transformers

        with quiet_transformers():
            return self._run(job, judge)

    def _run(self, job: Job, judge: Judge | None) -> TrialResult:
        import torch

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        # a preloaded base (``preload``) is this job's: it holds the device from then on
        preloaded, self._preloaded = self._preloaded, 0.0
        started = time.perf_counter() - preloaded
        result = TrialResult(
            number=job.number,
            method=job.method,
            status="FAIL",
            job=job.key,
            task=self.data.task,
            device=self.device_name,
            started_at=time.time() - preloaded,
            worker=self.worker_name,
            precision=self.precision,
            gradient_checkpointing=self.settings.gradient_checkpointing,
        )
        result.quantization = job.quantization
        result.device_memory_mb = self.device_memory_mb
        probe, cached_before = PeakMemory(self.device), self._cached_bytes()
        try:
            if job.max_seconds is not None and job.max_seconds < job.min_seconds:
                raise _Stop(
                    f"not started: {job.max_seconds:.1f} device-seconds of allowance are "
                    f"less than a trial needs ({job.min_seconds:.1f})"
                )
            # once per worker, on its first job: device time (the deadline and the budget
            # count it), but neither the config's setup nor its cost
            result.load_seconds = preloaded + self._load_base(job.quantization)
            probe.start()  # the job's memory: above the worker's, with its base loaded
            if isinstance(job, BaselineJob):
                self._baseline(job, result, started)
            elif isinstance(job, TestScoringJob):
                self._score_on_test(job, result, started)
            else:
                self._fine_tune_within_memory(job, result, judge, started, probe)
            result.status = "COMPLETE"
        except _Stop as stop:
            result.status = "PRUNED"
            result.error = str(stop)
        except _OutOfMemory as error:
            result.out_of_memory = True
            result.error = str(error)
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
            # its share of a device, held for the whole job
            result.device_seconds = result.wall_seconds * self.share
            result.spent_usd = result.device_seconds / 3600 * self.price
            overhead = (
                result.rung_seconds
                + result.cache_seconds
                + result.load_seconds
                + result.lost_seconds
                + result.reference_seconds
            )
            config_seconds = (result.wall_seconds - overhead) * self.share
            result.cost_usd = config_seconds / 3600 * self.price
            result.peak_memory_mb = self._job_peak(probe, cached_before)
            result.peak_allocated_mb = probe.allocated_mb()
        return result

    def _cached_bytes(self) -> int:
        return self.frozen.nbytes if self.frozen is not None else 0

    def _job_peak(self, probe: PeakMemory, cached_before: int) -> float | None:
        """The job's peak, less what it added to the worker's frozen-layer cache (host
        memory that stays for later trials: the worker's, not this trial's)."""
        peak = probe.peak_mb()
        if peak is None:
            return None
        if not self.device.startswith("cuda"):
            peak -= (self._cached_bytes() - cached_before) / 2**20
        return max(0.0, peak)

    def _fine_tune_within_memory(
        self,
        job: TrialJob | CalibrationJob,
        result: TrialResult,
        judge: Judge | None,
        started: float,
        probe: PeakMemory,
    ) -> None:
        """Fine-tune; out of memory, free it all and retry once with the next memory
        lever (inside the same allowance), else the config does not fit: infeasible."""
        import torch

        levers = _levers(job, self.settings)
        try:
            self._fine_tune(job, result, judge, started)
            return
        except torch.OutOfMemoryError:
            pass  # leaving the handler drops the traceback, and the model with it
        peak = probe.peak_mb()
        release_memory(self.device)
        retry = _next_lever(job, self.settings)
        if retry is None:
            raise _OutOfMemory(self._oom_line(levers, peak))
        result.memory_note = (
            f"out of memory at {levers}; retried at {_levers(retry, self.settings)}"
        )
        result.lost_seconds = time.perf_counter() - started - result.load_seconds
        result.attempts += 1
        result.reset_training()
        probe.start()
        try:
            self._fine_tune(retry, result, judge, started)
            return
        except torch.OutOfMemoryError:
            pass
        peak = probe.peak_mb()
        release_memory(self.device)
        raise _OutOfMemory(self._oom_line(_levers(retry, self.settings), peak))

    def _oom_line(self, levers: str, peak: float | None) -> str:
        limit = self.memory_limit_mb or self.device_memory_mb
        measured = f"; peaked at {peak / 1024:.2f} GB" if peak is not None else ""
        within = f" of the {limit / 1024:.1f} GB allowed" if limit else ""
        return f"out of memory at {levers}{measured}{within}: the config does not fit"

    def _base_copy(self, quantization: str) -> Any:
        """A fresh base on this worker's device (a quantized one is loaded there)."""
        model = self.source.fresh_copy(quantization)
        return model if quantization != "none" else model.to(self.device)

    def _baseline(self, job: BaselineJob, result: TrialResult, started: float) -> None:
        """The base model as it is, scored by the task on the evaluation split; not
        scored when the checkpoint lacked the task's head (a new head's random weights
        score chance, which the task's model-free baselines say exactly and for free)."""
        model = self._base_copy(job.quantization)
        result.setup_seconds = time.perf_counter() - started - result.load_seconds
        result.trainable_params, result.total_params = 0, _count(model)
        if self.source.head_modules:
            result.metrics = {"not_scored": NEW_HEAD}
            return
        self._evaluate(model, self.split("eval"), result)

    def _fine_tune(
        self,
        job: TrialJob | CalibrationJob,
        result: TrialResult,
        judge: Judge | None,
        started: float,
    ) -> None:
        """Train and evaluate: a trial its full steps on the whole eval split, saving its
        adapter; a calibration its few steps on its few rows."""
        steps, table = self.settings.max_steps, self.split("eval")
        if isinstance(job, CalibrationJob):
            steps = job.max_steps
            table = table.select(range(min(job.eval_rows, len(table))))
        model = self._build(job, result)
        # PiSSA/OLoRA: the untrained adapter, which peft's conversion at saving needs
        initial = (
            initial_adapter(model)
            if job.adapter_dir and changes_base_weights(job.peft_config)
            else None
        )
        if job.adapter_dir and (self._save_seconds is None or initial is not None):
            # once per worker, and per converted save (those reload the initial adapter)
            self._save_seconds = max(self._save_seconds or 0.0, self._time_save(model, initial))
        result.setup_seconds = time.perf_counter() - started - result.load_seconds
        # the allowance is device-seconds; this trial's clock runs at its share of one
        allowance = None if job.max_seconds is None else job.max_seconds / self.share
        deadline = Deadline(allowance, started=started)
        if not deadline.has_room(0.0):  # a retry whose lost attempt used it all
            raise _Stop("stopped by the budget before training: the allowance is used up")
        server = (
            self.frozen.server(model, str(job.peft_config.get("peft_type", "")), job.quantization)
            if self.frozen is not None
            else None
        )
        try:
            with server or contextlib.nullcontext():
                self._train(model, job, steps, table, result, judge, deadline, server)
                self._evaluate(model, table, result, server=server, micro=job.micro_batch_size)
        finally:
            if server is not None:
                result.cached_layers = server.boundary
                result.cache_seconds = server.seconds
        if isinstance(job, TrialJob):
            self._forgetting(model, job, result)
        if job.adapter_dir:  # saved from the whole model, outside the server
            # shipped back as bytes: the driver's folder may not exist on this node
            began = time.perf_counter()
            result.adapter_files = saved_adapter(model, initial)
            result.adapter_bytes = sum(len(data) for data in result.adapter_files.values())
            saving = time.perf_counter() - began
            self._save_seconds = max(self._save_seconds or 0.0, saving)

    def _forgetting(self, model: Any, job: TrialJob, result: TrialResult) -> None:
        """A causal LM's forgetting (trials/forgetting.py): its loss on the reference
        text with the adapter, less the base's (the adapter disabled, or a fresh base
        where the adapter's initialisation changed the base weights; derived once per
        worker and base)."""
        from peftsearch.trials.forgetting import (
            Reference,
            forgetting_of,
            generated_reference,
            passage_losses,
            reference_from_tokens,
        )
        from peftsearch.trials.train import evaluation_mode

        if self.data.task != "causal-lm" or not self.settings.forgetting:
            return
        began = time.perf_counter()
        quantization = job.quantization
        reference = self._references.get(quantization)
        with evaluation_mode(model):
            if reference is None:
                original: Any = model
                if changes_base_weights(job.peft_config):
                    original = self._base_copy(quantization).eval()
                with model.disable_adapter() if original is model else contextlib.nullcontext():
                    found = (
                        reference_from_tokens(self.data.reference)
                        if self.data.reference
                        else generated_reference(original, self.source.tokenizer(), self.device)
                    )
                    base = passage_losses(original, found, self.device)
                del original
                reference = Reference(found.sequences, found.starts, base)
                self._references[quantization] = reference
                result.reference_seconds = time.perf_counter() - began
            if not reference.sequences:
                return
            adapted = passage_losses(model, reference, self.device)
        assert reference.base_losses is not None
        result.forgetting, result.forgetting_se = forgetting_of(adapted, reference.base_losses)
        result.forgetting_seconds = time.perf_counter() - began - result.reference_seconds

    def _train(
        self,
        model: Any,
        job: TrialJob | CalibrationJob,
        total: int,
        table: datasets.Dataset,
        result: TrialResult,
        judge: Judge | None,
        deadline: Deadline,
        server: PrefixServer | None = None,
    ) -> None:
        last = [time.perf_counter()]
        widest = [0]
        hint = job.eval_hint if isinstance(job, TrialJob) else None

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
            if isinstance(job, TrialJob) and step in job.rungs and step < total:
                stop_unless_room(self._eval_guess(result, deadline.next_step, hint), step)
                began, filling = time.perf_counter(), server.seconds if server else 0.0
                self._evaluate(
                    model, table, result, rung=True, server=server, micro=job.micro_batch_size
                )
                # rows cached during the rung count once, as filling the cache
                filled = (server.seconds if server else 0.0) - filling
                result.rung_seconds += time.perf_counter() - began - filled
                result.rungs.append([step, result.accuracy])
                rate = sum(deadline.step_times) / len(deadline.step_times)
                assert result.accuracy is not None and result.trainable_params is not None
                if judge is not None and not judge(
                    job.number, step, result.accuracy, result.trainable_params, rate
                ):
                    raise _Stop(
                        f"early-stopped at step {step} of {total}: accuracy "
                        f"{result.accuracy:.3f} is clearly behind trials of no more parameters"
                    )
            if step < total:  # room for one more step and the final evaluation?
                # the step, the final evaluation, and saving the adapter afterwards
                saving = (self._save_seconds or 0.0) * STEP_SAFETY if job.adapter_dir else 0.0
                guess = self._eval_guess(result, deadline.next_step, hint)
                need = deadline.next_step + guess + saving
                stop_unless_room(need, step)
            last[0] = time.perf_counter()
            return True

        settings = self.settings
        if job.seed is not None:
            settings = dataclasses.replace(settings, seed=job.seed)
        train(
            model,
            self.split("train"),
            learning_rate=job.learning_rate,
            settings=settings,
            pad_token_id=self.data.pad_token_id,
            device=self.device,
            after_step=after_step,
            max_steps=total,
            feed=server.feed("train") if server else None,
            micro_batch_size=job.micro_batch_size,
            widest=widest,
            loraplus_lr_ratio=job.loraplus_lr_ratio,
        )
        result.train_seconds = sum(deadline.step_times)
        result.step_jitter = jitter(deadline.step_times[1:])
        result.train_tokens = widest[0]

    def preload(self, quantization: str = "none") -> None:
        """Load the base before the first job arrives (a Ray worker does, while the
        driver sets up). The next job is charged for it, as if it had loaded it: its
        clock (the deadline, the budget's device time) starts when the preload did. A
        failure is left for that job to meet and report."""
        began = time.perf_counter()
        try:
            loaded = self._load_base(quantization)
        except Exception:
            return
        if loaded:
            self._preloaded = time.perf_counter() - began

    def _load_base(self, quantization: str) -> float:
        """Seconds spent loading the base model: 0 once this worker has it."""
        if self.source.loaded(quantization):
            return 0.0
        began = time.perf_counter()
        import_training_stack()
        self.source.load(quantization)
        return time.perf_counter() - began

    def _eval_guess(
        self, result: TrialResult, step_seconds: float, hint: float | None = None
    ) -> float:
        """Time the evaluation will take: measured once it ran, else what it took when
        this config ran before (``hint``: a re-run knows it), else from the step time (a
        forward pass costs about a third of a training step per row)."""
        if result.evaluations:
            return result.eval_seconds / result.evaluations * STEP_SAFETY
        if hint:
            return hint * STEP_SAFETY
        return step_seconds * len(self.data.eval) / self.settings.batch_size * 0.6

    def _eva_init(self, model: Any, seed: int) -> None:
        """EVA (peft's ``initialize_lora_eva_weights``): A from the principal directions
        of each adapted layer's inputs, found over a few training batches (cycled until
        the directions settle); a part of the trial's setup, so its cost counts."""
        import torch
        from peft import initialize_lora_eva_weights

        from peftsearch.trials.train import collate, evaluation_mode, rows_of

        size = self.settings.batch_size
        rows = self.data.train.shuffle(seed=seed).select(
            range(min(len(self.data.train), EVA_BATCHES * size))
        )
        batches = [
            {
                key: value.to(self.device)
                for key, value in collate(
                    rows_of(rows[start : start + size]), self.data.pad_token_id
                ).items()
                # per-row labels (a classifier's) are no token mask: peft's EVA reads
                # per-token labels (causal LM, tagging) to skip prompt and padding
                if key != "row_id" and not (key == "labels" and value.dim() == 1)
            }
            for start in range(0, len(rows), size)
        ]
        with evaluation_mode(model), torch.no_grad():
            initialize_lora_eva_weights(model, batches, show_progress_bar=False)

    def _score_on_test(self, job: TestScoringJob, result: TrialResult, started: float) -> None:
        """The adapter a trial saved (its files, shipped from the driver), on the base
        model it trained on, scored on test."""
        import tempfile

        from peft import PeftModel

        if self.data.test is None:
            raise ValueError("no test split was prepared (data.test is not set)")
        with tempfile.TemporaryDirectory(prefix="peftsearch-test-") as folder:
            write_folder(job.adapter, Path(folder) / "adapter")
            model = PeftModel.from_pretrained(
                self._base_copy(job.quantization), str(Path(folder) / "adapter")
            )
        trainable, total = model.get_nb_trainable_parameters()
        result.trainable_params, result.total_params = int(trainable), int(total)
        self._evaluate(model, self.data.test, result)
        result.setup_seconds = (
            time.perf_counter() - started - result.eval_seconds - result.load_seconds
        )

    def _evaluate(
        self,
        model: Any,
        table: Any,
        result: TrialResult,
        *,
        rung: bool = False,
        server: PrefixServer | None = None,
        micro: int | None = None,
    ) -> None:
        """The task scores the adapter: ``result.accuracy`` is the searched metric (at a
        rung, the task's cheaper signal for it); after the last evaluation
        ``result.metrics`` holds every metric the task reports."""
        from peftsearch.trials.tasks import EvalContext, get_task

        began = time.perf_counter()
        settings = self.settings
        context = EvalContext(
            batch_size=eval_rows(settings.eval_batch_size, micro, settings.batch_size),
            pad_token_id=self.data.pad_token_id,
            device=self.device,
            precision=self.settings.precision,
            label_names=self.data.label_names,
            max_new_tokens=self.settings.max_new_tokens,
            tokenizer=self.source.tokenizer,
            feed=server.feed("eval") if server else None,
            full_model=server.full_model if server else None,
        )
        metric, cheaper = self.settings.metric, rung
        if rung and self.settings.rung_metric is not None:
            metric, cheaper = self.settings.rung_metric, False
        metrics = get_task(self.data.task).evaluate(
            model, table, context, metric=metric, rung=cheaper
        )
        result.accuracy = float(metrics.pop("score"))
        generating = float(metrics.pop("generation_seconds", 0.0))
        result.generation_seconds += generating
        if rung:
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            seconds = time.perf_counter() - began
            result.rung_metrics.append(
                {**numbers, "seconds": seconds, "generation_seconds": generating}
            )
        else:
            result.metrics = metrics
        result.eval_seconds += time.perf_counter() - began
        result.evaluations += 1
        result.eval_rows = len(table)

    @staticmethod
    def _time_save(model: Any, initial: dict[str, bytes] | None) -> float:
        """How long saving this adapter takes, timed on the fresh one (same size as the
        trained one): what the deadline keeps free after the last step."""
        began = time.perf_counter()
        saved_adapter(model, initial)
        return time.perf_counter() - began

    def _build(self, job: TrialJob | CalibrationJob, result: TrialResult) -> Any:
        """The peft model of the job's config on its base, its random draws (adapter
        init, then the training's dropout) seeded by ``search.seed`` (or the job's own
        seed, a confirmation re-run): a config's result does not depend on which trials
        its worker ran before."""
        import torch
        from peft import get_peft_config, get_peft_model, prepare_model_for_kbit_training

        seed = self.settings.seed if job.seed is None else job.seed
        config = dict(job.peft_config)
        base = self._base_copy(job.quantization)
        torch.manual_seed(seed)
        if seed != self.settings.seed:  # another training seed draws its new head anew
            redraw_new_head(base, self.source.head_modules)
        checkpointing = job.gradient_checkpointing
        if checkpointing is None:
            checkpointing = self.settings.gradient_checkpointing
        result.gradient_checkpointing = checkpointing
        micro = job.micro_batch_size
        result.micro_batch_size = micro if micro and micro < self.settings.batch_size else None
        if checkpointing and not getattr(base, "supports_gradient_checkpointing", False):
            raise ValueError(
                f"{type(base).__name__} does not support gradient checkpointing "
                "(set training.gradient_checkpointing: false)"
            )
        kwargs = {"use_reentrant": False}
        if job.quantization != "none":  # peft's preparation of a k-bit base (QLoRA)
            base = prepare_model_for_kbit_training(
                base, checkpointing, gradient_checkpointing_kwargs=kwargs
            )
        elif checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if checkpointing:
            base.config.use_cache = False
        if self.source.extra_modules:
            config["modules_to_save"] = sorted(
                {*config.get("modules_to_save", []), *self.source.extra_modules}
            )
        with warnings.catch_warnings():  # EVA's defaults, and its note on memory
            warnings.filterwarnings("ignore", message=".*eva.*", category=UserWarning)
            model = get_peft_model(base, get_peft_config(config))
        if job.quantization == "none":
            model.to(self.device)
        if config.get("init_lora_weights") == "eva":
            self._eva_init(model, seed)
        trainable, total = model.get_nb_trainable_parameters()
        result.trainable_params, result.total_params = int(trainable), int(total)
        result.trainable_pct = 100.0 * trainable / total
        return model
