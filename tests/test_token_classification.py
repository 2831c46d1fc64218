"""Token classification, the third task: CoNLL and JSONL data, sub-token alignment, entity
F1 by seqeval, the all-O baseline, and a search that recommends and exports."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from helpers import FILLER, NEGATIVE, POSITIVE, prepare, run_card_code, task_scores

from peftsearch.errors import UserError
from peftsearch.trials.tasks import get_task
from peftsearch.trials.tasks.token_classification import (
    bootstrap_f1_error,
    orphan_inside,
    score_tags,
)

TASK = "token-classification"


def tagged_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Fillers tagged O; a sentiment word is an entity (B-POS / B-NEG), and "great fun"
    or "awful dull" a two-word one."""
    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        words = [(w, "O") for w in rng.sample(FILLER, 4)]
        kind, pool = ("POS", POSITIVE) if i % 2 == 0 else ("NEG", NEGATIVE)
        entity = [(rng.choice(pool), f"B-{kind}")]
        if i % 3 == 0:
            entity.append((rng.choice(pool), f"I-{kind}"))
        at = rng.randrange(len(words) + 1)
        sentences.append(words[:at] + entity + words[at:])
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    blocks = ["\n".join(f"{word} {tag}" for word, tag in s) for s in sentences]
    path.write_text("-DOCSTART- O\n\n" + "\n\n".join(blocks) + "\n")
    return path


def write_jsonl(path: Path, sentences: list[list[tuple[str, str]]], **names: str) -> Path:
    tokens, tags = names.get("tokens", "tokens"), names.get("tags", "tags")
    lines = [json.dumps({tokens: [w for w, _ in s], tags: [t for _, t in s]}) for s in sentences]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def conll(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("conll")
    return {
        "train": write_conll(folder / "train.conll", tagged_sentences(96, 1)),
        "eval": write_conll(folder / "eval.conll", tagged_sentences(32, 2)),
    }


def test_entity_f1_is_seqevals_on_a_hand_computed_case() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    guess = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold entities: PER, LOC, ORG; predicted: PER, ORG, LOC (a wrong one): 2 right
    scores = score_tags(gold, guess, "entity_f1")
    assert scores["entity_precision"] == pytest.approx(2 / 3)
    assert scores["entity_recall"] == pytest.approx(2 / 3)
    assert scores["entity_f1"] == pytest.approx(2 / 3) == scores["score"]
    assert scores["token_accuracy"] == pytest.approx(4 / 6)
    # a wrong boundary is a wrong entity: B-PER I-PER vs B-PER O
    half = score_tags([["B-PER", "I-PER"]], [["B-PER", "O"]], "entity_f1")
    assert half["entity_f1"] == 0.0 and half["token_accuracy"] == 0.5
    assert score_tags(gold, guess, "token_accuracy")["score"] == pytest.approx(4 / 6)


def test_an_inside_tag_with_no_begin_starts_an_entity_as_seqeval_reads_it() -> None:
    assert orphan_inside(["O", "I-PER", "I-PER"]) == "I-PER after O"
    assert orphan_inside(["B-PER", "I-PER", "O"]) is None
    assert orphan_inside(["B-LOC", "I-PER"]) == "I-PER after B-LOC"
    same = score_tags([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], "entity_f1")
    assert same["entity_f1"] == 1.0


def test_the_f1_error_is_a_bootstrap_over_sentences() -> None:
    assert bootstrap_f1_error([(1, 1, 1)]) == 0.0
    steady = bootstrap_f1_error([(1, 1, 1)] * 50)
    mixed = bootstrap_f1_error([(1, 1, 1), (0, 1, 1)] * 25)
    assert steady == 0.0 and 0.02 < mixed < 0.2


def test_each_words_tag_sits_on_its_first_sub_token(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "play", "##ing", "ball", "bob"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    train = write_jsonl(tmp_path / "t.jsonl", [[("bob", "B-PER"), ("playing", "O")]] * 4)
    data = prepare(tmp_path, TASK, tokenizer=tokenizer, train=train, eval=train, max_length=16)
    row = data.train[0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"]) == [
        "[CLS]",
        "bob",
        "play",
        "##ing",
        "[SEP]",
    ]
    names = data.label_names
    assert names[0] == "O" and set(names) == {"O", "B-PER"}
    assert row["labels"] == [-100, names.index("B-PER"), names.index("O"), -100, -100]


def test_conll_and_jsonl_give_the_same_data(
    tiny_model_dir: Path, conll: dict[str, Path], tmp_path: Path
) -> None:
    sentences = tagged_sentences(96, 1)
    jsonl = write_jsonl(tmp_path / "train.jsonl", sentences, tokens="words", tags="ner")
    from_conll = prepare(tiny_model_dir, TASK, train=conll["train"], eval=conll["eval"])
    from_jsonl = prepare(
        tiny_model_dir,
        TASK,
        train=jsonl,
        eval=conll["eval"],
        tokens_column="words",
        tags_column="ner",
    )
    assert (
        from_conll.label_names
        == from_jsonl.label_names
        == ["O", "B-NEG", "I-NEG", "B-POS", "I-POS"]
    )
    assert from_conll.train["labels"] == from_jsonl.train["labels"]
    assert from_conll.stats["train_rows"] == 96 and from_conll.stats["eval_rows"] == 32


@pytest.mark.parametrize(
    ("sentence", "message", "key"),
    [
        (
            {"tokens": ["good", "film"], "tags": ["B-POS"]},
            "row 1 of data.train has 2 words and 1 tags; give exactly one tag per word",
            "data.tags_column",
        ),
        (
            {"tokens": [], "tags": []},
            "row 1 of data.train is an empty sentence (no words); drop it",
            "data.tokens_column",
        ),
        (
            {"tokens": ["good"], "tags": ["POS"]},
            "tag 'POS' in row 1 of data.train is not O, B-<type> or I-<type>; write the "
            "tags in the BIO (IOB2) scheme",
            "data.tags_column",
        ),
        (
            {"tokens": "good film", "tags": ["B-POS", "O"]},
            "row 1 of data.train holds 'good film', not a list",
            "data.tokens_column",
        ),
    ],
)
def test_bad_sentences_name_the_key(
    tiny_model_dir: Path, tmp_path: Path, sentence: dict[str, Any], message: str, key: str
) -> None:
    good = {"tokens": ["good", "film"], "tags": ["B-POS", "O"]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(sentence) + "\n")
    with pytest.raises(UserError) as error:
        prepare(tiny_model_dir, TASK, train=path, eval=path)
    assert error.value.where == key
    assert str(error.value) == f"{key}: {message}"


def test_a_conll_line_without_a_tag_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.conll"
    path.write_text("good B-POS\nfilm\n")
    with pytest.raises(UserError, match=r"line 2 of .* has a word and no tag \('film'\)"):
        prepare(tiny_model_dir, TASK, train=path, eval=path)


def test_an_orphan_inside_tag_is_said_once_and_read_as_a_start(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = [[("good", "B-POS"), ("film", "O")]] * 3 + [[("the", "O"), ("good", "I-POS")]]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    clean = write_jsonl(tmp_path / "e.jsonl", rows[:3])
    data = prepare(tiny_model_dir, TASK, train=path, eval=clean)
    line = get_task(TASK).describe_data(data, "entity_f1")
    assert (
        "data.tags_column: 1 sentence(s) have an I- tag with no B- before it (first: row 3 "
        "of data.train, I-POS after O); each is read as the start of an entity"
    ) in line


def test_the_all_outside_baseline_finds_no_entity(
    tiny_model_dir: Path, conll: dict[str, Path]
) -> None:
    data = prepare(tiny_model_dir, TASK, train=conll["train"], eval=conll["eval"])
    baseline = get_task(TASK).baselines(data, "entity_f1")["all_outside"]
    assert baseline["accuracy"] == baseline["entity_f1"] == 0.0
    words = sum(1 for row in data.eval["labels"] for i in row if i != -100)
    outside = sum(1 for row in data.eval["labels"] for i in row if i == 0)
    assert baseline["token_accuracy"] == pytest.approx(outside / words)


@pytest.mark.parametrize("form", ["conll", "jsonl"])
def test_a_tagging_search_recommends_and_exports(
    tiny_tagger_dir: Path, conll: dict[str, Path], tmp_path: Path, form: str
) -> None:
    """End to end on CoNLL files and on JSONL: the rows carry seqeval's entity F1, the
    baseline tags everything O, and an export reloads to the same entity F1 through its
    card's code."""
    import peftsearch

    files = conll
    if form == "jsonl":
        files = {
            split: write_jsonl(tmp_path / f"{split}.jsonl", tagged_sentences(n, seed))
            for split, n, seed in (("train", 96, 1), ("eval", 32, 2))
        }
    config = {
        "model": {"name_or_path": str(tiny_tagger_dir), "task": TASK},
        "data": {"train": str(files["train"]), "eval": str(files["eval"]), "max_length": 16},
        "search": {"study_name": "ner", "n_trials": 2, "seed": 0},
        "space": {"methods": ["lora", "ia3"], "lora": {"lr": {"low": 0.02, "high": 0.05}}},
        "resources": {"use_ray": False},
        "training": {"max_steps": 40, "batch_size": 8, "eval_batch_size": 32, "device": "cpu"},
        "output_dir": str(tmp_path / "out"),
    }
    result = peftsearch.run(config, quiet=True)
    rows = result.trials
    assert set(rows["status"]) == {"COMPLETE"}
    assert set(rows["metric"]) == {"entity_f1"} and set(rows["task"]) == {TASK}
    assert {"entity_precision", "entity_recall", "token_accuracy"} <= set(rows.columns)
    assert "macro_f1" not in rows.columns and "perplexity" not in rows.columns
    best = rows.loc[rows["accuracy"].idxmax()]
    assert best["accuracy"] > 0.2, "the tiny tagger should find entities"
    assert best["accuracy_se"] > 0

    saved = json.loads((result.study_dir / "pareto.json").read_text())
    assert saved["metric"] == "entity_f1"
    assert saved["summary"]["baseline"]["all_outside"]["accuracy"] == 0.0

    advice = result.recommend()
    assert advice.met and "entity F1" in advice.text and "eval sentences" in advice.text

    out = result.export(tmp_path / "adapter", pick="recommended")
    card = (out / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "entity F1 on 32 eval" in card
    namespace = run_card_code(out)
    model = namespace["model"]
    from peftsearch.pipelines.builders import build_data

    again = task_scores(model, build_data(result.config), "entity_f1")
    picked = rows.loc[advice.trial]
    # the exported adapter is the search's own run (confirmation re-ran its config with
    # other seeds: ``accuracy`` is their mean when it did)
    assert again["score"] == pytest.approx(picked["search_accuracy"], abs=1e-9)
    # and ``peftsearch evaluate`` scores it so on the same file, tags mapped to its head
    review = peftsearch.evaluate(out, files["eval"])
    assert review["score"] == pytest.approx(picked["search_accuracy"], abs=1e-9)
    assert review["metric"] == "entity_f1" and not review["beyond_noise"]
    assert review["score_se"] == pytest.approx(picked["accuracy_se"])


def test_a_byte_level_tokenizer_reads_words_with_a_prefix_space(tmp_path: Path) -> None:
    """GPT-2/RoBERTa-style tokenizers refuse words already split unless built with
    ``add_prefix_space``: the task reloads them so, and the tags still sit on each word's
    first sub-token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    from peftsearch.trials.model import Checkpoint, load_tokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the good film", "a bad plot"] * 20, vocab_size=270, min_frequency=1)
    GPT2TokenizerFast(tokenizer_object=bpe, eos_token="the").save_pretrained(tmp_path / "bpe")
    tokenizer = load_tokenizer(Checkpoint(str(tmp_path / "bpe")))
    assert tokenizer.add_prefix_space is False
    rows = [[("the", "O"), ("goodish", "B-POS"), ("film", "O")]] * 4
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    data = prepare(tmp_path, TASK, tokenizer=tokenizer, train=path, eval=path, max_length=32)
    labels = [i for i in data.train[0]["labels"] if i != -100]
    assert [data.label_names[i] for i in labels] == ["O", "B-POS", "O"]
    assert len(data.train[0]["labels"]) > 3  # "goodish" split into sub-tokens, one tagged
