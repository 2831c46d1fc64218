"""One trial on the tiny BERT: results, failures as FAIL, base model reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import LORA, tiny_config, tiny_runner

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.trials import BaselineJob, CalibrationJob, TrialJob, TrialRunner


def make_runner(tiny_model_dir: Path, tiny_data: dict[str, Path], out: Path) -> TrialRunner:
    """A worker's runner on the tiny BERT at $3.6 per device-hour ($0.001 a second)."""
    return tiny_runner(tiny_model_dir, tiny_data, out, usd_per_device_hour={"cpu": 3.6})[0]


@pytest.fixture(scope="module")
def runner(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> TrialRunner:
    return make_runner(tiny_model_dir, tiny_data, tmp_path_factory.mktemp("out"))


def test_complete_trial_measures_everything(runner: TrialRunner, tmp_path: Path) -> None:
    result = runner.run(TrialJob(0, "lora", LORA, 1e-3, str(tmp_path / "adapter")))
    assert result.status == "COMPLETE", result.error
    assert 0 <= result.accuracy <= 1 and 0 <= result.metrics["macro_f1"] <= 1
    assert result.metrics["metric"] == "accuracy" and result.metrics["accuracy"] == result.accuracy
    assert result.steps == 6 and len(result.losses) == 6
    assert result.trainable_params and result.total_params
    assert result.trainable_pct == pytest.approx(
        100 * result.trainable_params / result.total_params
    )
    assert result.device_seconds == result.wall_seconds > 0
    # $3.6 per device-hour is $0.001 per device-second
    assert result.spent_usd == pytest.approx(result.device_seconds * 0.001)
    config_seconds = result.device_seconds - result.load_seconds
    assert result.cost_usd == pytest.approx(config_seconds * 0.001)
    # this trial's own peak above what the worker held (trials/memory.py)
    assert result.peak_memory_mb is not None and result.peak_memory_mb > 0
    # the adapter comes back as bytes; the runner never writes to the driver's folder
    assert not (tmp_path / "adapter").exists()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(result.adapter_files)
    assert result.adapter_bytes == sum(len(data) for data in result.adapter_files.values())


def test_a_classifier_can_search_macro_f1(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """``evaluation.metric: macro_f1``: the searched score is macro-F1, and the rungs
    judge it too; accuracy stays among the metrics."""
    import dataclasses

    config = parse_config(
        tiny_config(tiny_model_dir, tiny_data, tmp_path), overrides=["evaluation.metric=macro_f1"]
    )
    assert config.metric == "macro_f1"
    data = build_data(config)
    settings = build_settings(config)
    assert settings.metric == "macro_f1"
    runner = TrialRunner(
        build_model_source(config, data), data, settings, device="cpu", device_name="cpu"
    )
    result = runner.run(TrialJob(0, "lora", LORA, 1e-2, None, rungs=(2,)))
    assert result.status == "COMPLETE", result.error
    assert result.metrics["metric"] == "macro_f1"
    assert result.accuracy == result.metrics["macro_f1"] != result.metrics["accuracy"]
    accuracy = TrialRunner(
        build_model_source(config, data),
        data,
        dataclasses.replace(settings, metric="accuracy"),
        device="cpu",
        device_name="cpu",
    ).run(TrialJob(0, "lora", LORA, 1e-2, None, rungs=(2,)))
    assert accuracy.metrics["macro_f1"] == result.metrics["macro_f1"]  # the same training
    assert [r[0] for r in accuracy.rungs] == [r[0] for r in result.rungs] == [2]


def test_loading_the_base_model_is_overhead_of_the_first_trial_only(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A worker loads the base model on its first job. That is device time the budget
    pays, but not what the config costs: the first trial must not look dearer than the
    same config run later."""
    fresh = make_runner(tiny_model_dir, tiny_data, tmp_path / "out")
    first = fresh.run(TrialJob(0, "lora", LORA, 1e-3, None))
    second = fresh.run(TrialJob(1, "lora", LORA, 1e-3, None))
    assert first.status == second.status == "COMPLETE", (first.error, second.error)
    assert first.load_seconds > 0 and second.load_seconds == 0
    assert first.spent_usd == pytest.approx(first.device_seconds * 0.001)
    assert first.cost_usd == pytest.approx((first.device_seconds - first.load_seconds) * 0.001)


def test_a_preloaded_base_is_charged_to_the_first_job(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A Ray worker loads the base while the driver sets up (``preload``); the job that
    follows holds the device from then on: its clock, device time and load seconds
    include the preload, so the budget still pays for it."""
    import time

    fresh = make_runner(tiny_model_dir, tiny_data, tmp_path / "out")
    began = time.perf_counter()
    fresh.preload("none")
    loading = time.perf_counter() - began
    assert fresh.source.loaded("none")
    time.sleep(0.2)  # the driver still setting up: idle, not charged
    first = fresh.run(TrialJob(0, "lora", LORA, 1e-3, None))
    second = fresh.run(TrialJob(1, "lora", LORA, 1e-3, None))
    assert first.status == second.status == "COMPLETE", (first.error, second.error)
    assert first.load_seconds == pytest.approx(loading, rel=0.05, abs=0.01)
    assert first.device_seconds >= first.load_seconds + first.train_seconds
    assert second.load_seconds == 0
    assert first.cost_usd == pytest.approx((first.device_seconds - first.load_seconds) * 0.001)


def test_rung_evaluations_are_search_overhead_not_the_configs_cost(runner: TrialRunner) -> None:
    result = runner.run(TrialJob(0, "lora", LORA, 1e-3, None, rungs=(2, 4)))
    assert result.status == "COMPLETE" and result.evaluations == 3
    assert 0 < result.rung_seconds < result.eval_seconds
    assert result.spent_usd == pytest.approx(result.device_seconds * 0.001)  # the budget's view
    # (the base model's load, on the runner's first trial, is overhead too)
    overhead = result.rung_seconds + result.load_seconds
    assert result.cost_usd == pytest.approx((result.device_seconds - overhead) * 0.001)


def test_a_rung_evaluation_does_not_change_the_training(runner: TrialRunner) -> None:
    """Observing a trial at a rung leaves it training as before (dropout on): its losses
    after the rung are the ones it has unobserved. Each trial's random draws start from
    the search's seed, so the second trial (on a runner with a history) matches too."""
    observed = runner.run(TrialJob(0, "lora", LORA, 1e-2, None, rungs=(2,)))
    unobserved = runner.run(TrialJob(1, "lora", LORA, 1e-2, None))
    assert observed.status == unobserved.status == "COMPLETE"
    assert len(observed.losses) > 3 and observed.evaluations == unobserved.evaluations + 1
    assert observed.losses == unobserved.losses
    assert observed.accuracy == unobserved.accuracy


def test_nan_loss_becomes_fail(runner: TrialRunner) -> None:
    result = runner.run(TrialJob(1, "lora", LORA, 1e20, None))
    assert result.status == "FAIL"
    assert result.error and result.error.startswith("diverged: loss became")


def test_bad_peft_config_becomes_fail(runner: TrialRunner) -> None:
    bad = {**LORA, "target_modules": ["no_such_module"]}
    result = runner.run(TrialJob(2, "lora", bad, 1e-3, None))
    assert result.status == "FAIL"
    assert (result.error or "").startswith("NoMatchingPeftModuleError: No modules were targeted")


def test_base_model_loaded_once_and_copied_clean(runner: TrialRunner) -> None:
    import torch

    runner.run(TrialJob(3, "lora", LORA, 1e-2, None))
    cached = runner.source._models["none"]
    first, second = runner.source.fresh_copy(), runner.source.fresh_copy()
    assert runner.source._models["none"] is cached and first is not second
    for (name, a), (_, b) in zip(
        first.state_dict().items(), cached.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_shipped_adapter_files_land_whole_or_not_at_all(tmp_path: Path) -> None:
    from peftsearch.trials.file_transfer import read_folder, write_folder

    files = {"adapter_config.json": b"{}", "sub/weights.bin": b"\x00\x01"}
    target = write_folder(files, tmp_path / "study" / "7")
    assert read_folder(target) == files
    with pytest.raises(ValueError, match="outside its folder"):
        write_folder({"../escape.txt": b"x"}, tmp_path / "study" / "8")
    assert not (tmp_path / "study" / "escape.txt").exists()
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["7"]  # no staging left


def test_a_shipped_model_is_written_once_per_node_and_loads(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from peftsearch.trials.file_transfer import local_checkpoint, ship_model
    from peftsearch.trials.model import Checkpoint

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    here = Checkpoint(str(tiny_model_dir))
    shipped = ship_model(here)
    assert shipped is not None and "config.json" in shipped.files
    assert local_checkpoint(here, shipped) == here  # this node has the driver's folder
    elsewhere = Checkpoint(str(tmp_path / "not-on-this-node"), revision="v1")
    local = local_checkpoint(elsewhere, shipped)
    assert local.revision == "v1" and Path(local.name_or_path).parent.name == "peftsearch-models"
    assert local_checkpoint(elsewhere, shipped) == local  # a second worker reuses it
    assert ship_model(Checkpoint("org/hub-model")) is None  # every node downloads a hub id
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(local.name_or_path).model_type == "bert"


def test_a_trial_pays_its_share_of_the_device(runner: TrialRunner) -> None:
    """Half a device (1 core of the 2-vCPU VM the cpu price buys, or half a GPU) is
    charged half the wall time, and its device-second allowance lasts twice as long."""
    from peftsearch.search.cost_model import CostModel
    from peftsearch.trials.cost import device_share

    assert device_share("cpu", cpus=1, gpus=0) == 0.5
    assert device_share("cuda", cpus=4, gpus=0.5) == 0.5
    assert device_share("cuda", cpus=1, gpus=0) == 1.0
    saved = runner.share
    runner.share = 0.5
    try:
        result = runner.run(CalibrationJob("lora", LORA, max_steps=3, eval_rows=48))
        assert result.device_seconds == pytest.approx(result.wall_seconds * 0.5)
        assert result.spent_usd == pytest.approx(result.device_seconds * 0.001)
        model = CostModel.from_calibration(result, 48, 48)
        assert model.share == pytest.approx(0.5)
        wall = model.setup_seconds + 0.5 * model.step_seconds + model.eval_seconds
        assert model.floor() == pytest.approx(wall * 0.5)
    finally:
        runner.share = saved


def test_a_training_seed_draws_another_run_and_the_same_seed_the_same(
    runner: TrialRunner,
) -> None:
    """Confirmation re-runs a config with new seeds (search/confirm.py): each seed is its
    own draw of adapter init, new head, dropout and batch order, reproducible by seed;
    no seed is the search's."""
    runs = {
        seed: runner.run(TrialJob(0, "lora", LORA, 1e-2, None, seed=seed))
        for seed in (None, 0, 1, 2)
    }
    again = runner.run(TrialJob(0, "lora", LORA, 1e-2, None, seed=1))
    assert all(r.status == "COMPLETE" for r in runs.values())
    assert runs[None].losses == runs[0].losses  # search.seed is 0
    assert runs[1].losses == again.losses and runs[1].accuracy == again.accuracy
    assert runs[1].losses[0] != runs[0].losses[0] != runs[2].losses[0]
    assert runs[1].job == "trial 0 seed 1" and runs[None].job == "trial 0"


def test_the_base_model_is_a_baseline_only_with_its_own_head(
    runner: TrialRunner, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A bare encoder's new head is random (it scores chance, which the majority class
    says for free): the baseline job loads it and scores nothing. A checkpoint with its
    own classifier head (a fine-tuned model) is scored as it is."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    bare = runner.run(BaselineJob())
    assert bare.status == "COMPLETE", bare.error
    assert bare.accuracy is None and bare.evaluations == 0
    assert bare.metrics["not_scored"].startswith("its head is new")

    with_head = tmp_path / "with-head"
    shutil.copytree(tiny_model_dir, with_head)
    AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2
    ).save_pretrained(with_head)
    scored_runner, _ = tiny_runner(with_head, tiny_data, tmp_path / "out")
    scored = scored_runner.run(BaselineJob())
    assert scored.status == "COMPLETE", scored.error
    assert scored.accuracy is not None and 0 <= scored.accuracy <= 1
    assert "not_scored" not in scored.metrics and scored.evaluations == 1
