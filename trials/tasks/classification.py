"""Text classification: a text in, one label out; scored by accuracy or macro-F1."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

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

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class ClassificationData(DataOptions):
    """The ``data.*`` keys a classifier reads."""

    text_column: str = "text"
    label_column: str = "label"
    labels: list[str | int] | None = Field(
        None, description="keep only rows with these labels, in this order"
    )

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("list at least two labels to classify between")
            if len({str(v) for v in value}) != len(value):
                raise ValueError("a label is listed twice")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> ClassificationData:
        if self.text_column == self.label_column:
            raise ValueError(
                f"text_column and label_column are both {self.text_column!r}; "
                "name two different columns"
            )
        return self


def classification_metrics(
    predictions: list[int], labels: list[int], num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean of per-class F1, so rare classes count)."""
    correct = sum(p == g for p, g in zip(predictions, labels, strict=True))
    f1s = []
    for c in range(num_labels):
        tp = sum(p == c and g == c for p, g in zip(predictions, labels, strict=True))
        fp = sum(p == c and g != c for p, g in zip(predictions, labels, strict=True))
        fn = sum(p != c and g == c for p, g in zip(predictions, labels, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": correct / len(labels), "macro_f1": sum(f1s) / num_labels}


def _clean(frame: pd.DataFrame, data: Any, key: str) -> tuple[pd.DataFrame, int]:
    for column, name in (
        (data.text_column, "data.text_column"),
        (data.label_column, "data.label_column"),
    ):
        error = missing_column(frame, column, key, name)
        if error:
            raise error
    before = len(frame)
    frame = frame[[data.text_column, data.label_column]].dropna()
    frame = frame[frame[data.text_column].astype(str).str.strip() != ""]
    return frame.reset_index(drop=True), before - len(frame)


def _label_names(frames: list[pd.DataFrame], column: str, wanted: list[Any] | None) -> list[str]:
    if wanted is not None:
        return [str(v) for v in wanted]
    values = {v for f in frames for v in f[column].tolist()}
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = sorted(values, key=str)
    return [str(v) for v in ordered]


class ClassificationTask(TaskBase):
    name = "sequence-classification"
    display_name = "text classification"
    pipeline_tag = "text-classification"
    default = True
    unit = "texts"
    peft_task_type = "SEQ_CLS"
    metrics = (
        Metric("accuracy", "accuracy", "the share of eval rows labelled right"),
        Metric(
            "macro_f1",
            "macro-F1",
            "the mean of per-class F1, so rare classes count as much as common ones",
        ),
    )
    columns = ("macro_f1",)
    data_options = ClassificationData
    base_model_baseline = "no adapter: the base model with its own head"

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def prepare(self, data: Any, *, seed: int, tokenizer: Any) -> PreparedData:
        """Load, clean, map labels, split (stratified), subsample and tokenize."""
        import datasets
        from datasets.fingerprint import Hasher

        train_frame, dropped = _clean(read_table(data, "train"), data, "data.train")
        frames = [train_frame]
        if data.eval is not None:
            eval_frame, dropped_eval = _clean(read_table(data, "eval"), data, "data.eval")
            dropped += dropped_eval
            frames.append(eval_frame)
        names = _label_names(frames, data.label_column, data.labels)
        if len(names) < 2:
            raise UserError(
                f"found {len(names)} label value(s); classification needs at least 2",
                where="data.label_column",
            )
        label_ids = {name: i for i, name in enumerate(names)}

        def known(frame: pd.DataFrame) -> pd.DataFrame:
            keys = frame[data.label_column].map(str)
            return frame.assign(label=keys.map(label_ids))[keys.isin(label_ids)]

        def to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
            table = datasets.Dataset.from_dict(
                {
                    "text": frame[data.text_column].astype(str).tolist(),
                    "label": frame["label"].astype(int).tolist(),
                }
            )
            return table.cast_column("label", datasets.ClassLabel(names=names))

        train_set = to_dataset(known(frames[0]))
        if len(train_set) < 2:
            raise UserError(
                "fewer than 2 usable rows after dropping empty ones", where="data.train"
            )
        eval_set = to_dataset(known(frames[1])) if data.eval is not None else None
        train_set, eval_set = hold_out(
            train_set,
            eval_set,
            fraction=data.eval_fraction,
            seed=seed,
            max_train=data.max_train_samples,
            max_eval=data.max_eval_samples,
            stratify="label",
        )
        if len(eval_set) == 0:
            where = "data.eval" if data.eval else "data.eval_fraction"
            raise UserError("no usable evaluation rows", where=where)

        max_length = data.max_length
        # what the map's result depends on, named: by default datasets hashes the
        # function with dill, tokenizer and all (about 1 s of the driver's start-up).
        # The data is in memory, so no cache file is ever read back by this name.
        tokenizer_key = (
            type(tokenizer).__name__,
            tokenizer.name_or_path,
            len(tokenizer),
            tokenizer.truncation_side,
        )

        def tokenize(table: datasets.Dataset) -> datasets.Dataset:
            key = (table._fingerprint, tokenizer_key, max_length)
            tokens = table.map(
                lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                batched=True,
                remove_columns=["text"],
                new_fingerprint=Hasher.hash(key),
            )
            keep = [c for c in (*TOKEN_COLUMNS, "label") if c in tokens.column_names]
            return tokens.select_columns(keep)

        stats = {"train_rows": len(train_set), "eval_rows": len(eval_set), "dropped_rows": dropped}
        test_set = None
        if data.test is not None:
            test_frame = known(_clean(read_table(data, "test"), data, "data.test")[0])
            if test_frame.empty:
                raise UserError("no test row has a label seen in training", where="data.test")
            test_set = tokenize(to_dataset(test_frame))
            stats["test_rows"] = len(test_set)
        return PreparedData(
            train=tokenize(train_set),
            eval=tokenize(eval_set),
            label_names=names,
            pad_token_id=int(tokenizer.pad_token_id),
            task=self.name,
            stats=stats,
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
        from peftsearch.trials.train import labelled_logits

        predictions: list[int] = []
        labels: list[int] = []
        for gold, logits in labelled_logits(model, table, context):
            predictions += logits.argmax(-1).tolist()
            labels += gold.tolist()
        scores: dict[str, Any] = classification_metrics(
            predictions, labels, len(context.label_names)
        )
        return {**scores, "metric": metric, "score": scores[metric]}

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]:
        """Always answering the most frequent training label."""
        gold = [int(label) for label in data.eval["label"]]
        majority = Counter(int(label) for label in data.train["label"]).most_common(1)[0][0]
        scores = classification_metrics([majority] * len(gold), gold, data.num_labels)
        return {
            "majority_class": {
                "method": f"no adapter: always '{data.label_names[majority]}'",
                **scores,
                "metric": metric,
                "accuracy": scores[metric],  # the searched metric, as trial rows hold it
                "eval_rows": len(gold),
            }
        }

    def describe_data(self, data: PreparedData, metric: str) -> str:
        return f"labels {', '.join(data.label_names)}"

    def model_card(self, facts: CardFacts) -> str:
        data = facts.data
        labels = ", ".join(facts.labels)
        return f"""**Task:** sequence classification into {len(facts.labels)} labels: {labels}

## Results on the evaluation set

| metric | value |
|---|---|
{facts.results}

## Data

- train: `{data.get("train")}`
- eval: `{data.get("eval") or f"{data.get('eval_fraction')} of train, held out"}`
- text column `{data.get("text_column")}`, label column `{data.get("label_column")}`
- at most {data.get("max_length")} tokens per text

## Load it

{head_loading_code(facts, "AutoModelForSequenceClassification")}"""


register_task(ClassificationTask())
