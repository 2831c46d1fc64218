"""Deployment profiles: the space a target leaves, what ``validate`` says it removes,
and the check of a saved adapter against the profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from helpers import LM_LORA, tiny_config
from typer.testing import CliRunner

from peftsearch.config import parse_config
from peftsearch.errors import UserError
from peftsearch.pipelines.cli import app
from peftsearch.spaces import sample_choice
from peftsearch.spaces._deployment import check_adapter


def lm_config(model: Path, data: dict[str, Path], out: Path, **deployment: Any) -> dict:
    config = tiny_config(model, data, out)
    config["model"]["task"] = "causal-lm"
    config["space"] = {
        "methods": ["lora", "dora", "ia3", "prompt_tuning", "bottleneck_adapter"],
        "lora": {"rank": [4, 8, 16, 32], "init_lora_weights": [True, "pissa"]},
    }
    config["deployment"] = deployment
    return config


def test_vllm_keeps_plain_lora_up_to_its_rank_and_says_what_it_removed(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    config = parse_config(
        lm_config(tiny_llama_dir, tiny_lm_data, tmp_path, target="vllm", max_lora_rank=16)
    )
    methods, removals = config.constrained_space()
    assert list(methods) == ["lora"]
    assert methods["lora"].rank == [4, 8, 16]
    # PiSSA's export doubles the rank: with 16 still searched it would not fit
    assert methods["lora"].init_lora_weights == [True]
    lines = [r.line() for r in removals]
    assert any(
        "space.methods: removes dora, ia3, prompt_tuning, bottleneck_adapter" in line
        for line in lines
    )
    assert any("space.lora.rank: removes 32 (above max_lora_rank 16)" in line for line in lines)
    assert any("space.lora.init_lora_weights: removes pissa" in line for line in lines)

    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump(
            lm_config(tiny_llama_dir, tiny_lm_data, tmp_path, target="vllm", max_lora_rank=16)
        )
    )
    checked = CliRunner().invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "Methods: lora." in checked.output
    assert "Deployment to vllm (max_lora_rank 16) removes from the space:" in checked.output
    assert "space.lora.rank: removes 32" in checked.output


def test_sampling_under_a_profile_never_draws_what_it_removed(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    from peftsearch.pipelines.builders import build_data, build_model_info

    config = parse_config(
        lm_config(tiny_llama_dir, tiny_lm_data, tmp_path, target="vllm", max_lora_rank=8)
    )
    info, _ = build_model_info(config, build_data(config).label_names)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        choice = sample_choice(study.ask(), config.method_options(), info)
        assert check_adapter("vllm", choice.peft_config, choice.method, 8) is None
        assert choice.peft_config["r"] <= 8 and not choice.peft_config["use_dora"]


def test_merge_keeps_the_mergeable_methods(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    config = parse_config(lm_config(tiny_llama_dir, tiny_lm_data, tmp_path, merge=True))
    methods, removals = config.constrained_space()
    assert list(methods) == ["lora", "dora", "ia3"]
    assert "prompt_tuning, bottleneck_adapter" in removals[0].what


def test_a_profile_that_leaves_nothing_is_one_clear_error(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(UserError) as error:
        parse_config(
            {**tiny_config(tiny_model_dir, tiny_data, tmp_path), "deployment": {"target": "vllm"}}
        )
    assert "deployment" in str(error.value) and "new head" in str(error.value)
    with pytest.raises(UserError, match="max_lora_rank"):
        parse_config(
            {**tiny_config(tiny_model_dir, tiny_data, tmp_path), "deployment": {"max_lora_rank": 8}}
        )


def saved_config(model_dir: Path, config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The adapter_config.json peft writes for ``config`` on the tiny LLaMA."""
    import json

    from peft import get_peft_config, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model_dir)), get_peft_config(dict(config))
    )
    model.save_pretrained(str(tmp_path / "adapter"))
    return json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"r": 32, "lora_alpha": 64}, "rank 32 is above max_lora_rank 16"),
        ({"use_dora": True}, "vLLM does not serve DoRA"),
        ({"modules_to_save": ["lm_head"]}, "vLLM serves no modules_to_save"),
        ({"r": 16, "init_lora_weights": "olora"}, "rank 32 is above max_lora_rank 16"),
    ],
    ids=["fits", "rank", "dora", "modules_to_save", "olora-doubles"],
)
def test_a_saved_adapter_is_checked_against_vllm(
    tiny_llama_dir: Path, tmp_path: Path, changes: dict[str, Any], reason: str | None
) -> None:
    config = saved_config(tiny_llama_dir, {**LM_LORA, **changes}, tmp_path)
    found = check_adapter("vllm", config, "lora", 16)
    assert found == reason if reason is None else reason in str(found)
    ia3 = {
        "peft_type": "IA3",
        "task_type": "CAUSAL_LM",
        "target_modules": ["k_proj"],
        "feedforward_modules": [],
    }
    assert "LoRA adapters only; this is IA3" in str(check_adapter("vllm", ia3, "ia3"))
    # EVA moves rank between layers: a config not yet trained may reach 2r; its saved
    # adapter says exactly (rank_pattern)
    eva = {**LM_LORA, "r": 16, "init_lora_weights": "eva"}
    assert "rank 32 is above" in str(check_adapter("vllm", eva, "lora", 16))
    assert check_adapter("vllm", {**eva, "rank_pattern": {"q_proj": 12}}, "lora", 16) is None
