"""Memory: per-trial peaks on the CPU, the memory model and its levers, the out-of-memory
retry, and gradient accumulation that keeps a step's maths."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from helpers import LM_LORA, LORA, lm_runner, prepare_lm, tiny_config

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.search.memory_model import MemoryModel, MemoryNeed, ModelShape
from peftsearch.trials import TrialJob, TrialResult, TrialRunner
from peftsearch.trials.memory import PeakMemory

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="per-trial peaks need Linux"
)


def runner_for(
    model_dir: Path, data_paths: dict[str, Path], out: Path, source: Any = None, **training: Any
) -> TrialRunner:
    config = parse_config(
        tiny_config(model_dir, data_paths, out, training={"max_steps": 4, **training})
    )
    data = build_data(config)
    settings = build_settings(config)
    settings = dataclasses.replace(settings, cache_frozen_layers=False)
    return TrialRunner(
        source or build_model_source(config, data), data, settings, device="cpu", device_name="cpu"
    )


def lora(rank: int) -> dict[str, Any]:
    return {**LORA, "r": rank, "lora_alpha": rank}


def test_the_probe_sees_one_jobs_peak_not_the_workers_lifetime() -> None:
    import numpy as np

    probe = PeakMemory("cpu")
    big = np.ones(100 * 2**20 // 8)  # 100 MB, then freed: an earlier trial's peak
    del big
    probe.start()
    small = np.ones(20 * 2**20 // 8)
    small[::512] = 2.0  # touch every page
    peak = probe.peak_mb()
    assert peak is not None and 15 < peak < 60, peak


def test_a_larger_batch_or_rank_gives_a_larger_peak(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    small = runner_for(tiny_model_dir, tiny_data, tmp_path, batch_size=4)
    large = runner_for(tiny_model_dir, tiny_data, tmp_path, batch_size=128)
    # a worker's first trial also pays a few MB of one-time set-up (lazy imports and
    # caches in the libraries): negligible for a real model, not for this 2-layer one
    small.run(TrialJob(9, "lora", lora(4), 1e-3, None))
    large.run(TrialJob(9, "lora", lora(4), 1e-3, None))
    peaks = {}
    for name, runner, rank in (
        ("small", small, 4),
        ("large batch", large, 4),
        ("large rank", small, 2048),
    ):
        result = runner.run(TrialJob(0, "lora", lora(rank), 1e-3, None))
        assert result.status == "COMPLETE", result.error
        peaks[name] = result.peak_memory_mb
    # the same small trial again, after the large ones: its own figure, not theirs
    again = small.run(TrialJob(1, "lora", lora(4), 1e-3, None)).peak_memory_mb
    assert peaks["large batch"] > 2 * peaks["small"], peaks
    assert peaks["large rank"] > peaks["small"] + 6, peaks  # 0.5M params x 16 bytes = 8 MB
    assert again < peaks["large batch"] / 2, (again, peaks)


def test_accumulated_micro_batches_take_the_same_step(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path]
) -> None:
    """Micro-batches of 3 accumulated up to the batch of 8 take the same steps (the
    causal LM has no dropout; its loss is a mean over response tokens, which differ in
    number between rows, so each piece weighs by its tokens), in less memory."""
    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    runner = lm_runner(
        tiny_llama_dir, data, max_steps=4, cache_frozen_layers=False, metric="token_accuracy"
    )
    config = {**LM_LORA, "lora_dropout": 0.0}
    whole = runner.run(TrialJob(0, "lora", config, 1e-2, None))
    pieces = runner.run(TrialJob(0, "lora", config, 1e-2, None, micro_batch_size=3))
    assert whole.status == pieces.status == "COMPLETE", (whole.error, pieces.error)
    assert pieces.losses == pytest.approx(whole.losses, rel=1e-4)
    assert pieces.accuracy == pytest.approx(whole.accuracy)
    assert pieces.micro_batch_size == 3 and whole.micro_batch_size is None


class _SmallDevice:
    """A base model source whose copies raise CUDA's out-of-memory error for a forward
    pass over more than ``rows`` rows: a device that fits only small micro-batches."""

    def __init__(self, source: Any, rows: int) -> None:
        self.source, self.rows = source, rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def fresh_copy(self, quantization: str = "none") -> Any:
        import torch

        model = self.source.fresh_copy(quantization)

        def refuse(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            rows = kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0]
            if module.training and rows > self.rows:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.register_forward_pre_hook(refuse, with_kwargs=True)
        return model


def test_out_of_memory_retries_with_half_the_micro_batch_and_the_worker_goes_on(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    plain = runner_for(tiny_model_dir, tiny_data, tmp_path, batch_size=16)
    runner = runner_for(
        tiny_model_dir, tiny_data, tmp_path, source=_SmallDevice(plain.source, 8), batch_size=16
    )
    retried = runner.run(TrialJob(0, "lora", LORA, 1e-3, None))
    assert retried.status == "COMPLETE", retried.error
    assert retried.micro_batch_size == 8 and retried.attempts == 2 and retried.steps == 4
    assert "out of memory at micro-batch 16; retried at micro-batch 8" in retried.memory_note
    assert 0 < retried.lost_seconds < retried.wall_seconds
    # the lost attempt is the search's overhead, not the config's cost
    assert retried.cost_usd < retried.spent_usd or retried.spent_usd == 0

    runner.source.rows = 2  # too small for the retry at 8 rows
    lost = runner.run(TrialJob(1, "lora", LORA, 1e-3, None))
    assert lost.status == "FAIL" and lost.out_of_memory
    assert lost.error.startswith("out of memory at micro-batch 8"), lost.error
    assert "the config does not fit" in lost.error

    runner.source.rows = 64  # the same worker, its next trial
    after = runner.run(TrialJob(2, "lora", LORA, 1e-3, None))
    assert after.status == "COMPLETE" and after.attempts == 1, after.error


def _shape(**changes: Any) -> ModelShape:
    shape = ModelShape(
        num_layers=4,
        hidden_size=256,
        intermediate_size=1024,
        num_heads=4,
        linear_params=3_000_000,
        other_params=1_000_000,
        logits_width=2,
        train_tokens=128,
        eval_tokens=128,
        batch_size=32,
        eval_batch_size=32,
        causal_lm=False,
    )
    return dataclasses.replace(shape, **changes)


def test_the_memory_model_follows_its_terms() -> None:
    model = MemoryModel(_shape())
    need = MemoryNeed(trainable_params=100_000, lowest_block=0)
    base = model.predict(need)
    assert model.predict(dataclasses.replace(need, quantization="nf4")) < base - 8  # 16 -> 4 MB+
    assert model.predict(dataclasses.replace(need, trainable_params=1_100_000)) == pytest.approx(
        base + 1_000_000 * 16 / 2**20
    )
    assert model.predict(dataclasses.replace(need, lowest_block=2)) < base
    assert model.predict(dataclasses.replace(need, micro_batch_size=8)) < base
    assert model.predict(dataclasses.replace(need, gradient_checkpointing=True)) < base
    assert MemoryModel(_shape(batch_size=64)).predict(need) > base


def test_the_memory_model_learns_from_measured_trials() -> None:
    """Trials that measured twice the theory's activations pull the prediction there."""
    model = MemoryModel(_shape())
    need = MemoryNeed(trainable_params=100_000, lowest_block=0)
    fixed = model.base_mb("none") + model.states_mb(100_000)
    for micro in (32, 16, 8):
        sized = dataclasses.replace(need, micro_batch_size=micro)
        measured = fixed + 2 * model.activations_mb(sized) + 30
        result = TrialResult(0, "lora", "COMPLETE", steps=4, peak_memory_mb=measured)
        result.micro_batch_size = micro if micro < 32 else None
        model.observe(need, result)
    truth = fixed + 2 * model.activations_mb(need) + 30
    assert model.predict(need) == pytest.approx(truth, rel=0.05)


def test_a_config_over_the_limit_gets_the_levers_in_order_or_does_not_fit() -> None:
    model = MemoryModel(_shape())
    need = MemoryNeed(trainable_params=100_000, lowest_block=0)
    as_is = model.predict(need)
    room = 1 + model.headroom()  # 25% until trials have measured the model's misses
    assert room == 1.25
    assert model.plan(need, None).micro_batch_size is None
    assert model.plan(need, as_is * room + 1).micro_batch_size is None
    halved = model.plan(need, as_is * 0.8 * room)
    assert halved.fits and halved.micro_batch_size == 16 and not halved.gradient_checkpointing
    at_one = model.predict(dataclasses.replace(need, micro_batch_size=1))
    checkpointed = model.plan(need, (at_one - 0.5) * room)
    assert checkpointed.fits and checkpointed.gradient_checkpointing
    fixed = model.base_mb("none") + model.states_mb(100_000)
    nothing = model.plan(need, fixed / 2)
    assert not nothing.fits and nothing.predicted_mb < as_is
    assert checkpointed.levers(32).endswith("gradient checkpointing")
    assert "checkpointing" not in checkpointed.levers(32, checkpointing_set=True)


def test_the_headroom_follows_the_measured_misses() -> None:
    model = MemoryModel(_shape())
    need = MemoryNeed(trainable_params=100_000, lowest_block=0)
    for _ in range(6):  # every trial measures 10% above what was predicted for it
        result = TrialResult(0, "lora", "COMPLETE", steps=4)
        result.peak_memory_mb = model.predict(need) * 1.1
        model.observe(need, result)
    assert model.headroom() == pytest.approx(0.1, abs=0.02)


def test_the_default_limit_is_the_devices_memory_as_trials_share_it() -> None:
    from peftsearch.search.memory_model import default_memory_limit_mb
    from peftsearch.trials.memory import device_memory_mb

    assert default_memory_limit_mb(81920.0, gpu_share=0.5, concurrent=4) == 40960.0
    assert default_memory_limit_mb(24576.0, gpu_share=0.0, concurrent=2) == 12288.0
    assert default_memory_limit_mb(None, gpu_share=1.0, concurrent=1) is None
    ram = device_memory_mb("cpu")
    assert ram is not None and ram > 1024
    import torch

    if not torch.cuda.is_available():
        assert device_memory_mb("cuda") is None  # a driver without its workers' GPU


def test_a_run_is_learned_at_the_width_of_the_batches_it_saw() -> None:
    """A short run (the cost calibration's 3 steps) sees narrower batches than a trial's
    widest: learned at its own width, it does not drag the prediction down."""
    model = MemoryModel(_shape())
    need = MemoryNeed(trainable_params=100_000, lowest_block=0)
    fixed = model.base_mb("none") + model.states_mb(100_000)
    for width in (40, 64, 100):
        seen = dataclasses.replace(need, train_tokens=width)
        result = TrialResult(0, "lora", "COMPLETE", steps=3)
        result.peak_memory_mb = fixed + 2 * model.activations_mb(seen) + 30
        result.train_tokens = width
        model.observe(need, result)
    assert model.predict(need) == pytest.approx(
        fixed + 2 * model.activations_mb(need) + 30, rel=0.08
    )
