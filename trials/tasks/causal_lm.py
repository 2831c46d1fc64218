"""Instruction tuning of a causal LM: a prompt in, a generated response out; scored by
exact match of greedy generations (or token accuracy, or 1/perplexity)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.errors import UserError
from peftsearch.trials.data import PreparedData, hold_out, read_table
from peftsearch.trials.tasks._registry import (
    CardFacts,
    DataOptions,
    EvalContext,
    Metric,
    TaskBase,
    register_task,
)

if TYPE_CHECKING:
    import datasets
    from torch import nn

TRAIN_COLUMNS = ["input_ids", "attention_mask", "labels"]


class CausalLMData(DataOptions):
    """The ``data.*`` keys a causal LM reads."""

    prompt_column: str = Field("prompt", description="causal-lm: the instruction or question")
    response_column: str = Field("response", description="causal-lm: the answer to learn")
    prompt_template: str | None = Field(
        None,
        description="causal-lm: build each prompt from the row's columns, e.g. "
        "'Review: {text}\\nFresh or rotten?' (then data.prompt_column is not read)",
    )
    messages_column: str | None = Field(
        None,
        description="causal-lm: a chat column (a list of {role, content}); the last "
        "assistant turn is the response, the turns before it the prompt",
    )


class CausalLMTask(TaskBase):
    name = "causal-lm"
    display_name = "text generation (causal LM)"
    pipeline_tag = "text-generation"
    unit = "prompts"
    peft_task_type = "CAUSAL_LM"
    metrics = (
        Metric("exact_match", "exact match", "greedy generation equals the response (normalised)"),
        Metric(
            "token_accuracy",
            "token accuracy",
            "teacher-forced next-token accuracy on the response",
        ),
        Metric("eval_loss", "1/perplexity", "response loss, scored as 1/perplexity", share=False),
    )
    columns = ("token_accuracy", "eval_loss", "perplexity", "example")
    data_options = CausalLMData
    base_model_baseline = "no adapter: the base model, zero-shot"
    # Learning rates for short search trials on a decoder, from the causal-LM table
    # (benchmarks/tables/rt_instruct_smollm2.csv; benchmarks/lr_ranges.py --dataset
    # rt_instruct): each range spans the grid's rates whose best config is within noise
    # of the method's best, so its top (where the initial design starts) is the highest
    # of them. There the encoder ranges' tops stay at chance (LoRA and DoRA 6e-3: 0.521
    # median at 1e-2; bottleneck 1e-2; IA3 0.15) or snap to rates that do (LoHa 1e-2).
    # Prompt tuning's range agrees with the plug-in's and stays.
    method_defaults: Mapping[str, Mapping[str, Any]] = {
        "lora": {"lr": {"low": 5.0e-4, "high": 2.2e-3}},
        "dora": {"lr": {"low": 5.0e-4, "high": 2.2e-3}},
        "loha": {"lr": {"low": 1.0e-3, "high": 4.5e-3}},
        "lokr": {"lr": {"low": 1.0e-3, "high": 2.0e-2}},
        # IA3 on the top half too: there its smallest (key/value, 5,760 parameters) learns
        # at the top of the range (0.708), where IA3 on every block stays near chance
        # (key/value+feed-forward: 0.541 at 4.5e-2, 0.687 at 1e-2)
        "ia3": {"lr": {"low": 1.0e-2, "high": 4.5e-2}, "layers": ["all", "top-half"]},
        "bottleneck_adapter": {"lr": {"low": 3.0e-4, "high": 1.7e-3}},
        "prefix_tuning": {"lr": {"low": 7.0e-3, "high": 5.0e-2}},
    }
    # On the same table LoRA and DoRA on the top half of the blocks stay near chance
    # (median exact match 0.56 against 0.70 on every block), so their design trials
    # span the most blocks; so do the bottleneck adapter's (the table measured it on every
    # block, 0.729; the demo's live run on the top half read 0.562). IA3's smallest (top
    # half) is the front's cheapest point.
    design_most_blocks = frozenset({"lora", "dora", "loha", "lokr", "bottleneck_adapter"})

    def check(self, config: Any) -> None:
        data = config.data
        if data.prompt_column == data.response_column:
            raise ValueError(
                f"data.response_column: {data.response_column!r} is data.prompt_column too; "
                "name two different columns"
            )

    def model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def head_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {}  # the LM head is the checkpoint's own

    def prepare(self, data: Any, *, seed: int, tokenizer: Any) -> PreparedData:
        """Load, render (chat template where there is one), split, subsample, tokenize.

        ``stats`` counts ``too_long_rows`` (a response that cannot fit ``max_length``:
        dropped, never cut) and ``truncated_prompts`` (prompts shortened from the left).
        """
        import datasets

        from peftsearch.trials.lm_data import encode_pairs, pairs_of

        def read(split: str) -> datasets.Dataset:
            pairs = pairs_of(
                read_table(data, split),
                key=f"data.{split}",
                tokenizer=tokenizer,
                prompt_column=data.prompt_column,
                response_column=data.response_column,
                messages_column=data.messages_column,
                prompt_template=data.prompt_template,
            )
            return datasets.Dataset.from_dict(
                {"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}
            )

        def encode(table: datasets.Dataset) -> datasets.Dataset:
            return encode_pairs(
                list(zip(table["prompt"], table["response"], strict=True)),
                tokenizer,
                data.max_length,
                stats,
            )

        train, eval = hold_out(
            read("train"),
            read("eval") if data.eval is not None else None,
            fraction=data.eval_fraction,
            seed=seed,
            max_train=data.max_train_samples,
            max_eval=data.max_eval_samples,
        )
        stats = {"too_long_rows": 0, "truncated_prompts": 0, "max_length": data.max_length}
        train_set, eval_set = encode(train), encode(eval)
        if len(train_set) < 2:
            raise UserError(
                f"fewer than 2 usable training rows ({stats['too_long_rows']} responses "
                f"longer than data.max_length {data.max_length})",
                where="data.train",
                hint="raise data.max_length",
            )
        if len(eval_set) == 0:
            where = "data.eval" if data.eval else "data.train"
            raise UserError("no usable evaluation rows", where=where)
        test_set = encode(read("test")) if data.test is not None else None
        return PreparedData(
            train=train_set.select_columns(TRAIN_COLUMNS),
            eval=eval_set,
            label_names=[],
            pad_token_id=int(tokenizer.pad_token_id),
            task=self.name,
            stats={
                "train_rows": len(train_set),
                "eval_rows": len(eval_set),
                # what a model that learned one answer says (the exact-match baseline)
                "common_answer": _most_common(train_set["answer"]),
                **({"test_rows": len(test_set)} if test_set is not None else {}),
                **stats,
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
        """Rungs score teacher-forced token accuracy instead of generating: a rung only
        ranks trials against others at the same rung, on the same metric, and token
        accuracy on the response tracks exact match at a fraction of its cost (one
        forward pass, not one per generated token)."""
        from peftsearch.trials.lm_eval import evaluate_lm

        assert context.tokenizer is not None, "causal-LM evaluation decodes"
        metrics = evaluate_lm(
            model,
            table,
            metric="token_accuracy" if rung and metric == "exact_match" else metric,
            tokenizer=context.tokenizer(),
            batch_size=context.batch_size,
            pad_token_id=context.pad_token_id,
            device=context.device,
            precision=context.precision,
            max_new_tokens=context.max_new_tokens,
            feed=context.feed,
            full_model=context.full_model or contextlib.nullcontext,
        )
        return {**metrics, "score": float(metrics.pop("accuracy"))}

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]:
        """Exact match: always answering the most frequent training answer (instruction
        data with a few short answers is a classifier in disguise: an adapter that learns
        only that answer has learned nothing of the task)."""
        from peftsearch.trials.lm_eval import normalise_answer

        common = data.stats.get("common_answer")
        if metric != "exact_match" or common is None:
            return {}
        gold = [normalise_answer(a) for a in data.eval["answer"]]
        score = sum(g == common for g in gold) / len(gold)
        return {
            "most_common_answer": {
                "method": f"no adapter: always answering {common!r}",
                "metric": metric,
                "accuracy": score,
                "exact_match": score,
                "eval_rows": len(gold),
            }
        }

    def describe_data(self, data: PreparedData, metric: str) -> str:
        words = f"prompt/response pairs, scored by {self.metric(metric).label}"
        dropped, cut = data.stats.get("too_long_rows", 0), data.stats.get("truncated_prompts", 0)
        if dropped or cut:
            words += (
                f"; {dropped} dropped (response longer than data.max_length "
                f"{data.stats.get('max_length')}), {cut} prompts shortened from the left"
            )
        return words

    def model_card(self, facts: CardFacts) -> str:
        row, data = facts.row, facts.data
        example = json.loads(row["example"]) if row.get("example") else {}
        prompt = example.get("prompt", "Write your prompt here.")
        shown = ""
        if example:
            shown = (
                f"\n## An example from the evaluation set\n\n- prompt: `{prompt!r}`\n"
                f"- generated: `{example.get('generated')!r}`\n"
                f"- reference: `{example.get('reference')!r}`\n"
            )
        source = (
            f"chat column `{data.get('messages_column')}`"
            if data.get("messages_column")
            else f"prompt column `{data.get('prompt_column')}`, response column "
            f"`{data.get('response_column')}`"
        )
        extra = facts.load_arguments
        scored = self.metric(row.get("metric") or "exact_match").label
        return f"""**Task:** text generation (causal LM), scored by {scored}

## Results on the evaluation set

| metric | value |
|---|---|
{facts.results}
{shown}
## Data

- train: `{data.get("train")}`
- eval: `{data.get("eval") or f"{data.get('eval_fraction')} of train, held out"}`
- {source}; at most {data.get("max_length")} tokens per prompt and response

## Load it and generate

```python
{facts.plugin_import}from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained(
    "{facts.base_model}",{extra}
)
model = PeftModel.from_pretrained(base, "path/to/this/folder").eval()
tokenizer = AutoTokenizer.from_pretrained("{facts.base_model}",{extra}
)
# the prompt as the search rendered it (chat template and special tokens included)
prompt = {prompt!r}
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
{_generation_code(facts)}
```
"""


def _generation_code(facts: CardFacts) -> str:
    """The card's greedy decoding, as the search scored it (trials/lm_eval.py:
    ``greedy_ids``): ``generate``, or for peft's prompt-learning methods (prompt,
    prefix tuning) one forward pass per token, which ``generate`` does not reproduce."""
    steps = facts.max_new_tokens
    if not facts.extra.get("prompt_learning"):
        return (
            f"output = model.generate(**inputs, max_new_tokens={steps}, do_sample=False)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], '
            "skip_special_tokens=True))"
        )
    return f"""# {facts.row.get("method")}: transformers' cached generate continues virtual
# tokens at other positions than the model's own forward pass does: decode greedily by
# forward passes, as the search scored it
import torch

ids = inputs["input_ids"]
with torch.inference_mode():
    for _ in range({steps}):
        token = model(input_ids=ids).logits[:, -1:].argmax(-1)
        ids = torch.cat([ids, token], dim=1)
        if token.item() == tokenizer.eos_token_id:
            break
print(tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""


def _most_common(answers: list[str]) -> str | None:
    """The most frequent answer, normalised as exact match compares answers."""
    from collections import Counter

    from peftsearch.trials.lm_eval import normalise_answer

    counts = Counter(normalise_answer(a) for a in answers)
    return counts.most_common(1)[0][0] if counts else None


register_task(CausalLMTask())
