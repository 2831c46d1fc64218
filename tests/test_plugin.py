"""Adding a method is one file: a throwaway plug-in goes through search, recommend, export."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tiny_config

import peftsearch
from peftsearch.spaces import method_names, unregister


@pytest.fixture
def throwaway() -> Iterator[str]:
    module = importlib.import_module("throwaway_method")
    try:
        yield module.NAME
    finally:
        unregister(module.NAME)
        sys.modules.pop("throwaway_method", None)


def test_a_new_method_in_one_file(
    throwaway: str, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    assert throwaway in method_names()
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["search"]["n_trials"] = 2
    config["space"] = {"methods": [throwaway], throwaway: {"rank": [2, 4]}}
    # A budget makes the cost calibration train the new method's own typical config.
    config["budget"] = {"max_trials": 2}
    result = peftsearch.run(config, quiet=True)

    trials = result.trials
    assert list(trials["method"]) == [throwaway] * 2
    assert list(trials["status"]) == ["COMPLETE"] * 2
    assert all("MLP-only LoRA rank" in d for d in trials["description"])

    advice = result.recommend()
    assert advice.met and "MLP-only LoRA rank" in advice.text
    assert "on the feed-forward layers only" in advice.text

    out = result.export(tmp_path / "adapter", pick="recommended", merge=True)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert all("output.dense" in m or "intermediate" in m for m in adapter["target_modules"])
    assert (out / "merged" / "model.safetensors").is_file()
    assert "MLP-only LoRA rank" in (out / "README.md").read_text()
