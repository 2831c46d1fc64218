"""Adding a task is one file: a throwaway plug-in goes through search, recommend, export."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FILLER, NEGATIVE, POSITIVE, run_card_code

import peftsearch
from peftsearch.errors import UserError
from peftsearch.trials.tasks import task_names, unregister_task


@pytest.fixture
def throwaway() -> Iterator[str]:
    module = importlib.import_module("throwaway_task")
    try:
        yield module.NAME
    finally:
        unregister_task(module.NAME)
        sys.modules.pop("throwaway_task", None)


def pairs(path: Path, n: int) -> Path:
    """Two words; the label says whether they agree in sentiment. Agreeing pairs are two
    positive words and the others a negative then a positive one, so the first word tells
    (the tiny BERT learns that within a few steps; comparing the two it does not)."""
    import random

    rng = random.Random(n)
    lines = ["first,second,pair_label"]
    for i in range(n):
        same = i % 2 == 0
        a = rng.choice(POSITIVE if same else NEGATIVE)
        lines.append(
            f"{rng.choice(FILLER)} {a} {a},{rng.choice(POSITIVE)},{'same' if same else 'differ'}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_new_task_in_one_file(throwaway: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert throwaway in task_names()
    config = {
        "model": {"name_or_path": str(tiny_model_dir), "task": throwaway},
        "data": {
            "train": str(pairs(tmp_path / "train.csv", 96)),
            "eval": str(pairs(tmp_path / "eval.csv", 32)),
            "max_length": 16,
        },
        "search": {"study_name": "pairs", "n_trials": 2, "seed": 0},
        "space": {"methods": ["lora"], "lora": {"lr": {"low": 2e-2, "high": 6e-2}}},
        "resources": {"use_ray": False},
        "training": {"max_steps": 12, "batch_size": 8, "device": "cpu"},
        "output_dir": str(tmp_path / "out"),
    }
    result = peftsearch.run(config, quiet=True)
    rows = result.trials
    assert list(rows["status"]) == ["COMPLETE"] * 2
    assert set(rows["metric"]) == {"pair_accuracy"}
    saved = json.loads((result.study_dir / "pareto.json").read_text())
    # the plug-in's model-free baseline; the tiny BERT has no head of the task's, so the
    # base model is not scored (its new head is random)
    assert set(saved["summary"]["baseline"]) == {"majority_pair"}

    advice = result.recommend()
    assert advice.met and "pair accuracy" in advice.text and "eval pairs" in advice.text

    out = result.export(tmp_path / "adapter", pick="recommended")
    assert "pair accuracy on 32 eval pairs" in (out / "README.md").read_text()
    assert "model" in run_card_code(out)

    # its keys are its own: another task refuses them
    config["model"]["task"] = "sequence-classification"
    config["data"]["first_column"] = "premise"
    refused = r"data\.first_column: read by model\.task pair-classification only"
    with pytest.raises(UserError, match=refused):
        peftsearch.run(config, quiet=True)
