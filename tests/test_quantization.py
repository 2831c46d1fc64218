"""Quantized bases (bitsandbytes on the CPU): trials train on nf4 and int8 copies, the
quantization can be a searched dimension, and exports load the base the same way."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import LM_LORA, lm_runner, prepare_lm

from peftsearch.results.export import model_card
from peftsearch.spaces import sample_choice
from peftsearch.trials import TrialJob
from peftsearch.trials.model import Checkpoint

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("quantization, layer", [("nf4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_a_trial_trains_on_a_quantized_copy_of_the_base(
    tiny_wide_llama_dir: Path, tiny_lm_data: dict[str, Path], quantization: str, layer: str
) -> None:
    data = prepare_lm(tiny_wide_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    runner = lm_runner(tiny_wide_llama_dir, data, max_steps=3, metric="token_accuracy")
    result = runner.run(TrialJob(0, "lora", LM_LORA, 1e-2, None, quantization=quantization))
    assert result.status == "COMPLETE", result.error
    assert result.quantization == quantization and result.steps == 3
    assert result.peak_memory_mb is not None
    base = runner.source._models[quantization]
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == layer
    assert type(base.lm_head).__name__ == "Linear"  # the head stays in full precision
    # the full-precision base is a separate copy, loaded only when a trial asks for it
    assert "none" not in runner.source._models


def test_quantization_as_a_searched_dimension() -> None:
    from peftsearch.spaces import get_method

    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    info = _info()
    methods = {"lora": get_method("lora").options()}
    for _ in range(12):
        choice = sample_choice(study.ask(), methods, info, ("none", "nf4"))
        seen.add(choice.quantization)
        assert choice.summary["base"] == choice.quantization
    assert seen == {"none", "nf4"}
    one = sample_choice(study.ask(), methods, info, ("int8",))
    assert one.quantization == "int8" and "base" not in one.summary


def test_the_card_loads_the_base_quantized_as_the_search_did() -> None:
    row = {
        "trial": 3,
        "method": "lora",
        "params": "rank 4",
        "lr": 1e-3,
        "accuracy": 0.5,
        "metric": "exact_match",
        "eval_rows": 10,
        "trainable_params": 10,
        "trainable_pct": 0.1,
        "cost_usd": 0.01,
        "device_seconds": 3.0,
    }
    card = model_card(
        base=Checkpoint("some/llm"),
        row=row,
        data={},
        labels=[],
        study_name="s",
        peft_type="LORA",
        task="causal-lm",
        quantization="nf4",
    )
    assert "from transformers import BitsAndBytesConfig" in card
    assert "quantization_config=BitsAndBytesConfig(load_in_4bit=True" in card
    assert "bnb_4bit_quant_type='nf4'" in card


def _info():  # type: ignore[no-untyped-def]
    from peftsearch.spaces import ModelInfo

    return ModelInfo(
        model_type="llama",
        layers_pattern="layers",
        num_layers=2,
        block_linears=("self_attn.q_proj", "self_attn.v_proj"),
        attention=("self_attn.q_proj", "self_attn.v_proj"),
        mlp=(),
        query_value=("self_attn.q_proj", "self_attn.v_proj"),
        key_value=(),
        total_params=1000,
        decoder_only=True,
        task_type="CAUSAL_LM",
    )


def test_a_merge_into_the_dequantized_base_computes_what_the_adapter_did(
    tiny_wide_llama_dir: Path, tmp_path: Path
) -> None:
    """De-quantized weights read off the layers themselves: the merged float32 model
    gives the logits of the adapter on the quantized base, up to the rounding of the
    inputs that bitsandbytes' 4-bit CPU kernel does (to its bf16 storage dtype)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftsearch.trials.model import dequantized, load_pretrained

    checkpoint = Checkpoint(str(tiny_wide_llama_dir))
    quantized = load_pretrained(AutoModelForCausalLM, checkpoint, "nf4")
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(quantized, config)
    adapted.save_pretrained(tmp_path / "adapter")
    tokens = torch.randint(4, 20, (2, 7))
    with torch.no_grad():
        expected = adapted(input_ids=tokens).logits
    from peft import PeftModel

    base = dequantized(load_pretrained(AutoModelForCausalLM, checkpoint, "nf4"))
    assert type(base.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    merged = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).merge_and_unload()
    with torch.no_grad():
        got = merged(input_ids=tokens).logits
    gap = float((got - expected).abs().max())
    assert gap < 0.01 * float(expected.abs().max()), gap


@pytest.fixture(scope="module")
def quantized_runner(tiny_wide_llama_dir: Path, tiny_lm_data: dict[str, Path]) -> object:
    data = prepare_lm(tiny_wide_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    return lm_runner(tiny_wide_llama_dir, data, max_steps=2, metric="token_accuracy")


def _method_names() -> list[str]:
    from peftsearch.spaces import method_names

    return method_names()


@pytest.mark.parametrize("method", _method_names())
def test_a_method_that_supports_a_4bit_base_trains_on_one(
    method: str, quantized_runner: object, tiny_wide_llama_dir: Path
) -> None:
    """The plug-in contract of ``supports_quantization``: a method that does not refuse a
    4-bit base trains on one (a refusal is what `validate` reports instead)."""
    from peftsearch.spaces import get_method, inspect_model
    from peftsearch.trials import TrialRunner

    assert isinstance(quantized_runner, TrialRunner)
    plugin = get_method(method)
    if plugin.supports_quantization("nf4") is not None:
        pytest.skip(f"{method} refuses a quantized base: {plugin.supports_quantization('nf4')}")
    info = inspect_model(quantized_runner.source.fresh_copy(), task_type="CAUSAL_LM")
    if plugin.supports(info) is not None:
        pytest.skip(f"{method} cannot run on this model: {plugin.supports(info)}")
    config = plugin.calibration_config(info)
    result = quantized_runner.run(TrialJob(0, method, config, 1e-3, None, quantization="nf4"))
    assert result.status == "COMPLETE", result.error
