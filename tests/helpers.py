"""Helpers shared by the tests (importable; fixtures live in conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak"]
# A small LoRA on the tiny BERT, for tests that run single trials.
LORA = {
    "peft_type": "LORA",
    "task_type": "SEQ_CLS",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["query", "value"],
}
FILLER = ["the", "movie", "was", "plot", "actors", "really", "quite", "film", "story", "a"]


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose label is carried by one sentiment word among fillers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = [*rng.sample(FILLER, 5), rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def tiny_config(
    model_dir: Path, data: dict[str, Path], out: Path, **sections: Any
) -> dict[str, Any]:
    """A complete config dict for the tiny model; ``sections`` override whole sections."""
    config: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 16},
        "search": {"study_name": "tiny", "n_trials": 3, "seed": 0},
        "space": {"methods": ["lora", "ia3", "prompt_tuning"]},
        "resources": {"use_ray": False},
        "training": {"max_steps": 6, "batch_size": 8, "eval_batch_size": 32, "device": "cpu"},
        "output_dir": str(out),
    }
    config.update(sections)
    return config
