"""Token classification (named entities, chunks): a sentence's words in, one tag per word
out; scored by entity-level F1 over BIO/IOB2 spans, computed with seqeval.

Data: JSONL/Parquet/... rows holding a list of words and a list of tags
(``data.tokens_column``, ``data.tags_column``), or CoNLL-style text files (``.conll``,
``.txt``: one ``word ... tag`` line per word, the first column the word and the last
the tag, a blank line between sentences). Each word's tag is carried by its first
sub-token; the others are left out of the loss and the scores.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError
from peftsearch.trials.data import PreparedData, hold_out, missing_column, read_table
from peftsearch.trials.tasks._registry import (
    CardFacts,
    DataOptions,
    EvalContext,
    Metric,
    TaskBase,
    head_loading_code,
    register_task,
)

if TYPE_CHECKING:
    import datasets
    import pandas as pd
    from torch import nn

IGNORE_INDEX = -100  # sub-tokens after a word's first, and special tokens
CONLL_SUFFIXES = (".conll", ".txt")
TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
BOOTSTRAP_DRAWS = 200


class TokenClassificationData(DataOptions):
    """The ``data.*`` keys a tagger reads (CoNLL files need neither)."""

    tokens_column: str = "tokens"
    tags_column: str = "tags"


def read_conll(path: str, key: str) -> pd.DataFrame:
    """Sentences of a CoNLL-style file as rows of (tokens, tags)."""
    import pandas as pd

    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if len(parts) < 2:
                raise UserError(
                    f"line {number} of {path} has a word and no tag ({line.strip()!r}); "
                    "write 'word tag' per line, a blank line between sentences",
                    where=key,
                )
            words.append(parts[0])
            tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    return pd.DataFrame({"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]})


def _sentences(
    frame: pd.DataFrame, data: Any, key: str, conll: bool
) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per row, checked: as many tags as words, no empty sentence, tags
    in the BIO scheme."""
    tokens_column = "tokens" if conll else data.tokens_column
    tags_column = "tags" if conll else data.tags_column
    for column, where in ((tokens_column, "data.tokens_column"), (tags_column, "data.tags_column")):
        error = missing_column(frame, column, key, where)
        if error:
            raise error
    rows = []
    for number, (words, tags) in enumerate(
        zip(frame[tokens_column].tolist(), frame[tags_column].tolist(), strict=True)
    ):
        words = [str(w) for w in _as_list(words, number, key, "data.tokens_column")]
        tags = [str(t) for t in _as_list(tags, number, key, "data.tags_column")]
        if not words:
            raise UserError(
                f"row {number} of {key} is an empty sentence (no words); drop it",
                where="data.tokens_column",
            )
        if len(tags) != len(words):
            raise UserError(
                f"row {number} of {key} has {len(words)} words and {len(tags)} tags; give "
                "exactly one tag per word",
                where="data.tags_column",
            )
        for tag in tags:
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise UserError(
                    f"tag {tag!r} in row {number} of {key} is not O, B-<type> or "
                    "I-<type>; write the tags in the BIO (IOB2) scheme",
                    where="data.tags_column",
                )
        rows.append((words, tags))
    return rows


def _as_list(value: Any, number: int, key: str, where: str) -> list[Any]:
    if isinstance(value, str) or not hasattr(value, "__len__"):
        raise UserError(f"row {number} of {key} holds {value!r}, not a list", where=where)
    return list(value)


def for_words(tokenizer: Any) -> Any:
    """A tokenizer that takes words already split: byte-level BPE tokenizers (RoBERTa,
    GPT-2, Longformer) refuse them unless built with ``add_prefix_space``, which
    marks each word as following a space, as it does in running text. Others (WordPiece,
    SentencePiece) are used as they are."""
    try:
        tokenizer([["a", "b"]], is_split_into_words=True)
        return tokenizer
    except Exception as error:
        if "add_prefix_space" not in str(error):
            raise
    try:
        words = type(tokenizer).from_pretrained(tokenizer.name_or_path, add_prefix_space=True)
    except Exception as error:
        raise UserError(
            f"this tokenizer needs add_prefix_space=True to read words already split, and "
            f"reloading it so failed: {error}",
            where="model.name_or_path",
        ) from None
    if words.pad_token is None:  # the pad token load_tokenizer gave it (decoders ship none)
        words.pad_token = tokenizer.pad_token
    return words


def orphan_inside(tags: list[str]) -> str | None:
    """The first ``I-X`` that follows neither ``B-X`` nor ``I-X``, or None."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return f"{tag} after {previous}"
        previous = tag
    return None


def entity_counts(gold: list[str], predicted: list[str]) -> tuple[int, int, int]:
    """(entities found right, entities predicted, entities in gold) of one sentence, in
    seqeval's default reading of the spans."""
    from seqeval.metrics.sequence_labeling import get_entities

    truth, guess = set(get_entities(gold)), set(get_entities(predicted))
    return len(truth & guess), len(guess), len(truth)


def bootstrap_f1_error(counts: list[tuple[int, int, int]], seed: int = 0) -> float:
    """Standard error of micro entity F1 over sentences, by resampling sentences: F1 is no
    share of rows, so the binomial error does not apply."""
    import statistics

    if len(counts) < 2:
        return 0.0
    rng = random.Random(seed)
    draws = []
    for _ in range(BOOTSTRAP_DRAWS):
        sample = [counts[rng.randrange(len(counts))] for _ in counts]
        right = sum(c[0] for c in sample)
        total = sum(c[1] + c[2] for c in sample)
        draws.append(2 * right / total if total else 0.0)
    return statistics.pstdev(draws)


class TokenClassificationTask(TaskBase):
    name = "token-classification"
    display_name = "token classification"
    pipeline_tag = "token-classification"
    unit = "sentences"
    peft_task_type = "TOKEN_CLS"
    metrics = (
        Metric(
            "entity_f1",
            "entity F1",
            "F1 of whole entities (BIO/IOB2 spans, type and boundaries right), by seqeval",
            share=False,
        ),
        Metric("token_accuracy", "token accuracy", "the share of words tagged right"),
    )
    columns = ("entity_precision", "entity_recall", "token_accuracy")
    data_options = TokenClassificationData
    file_suffixes = CONLL_SUFFIXES
    base_model_baseline = "no adapter: the base model with its own head"

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def prepare(self, data: Any, *, seed: int, tokenizer: Any) -> PreparedData:
        import datasets

        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                "token classification aligns tags to sub-tokens, which needs a fast "
                "tokenizer (tokenizer.json); this model has only a slow one",
                where="model.name_or_path",
            )
        tokenizer = for_words(tokenizer)
        notes: list[str] = []

        def read(split: str) -> datasets.Dataset:
            spec, key = getattr(data, split), f"data.{split}"
            conll = Path(spec).suffix.lower() in CONLL_SUFFIXES
            frame = read_conll(spec, key) if conll else read_table(data, split)
            rows = _sentences(frame, data, key, conll)
            for number, (_, tags) in enumerate(rows):
                orphan = orphan_inside(tags)
                if orphan:
                    notes.append(f"row {number} of {key}, {orphan}")
            return datasets.Dataset.from_dict(
                {"tokens": [w for w, _ in rows], "tags": [t for _, t in rows]}
            )

        train, eval = read("train"), read("eval") if data.eval is not None else None
        tags = {
            t for table in (train, eval) if table is not None for row in table["tags"] for t in row
        }
        names = ["O", *sorted(tags - {"O"}, key=lambda t: (t[2:], t[:2]))]
        train, eval = hold_out(
            train,
            eval,
            fraction=data.eval_fraction,
            seed=seed,
            max_train=data.max_train_samples,
            max_eval=data.max_eval_samples,
        )
        if len(train) < 2:
            raise UserError("fewer than 2 sentences to train on", where="data.train")
        if len(eval) == 0:
            raise UserError(
                "no evaluation sentences", where="data.eval" if data.eval else "data.eval_fraction"
            )
        ids = {name: i for i, name in enumerate(names)}
        stats = {"truncated_sentences": 0, "unseen_tags": 0}

        def encode(table: datasets.Dataset) -> datasets.Dataset:
            encoded = tokenizer(
                [list(words) for words in table["tokens"]],
                is_split_into_words=True,
                truncation=True,
                max_length=data.max_length,
            )
            labels = []
            for row, row_tags in enumerate(table["tags"]):
                word_ids = encoded.word_ids(row)
                aligned, previous = [], None
                for word in word_ids:
                    first = word is not None and word != previous
                    tag = row_tags[word] if first else None
                    if tag is not None and tag not in ids:
                        stats["unseen_tags"] += 1
                        tag = "O"
                    aligned.append(ids[tag] if tag is not None else IGNORE_INDEX)
                    previous = word
                kept = len({w for w in word_ids if w is not None})
                stats["truncated_sentences"] += kept < len(row_tags)
                labels.append(aligned)
            columns = {c: encoded[c] for c in TOKEN_COLUMNS if c in encoded}
            return datasets.Dataset.from_dict({**columns, "labels": labels})

        train_set, eval_set = encode(train), encode(eval)
        test_set = encode(read("test")) if data.test is not None else None
        return PreparedData(
            train=train_set,
            eval=eval_set,
            label_names=names,
            pad_token_id=int(tokenizer.pad_token_id),
            task=self.name,
            stats={
                "train_rows": len(train_set),
                "eval_rows": len(eval_set),
                **({"test_rows": len(test_set)} if test_set is not None else {}),
                **stats,
                "orphan_inside_tags": len(notes),
                "first_orphan": notes[0] if notes else None,
            },
            test=test_set,
        )

    def evaluate(
        self,
        model: nn.Module,
        table: datasets.Dataset,
        context: EvalContext,
        *,
        metric: str,
        rung: bool = False,
    ) -> dict[str, Any]:
        """Entity precision, recall and F1 (seqeval, its default conlleval-compatible
        reading of the spans) and token accuracy, on each word's first sub-token."""
        from peftsearch.trials.train import labelled_logits

        names = context.label_names
        gold_tags: list[list[str]] = []
        predicted_tags: list[list[str]] = []
        for gold, logits in labelled_logits(model, table, context):
            guess = logits[:, -gold.shape[1] :].argmax(-1)
            for row_gold, row_guess in zip(gold.tolist(), guess.tolist(), strict=True):
                kept = [
                    (g, p) for g, p in zip(row_gold, row_guess, strict=True) if g != IGNORE_INDEX
                ]
                gold_tags.append([names[g] for g, _ in kept])
                predicted_tags.append([names[p] for _, p in kept])
        return score_tags(gold_tags, predicted_tags, metric)

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]:
        """Tagging every word ``O``: no entity found, the majority of tags right."""
        names = data.label_names
        gold = [[names[i] for i in row if i != IGNORE_INDEX] for row in data.eval["labels"]]
        scores = score_tags(gold, [["O"] * len(row) for row in gold], metric)
        score = scores.pop("score")
        return {
            "all_outside": {
                "method": "no adapter: every word tagged O",
                **scores,
                "accuracy": score,  # the searched metric, as trial rows hold it
                "eval_rows": len(gold),
            }
        }

    def describe_data(self, data: PreparedData, metric: str) -> str:
        types = sorted({name[2:] for name in data.label_names if name != "O"})
        words = (
            f"{len(types)} entity types ({', '.join(types)}), scored by {self.metric(metric).label}"
        )
        stats = data.stats
        if stats.get("truncated_sentences"):
            words += (
                f"; {stats['truncated_sentences']} sentences cut at data.max_length (their "
                "last words are not scored)"
            )
        if stats.get("orphan_inside_tags"):
            words += (
                f"\ndata.tags_column: {stats['orphan_inside_tags']} sentence(s) have an I- tag "
                f"with no B- before it (first: {stats['first_orphan']}); each is read as the "
                "start of an entity, as conlleval and seqeval's default mode read it"
            )
        if stats.get("unseen_tags"):
            words += f"; {stats['unseen_tags']} test tags unseen in training, scored as O"
        return words

    def model_card(self, facts: CardFacts) -> str:
        data = facts.data
        types = sorted({name[2:] for name in facts.labels if name != "O"})
        files = (
            "CoNLL-style files"
            if Path(str(data.get("train"))).suffix.lower() in CONLL_SUFFIXES
            else f"tokens column `{data.get('tokens_column')}`, "
            f"tags column `{data.get('tags_column')}`"
        )
        kinds = f"{len(types)} entity types: {', '.join(types)}"
        return f"""**Task:** token classification into {len(facts.labels)} BIO tags ({kinds})

## Results on the evaluation set

| metric | value |
|---|---|
{facts.results}

## Data

- train: `{data.get("train")}`
- eval: `{data.get("eval") or f"{data.get('eval_fraction')} of train, held out"}`
- {files}; at most {data.get("max_length")} tokens per sentence
- each word's tag sits on its first sub-token

## Load it

{head_loading_code(facts, "AutoModelForTokenClassification")}"""


def score_tags(gold: list[list[str]], predicted: list[list[str]], metric: str) -> dict[str, Any]:
    """Entity precision/recall/F1 by seqeval, token accuracy, and the standard error of the
    searched metric (``score_error``)."""
    import warnings

    from seqeval.metrics import f1_score, precision_score, recall_score

    with warnings.catch_warnings():  # no predicted entity: seqeval warns, and scores 0
        warnings.simplefilter("ignore")
        scores = {
            "entity_f1": float(f1_score(gold, predicted)),
            "entity_precision": float(precision_score(gold, predicted)),
            "entity_recall": float(recall_score(gold, predicted)),
        }
    words = sum(len(row) for row in gold)
    right = sum(
        g == p for a, b in zip(gold, predicted, strict=True) for g, p in zip(a, b, strict=True)
    )
    scores["token_accuracy"] = right / max(1, words)
    score = scores[metric]
    if metric == "entity_f1":
        error = bootstrap_f1_error(
            [entity_counts(g, p) for g, p in zip(gold, predicted, strict=True)]
        )
    else:
        error = (score * (1 - score) / max(1, words)) ** 0.5
    return {**scores, "metric": metric, "score": score, "score_error": error}


register_task(TokenClassificationTask())
