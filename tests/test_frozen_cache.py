"""The frozen-layer cache: what it serves is what the full model computes, for every
method that can use it, on padded batches of mixed lengths, for classifiers and causal LMs."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import FILLER, NEGATIVE, POSITIVE, lm_runner, prepare_lm, tiny_config

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import (
    build_data,
    build_model_info,
    build_model_source,
    build_settings,
)
from peftsearch.trials import TrialJob, TrialRunner
from peftsearch.trials.file_transfer import write_folder
from peftsearch.trials.frozen_cache import PrefixServer
from peftsearch.trials.model import Checkpoint
from peftsearch.trials.train import collate, rows_of

TOP = {"layers": ["top-half"]}
# every method whose space can place its adapter on the upper blocks alone
UPPER_ONLY = {
    "lora": {**TOP, "targets": ["attention+mlp"], "dropout": [0.0]},
    "dora": {**TOP, "targets": ["qv"]},
    "loha": {**TOP, "targets": ["qv"]},
    "lokr": {**TOP, "targets": ["qv"]},
    "ia3": {**TOP, "targets": ["kv+ffn"]},
    "bottleneck_adapter": {**TOP, "placement": ["attention+ffn"]},
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Texts of 1 to 10 words, so that every batch pads (and the cache must ignore it)."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = random.Random(3)
    out = {}
    for split, n in (("train", 96), ("eval", 40)):
        lines = ["text,label"]
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            words = rng.sample(FILLER, rng.randint(0, 9))
            words.insert(
                rng.randint(0, len(words)), rng.choice(POSITIVE if i % 2 == 0 else NEGATIVE)
            )
            lines.append(f"{' '.join(words)},{label}")
        out[split] = folder / f"{split}.csv"
        out[split].write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def no_dropout_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout: then training through the cache must equal training
    the full model step for step."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    model = BertModel.from_pretrained(tiny_model_dir)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def setup(
    model_dir: Path, data: dict[str, Path], out: Path, method: str, **training: Any
) -> tuple[TrialRunner, TrialJob]:
    """A runner and a request for ``method`` placed on the top half of the blocks."""
    import optuna

    from peftsearch.spaces import sample_choice

    base = {"max_steps": 6, "batch_size": 8, "eval_batch_size": 16, "device": "cpu"}
    config = parse_config(
        tiny_config(
            model_dir,
            data,
            out,
            space={"methods": [method], method: UPPER_ONLY[method]},
            training={**base, **training},
        )
    )
    prepared = build_data(config)
    info, _ = build_model_info(config, prepared.label_names)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    picked = sample_choice(study.ask(), config.method_options(), info)
    runner = TrialRunner(
        build_model_source(config, prepared),
        prepared,
        build_settings(config),
        device="cpu",
        device_name="cpu",
    )
    request = TrialJob(0, method, picked.peft_config, 1e-2, str(out / "adapter"))
    return runner, request


def logits_of(model: Any, table: Any, pad: int, server: PrefixServer | None = None) -> Any:
    """Eval-mode logits over ``table``, through ``server`` when given."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(table), 16):
            batch = collate(rows_of(table[start : start + 16]), pad)
            batch.pop("labels")
            row_ids = batch.pop("row_id")
            if server is not None:
                feed = server.feed("eval")
                assert feed is not None
                feed(row_ids, batch)
            out.append(model(**batch).logits)
    return torch.cat(out)


@pytest.mark.parametrize("method", list(UPPER_ONLY))
def test_an_adapter_trained_through_the_cache_predicts_the_same_on_the_full_model(
    method: str, tiny_model_dir: Path, mixed: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    runner, request = setup(tiny_model_dir, mixed, tmp_path, method)
    result = runner.run(request)
    assert result.status == "COMPLETE", result.error
    assert result.cached_layers == 1  # the tiny BERT's block 0 came from the cache
    assert runner.cache is not None and runner.cache.has("train", 1)
    # a normal peft adapter: on a fresh full model, no cache, it scores the same
    write_folder(result.adapter_files, tmp_path / "saved")
    reloaded = PeftModel.from_pretrained(runner.source.fresh_copy(), tmp_path / "saved")
    table, pad = runner.split("eval"), runner.data.pad_token_id
    full = logits_of(reloaded, table, pad)
    accuracy = float((full.argmax(-1) == torch.tensor(table["label"])).float().mean())
    assert accuracy == pytest.approx(result.accuracy)
    # and the cached evaluation of that adapter gives the full model's logits
    states = runner.cache.cached("eval", 1)
    assert states is not None and len(states.rows) == len(table)  # every eval row, cached
    splits = {"eval": states}
    with PrefixServer(reloaded, 1, splits, runner.cache, device="cpu", precision="fp32") as server:
        served = logits_of(reloaded, table, pad, server)
    torch.testing.assert_close(served, full, rtol=1e-5, atol=1e-5)
    # the blocks are whole again after serving (what saving the adapter relies on)
    assert len(reloaded.base_model.model.bert.encoder.layer) == 2


def test_without_dropout_training_through_the_cache_is_training_the_full_model(
    no_dropout_dir: Path, mixed: dict[str, Path], tmp_path: Path
) -> None:
    cached, request = setup(no_dropout_dir, mixed, tmp_path / "a", "lora")
    full, _ = setup(no_dropout_dir, mixed, tmp_path / "b", "lora", cache_frozen_layers=False)
    with_cache, without = cached.run(request), full.run(request)
    assert (with_cache.cached_layers, without.cached_layers) == (1, 0)
    assert with_cache.losses == pytest.approx(without.losses, rel=1e-5, abs=1e-6)
    assert with_cache.accuracy == without.accuracy


def test_the_cache_is_built_once_per_boundary_and_is_not_the_configs_cost(
    tiny_model_dir: Path, mixed: dict[str, Path], tmp_path: Path
) -> None:
    import dataclasses

    runner, request = setup(tiny_model_dir, mixed, tmp_path, "lora")
    request = dataclasses.replace(request, rungs=(2,))  # the rung fills the eval rows
    first = runner.run(request)
    assert runner.cache is not None
    # filling the eval rows at the rung is counted once, as filling, not also as the rung
    assert 0 < first.rung_seconds < first.eval_seconds
    assert first.rung_seconds + first.cache_seconds < first.wall_seconds - first.setup_seconds
    size = runner.cache.nbytes
    # 136 rows of real tokens only (no padding), hidden size 32, fp32
    tokens = sum(
        len(r) for split in (runner.data.train, runner.data.eval) for r in split["input_ids"]
    )
    assert size <= tokens * 32 * 4  # the rows the trial read, real tokens only, fp32
    second = runner.run(request)
    assert runner.cache.nbytes == size  # reused, not rebuilt
    assert second.cached_layers == first.cached_layers == 1
    assert second.cache_seconds < first.cache_seconds
    # the one-off build (like the model's load) is search overhead: charged to the
    # budget, not to the config
    overhead = first.cache_seconds + first.rung_seconds + first.load_seconds
    assert first.cost_usd == pytest.approx((first.device_seconds - overhead) / 3600 * runner.price)
    assert first.cache_seconds > 0 and first.spent_usd > first.cost_usd


@pytest.mark.parametrize("peft_config", ["prompt", "every_layer"])
def test_trials_that_touch_the_inputs_or_the_lowest_block_run_the_full_model(
    peft_config: str, tiny_model_dir: Path, mixed: dict[str, Path], tmp_path: Path
) -> None:
    runner, _ = setup(tiny_model_dir, mixed, tmp_path, "lora")
    config = (
        {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_CLS", "num_virtual_tokens": 4}
        if peft_config == "prompt"
        else {"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 2, "target_modules": ["query"]}
    )
    result = runner.run(TrialJob(0, "x", config, 1e-2, None))
    assert result.status == "COMPLETE", result.error
    assert result.cached_layers == 0 and result.cache_seconds == 0
    assert runner.cache is not None and runner.cache.nbytes == 0


def test_over_the_memory_limit_trials_run_the_full_model_and_say_so(
    tiny_model_dir: Path, mixed: dict[str, Path], tmp_path: Path, caplog: Any
) -> None:
    runner, request = setup(tiny_model_dir, mixed, tmp_path, "lora", cache_max_mb=0)
    with caplog.at_level(logging.WARNING, logger="peftsearch"):
        result = runner.run(request)
    assert result.status == "COMPLETE" and result.cached_layers == 0
    assert "training.cache_max_mb" in caplog.text


def test_a_causal_lm_trains_through_the_cache_and_generates_on_the_full_model(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftsearch.trials.lm_eval import evaluate_lm
    from peftsearch.trials.model import load_tokenizer

    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    runner = lm_runner(tiny_llama_dir, data, metric="exact_match")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "layers_to_transform": [1],
        "layers_pattern": "layers",
    }
    result = runner.run(TrialJob(0, "lora", config, 5e-2, str(tmp_path), rungs=(4,)))
    assert result.status == "COMPLETE", result.error
    assert result.cached_layers == 1 and result.rungs
    write_folder(result.adapter_files, tmp_path / "saved")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    again = evaluate_lm(
        PeftModel.from_pretrained(base, tmp_path / "saved"),
        data.eval,
        metric="exact_match",
        tokenizer=tokenizer,
        batch_size=16,
        pad_token_id=0,
        device="cpu",
        max_new_tokens=3,
    )
    # teacher-forced through the cache == on the full model; generation ran in full
    assert again["token_accuracy"] == result.metrics["token_accuracy"]
    assert again["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
    assert again["exact_match"] == result.metrics["exact_match"]


def test_the_space_offers_upper_subsets_and_names_a_bad_one() -> None:
    from peftsearch.errors import UserError
    from peftsearch.spaces import ModelInfo

    info = ModelInfo("bert", "layer", 12, (), (), (), (), (), 1, False)
    assert info.layer_indices("top-third") == [8, 9, 10, 11]
    assert info.layer_indices("top-quarter") == [9, 10, 11]
    assert info.layer_indices("top-2") == [10, 11]
    assert info.layer_indices("top-20") == list(range(12))
    with pytest.raises(UserError) as caught:
        parse_config(
            {
                "model": {"name_or_path": "x"},
                "data": {"train": "t.csv"},
                "space": {"lora": {"layers": ["top-half", "middle"]}},
            }
        )
    assert "space.lora.layers" in str(caught.value) and "top-<N>" in str(caught.value)


def test_the_cost_model_knows_cached_trials_are_cheaper() -> None:
    from peftsearch.search.cost_model import CostModel, features_of
    from peftsearch.trials import TrialResult

    top_half = {"peft_type": "LORA", "layers_to_transform": [3, 4, 5], "target_modules": ["q"]}
    cached = features_of("lora", top_half, 1000, 6, cache_frozen_layers=True)
    uncached = features_of("lora", top_half, 1000, 6, cache_frozen_layers=False)
    assert (cached.cached_fraction, uncached.cached_fraction) == (0.5, 0.0)
    prompt = {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8}
    assert features_of("prompt_tuning", prompt, 10, 6, True).cached_fraction == 0.0
    every = {"peft_type": "IA3", "target_modules": ["key", "value"]}
    assert features_of("ia3", every, 10, 6, True).cached_fraction == 0.0
    per_layer = {"peft_type": "IA3", "target_modules": ["layer.4.key", "layer.5.value"]}
    assert features_of("ia3", per_layer, 10, 6, True).cached_fraction == pytest.approx(4 / 6)

    calibration = TrialResult(
        -1, "lora", "COMPLETE", steps=3, train_seconds=3.0, eval_seconds=2.0, setup_seconds=1.0
    )
    model = CostModel.from_calibration(calibration, 64, 64)
    full, served = model.predict(uncached, 10, 1), model.predict(cached, 10, 1)
    # steps: 2a / (1 + a) of an uncached step with a = 1/2; the evaluation: a of one
    assert served == pytest.approx(1.0 + 10 * 1.0 * 2 / 3 + 2.0 * 0.5)
    assert full == pytest.approx(1.0 + 10 * 1.0 + 2.0)
    # it learns in uncached units: a warm cached trial at the predicted speed changes nothing
    model.observe(
        cached,
        TrialResult(
            0,
            "lora",
            "COMPLETE",
            steps=10,
            train_seconds=10 * 2 / 3,
            eval_seconds=1.0,
            evaluations=1,
            setup_seconds=1.0,
            cached_layers=3,
        ),
    )
    assert model.predict(uncached, 10, 1) == pytest.approx(full, rel=0.02)
