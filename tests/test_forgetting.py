"""Forgetting on a tiny LLaMA: 0 for an adapter that changed nothing, a clear rise for
one trained to another distribution, measured on the base model's own text or on
``evaluation.reference_data``; recorded per trial and 0 for the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import LM_LORA, lm_runner, prepare_lm

from peftsearch.trials import TrialJob
from peftsearch.trials.forgetting import NEUTRAL_PROMPTS, forgetting_of


def test_an_unchanged_adapter_forgets_nothing_and_training_raises_it(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path]
) -> None:
    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    runner = lm_runner(tiny_llama_dir, data, metric="exact_match")
    # learning rate 0: LoRA's B stays at its zero init, the model is the base model
    unchanged = runner.run(TrialJob(0, "lora", LM_LORA, 0.0, None))
    trained = runner.run(TrialJob(1, "lora", LM_LORA, 1e-1, None))
    assert unchanged.status == trained.status == "COMPLETE", (unchanged.error, trained.error)
    assert unchanged.forgetting == 0.0
    assert unchanged.reference_seconds > 0 and trained.reference_seconds == 0  # once a worker
    assert trained.forgetting is not None and trained.forgetting_se is not None
    assert trained.forgetting > 3 * trained.forgetting_se > 0  # the "opposite of" task moved it
    assert 0 < trained.forgetting_seconds < trained.device_seconds
    # the reference is the base's own greedy text, one passage a prompt
    reference = runner._references["none"]
    assert len(reference.sequences) == len(NEUTRAL_PROMPTS)


def test_reference_data_replaces_the_generated_text(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    from peftsearch.trials.data import read_reference
    from peftsearch.trials.model import Checkpoint, load_tokenizer

    text = tmp_path / "reference.txt"
    text.write_text("the movie was good\n\nthe story was dull and boring\nfun film\n")
    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    data.reference = read_reference(text, load_tokenizer(Checkpoint(str(tiny_llama_dir))), 16)
    assert len(data.reference) == 3  # blank lines are not passages
    runner = lm_runner(tiny_llama_dir, data, metric="exact_match")
    result = runner.run(TrialJob(0, "lora", LM_LORA, 1e-1, None))
    assert result.status == "COMPLETE", result.error
    assert runner._references["none"].sequences == data.reference
    assert result.forgetting is not None


def test_forgetting_is_the_mean_rise_per_passage() -> None:
    assert forgetting_of([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]) == (2.0, pytest.approx(1 / 3**0.5))
    assert forgetting_of([1.5], [1.0]) == (0.5, None)
