"""Shared fixtures: a tiny BERT built from config (no downloads) and small labelled data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FILLER, NEGATIVE, POSITIVE, sentiment_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def save_tiny_bert(folder: Path, initializer_range: float, dropout: float = 0.1) -> Path:
    """A 2-layer BERT with hidden size 32 and a word-level vocab, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *POSITIVE, *NEGATIVE]
    # transformers 5 ignores vocab_file here; the vocab dict is what it reads.
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=initializer_range,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def peftsearch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One machine cache for the session (GGUF conversions: trials/gguf_cache.py), not the
    user's: the first SmolLM2 load converts, the later ones read the conversion."""
    folder = tmp_path_factory.mktemp("peftsearch-cache")
    os.environ["PEFTSEARCH_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT; a wider init than BERT's makes token identity reach [CLS] (and no
    dropout keeps six steps steady), so LoRA learns ``tiny_data`` within a few steps:
    accuracy 0.9 to 1.0 at learning rates 2e-2 to 6e-2, against 0.5 with no adapter."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), initializer_range=0.15, dropout=0.0)


@pytest.fixture(scope="session")
def tiny_tagger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with BERT's own init: the wide one drowns each position's own word,
    which a tagger reads."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-tagger"), initializer_range=0.02)


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


LM_WORDS = ["<pad>", "<unk>", "<s>", "</s>", "opposite", "of", *FILLER, *POSITIVE, *NEGATIVE]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LLaMA causal LM with a word-level tokenizer, saved like a hub model."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden_size=32)


@pytest.fixture(scope="session")
def tiny_wide_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaMA at hidden size 64: bitsandbytes' CPU 4-bit kernels quantize in
    blocks of 64 along a layer's inputs, so narrower layers cannot be 4-bit."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-wide-llama"), hidden_size=64)


def save_tiny_llama(folder: Path, hidden_size: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(LM_WORDS)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=words,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    ).save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(LM_WORDS),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prompt/response CSVs: "<two fillers> opposite of good" -> "bad", and so on."""
    import random

    folder = tmp_path_factory.mktemp("lm-data")
    rng = random.Random(0)
    pairs = [*zip(POSITIVE, NEGATIVE, strict=True), *zip(NEGATIVE, POSITIVE, strict=True)]
    out = {}
    for split, n in (("train", 96), ("eval", 24)):
        lines = ["prompt,response"]
        for i in range(n):
            word, opposite = pairs[i % len(pairs)]
            lines.append(f"{' '.join(rng.sample(FILLER, 2))} opposite of {word},{opposite}")
        out[split] = folder / f"{split}.csv"
        out[split].write_text("\n".join(lines) + "\n")
    return out
