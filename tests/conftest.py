"""Shared fixtures: a tiny BERT built from config (no downloads) and small labelled data."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak"]
FILLER = ["the", "movie", "was", "plot", "actors", "really", "quite", "film", "story", "a"]


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose label is carried by one sentiment word among fillers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with hidden size 32 and a word-level vocab, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *POSITIVE, *NEGATIVE]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    out = {}
    for split, n, seed in (("train", 160, 1), ("eval", 48, 2)):
        path = folder / f"{split}.csv"
        lines = ["text,label"] + [f"{t},{y}" for t, y in sentiment_rows(n, seed)]
        path.write_text("\n".join(lines) + "\n")
        out[split] = path
    return out


def tiny_config(model_dir: Path, data: dict[str, Path], out: Path, **sections: Any) -> dict[str, Any]:
    """A complete config dict for the tiny model; ``sections`` override whole sections."""
    config: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 16},
        "search": {"study_name": "tiny", "n_trials": 3, "seed": 0},
        "space": {"methods": ["lora", "ia3", "prompt_tuning"]},
        "training": {"max_steps": 6, "batch_size": 8, "eval_batch_size": 32, "device": "cpu"},
        "output_dir": str(out),
    }
    config.update(sections)
    return config
