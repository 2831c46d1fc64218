"""A task added the way a contributor adds one: this file alone, written like those in
``trials/tasks/``. Sentence-pair classification (premise, hypothesis -> label), with its
own data keys, tokenization, scoring, baseline and model card (tests/test_task_plugin.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from peftsearch.errors import UserError
from peftsearch.trials.data import PreparedData, hold_out, missing_column, read_table
from peftsearch.trials.tasks import (
    CardFacts,
    DataOptions,
    EvalContext,
    Metric,
    TaskBase,
    register_task,
)

NAME = "pair-classification"


class PairData(DataOptions):
    first_column: str = "first"
    second_column: str = "second"
    pair_label_column: str = "pair_label"


class PairTask(TaskBase):
    name = NAME
    display_name = "sentence-pair classification"
    pipeline_tag = "text-classification"
    unit = "pairs"
    peft_task_type = "SEQ_CLS"
    metrics = (Metric("pair_accuracy", "pair accuracy", "the share of pairs labelled right"),)
    data_options = PairData
    base_model_baseline = "no adapter: the base model with its own head"

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def prepare(self, data: Any, *, seed: int, tokenizer: Any) -> PreparedData:
        import datasets

        def read(split: str) -> Any:
            frame = read_table(data, split)
            for key in ("first_column", "second_column", "pair_label_column"):
                error = missing_column(frame, getattr(data, key), f"data.{split}", f"data.{key}")
                if error:
                    raise error
            return frame

        train = read("train")
        names = sorted(str(v) for v in set(train[data.pair_label_column]))
        if len(names) < 2:
            raise UserError("one label only", where="data.pair_label_column")

        def to_dataset(frame: Any) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                {
                    "first": frame[data.first_column].astype(str).tolist(),
                    "second": frame[data.second_column].astype(str).tolist(),
                    "label": [names.index(str(v)) for v in frame[data.pair_label_column]],
                }
            )

        train_set, eval_set = hold_out(
            to_dataset(train),
            to_dataset(read("eval")) if data.eval else None,
            fraction=data.eval_fraction,
            seed=seed,
            max_train=data.max_train_samples,
            max_eval=data.max_eval_samples,
        )
        max_length = data.max_length

        def encode(table: datasets.Dataset) -> datasets.Dataset:
            tokens = tokenizer(
                list(table["first"]), list(table["second"]), truncation=True, max_length=max_length
            )
            return datasets.Dataset.from_dict({**tokens, "label": table["label"]})

        return PreparedData(
            train=encode(train_set),
            eval=encode(eval_set),
            label_names=names,
            pad_token_id=int(tokenizer.pad_token_id),
            task=NAME,
            stats={"train_rows": len(train_set), "eval_rows": len(eval_set)},
        )

    def evaluate(
        self, model: Any, table: Any, context: EvalContext, *, metric: str, rung: bool = False
    ) -> dict[str, Any]:
        import torch

        from peftsearch.trials.train import collate, evaluation_mode, rows_of, take_rows

        right = 0
        with evaluation_mode(model), torch.inference_mode():
            for start in range(0, len(table), context.batch_size):
                batch = collate(
                    rows_of(table[start : start + context.batch_size]), context.pad_token_id
                )
                gold = batch.pop("labels")
                take_rows(batch, context.feed)
                logits = model(**{k: v.to(context.device) for k, v in batch.items()}).logits
                right += int((logits.argmax(-1).cpu() == gold).sum())
        score = right / len(table)
        return {"pair_accuracy": score, "metric": metric, "score": score}

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]:
        gold = [int(v) for v in data.eval["label"]]
        majority = Counter(int(v) for v in data.train["label"]).most_common(1)[0][0]
        score = sum(g == majority for g in gold) / len(gold)
        return {"majority_pair": {"method": "always the majority", "accuracy": score}}

    def describe_data(self, data: PreparedData, metric: str) -> str:
        return f"sentence pairs labelled {', '.join(data.label_names)}"

    def model_card(self, facts: CardFacts) -> str:
        return f"""**Task:** sentence pairs

| metric | value |
|---|---|
{facts.results}

```python
import json
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

labels = json.load(open("{facts.labels_file}"))
base = AutoModelForSequenceClassification.from_pretrained(
    "{facts.base_model}",{facts.load_arguments}
    num_labels=len(labels["id2label"]),
)
model = PeftModel.from_pretrained(base, "path/to/this/folder").eval()
```
"""


register_task(PairTask())
