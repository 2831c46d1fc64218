"""The causal-LM task's data (trials/tasks/causal_lm.py): prompt/response pairs in,
tokenized sets out: the loss counts response
tokens only, and evaluation keeps the prompt and the reference answer apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    import datasets
    import pandas as pd

__all__ = ["IGNORE_INDEX", "LM_COLUMNS", "encode_pair", "encode_pairs", "pairs_of", "render_prompt"]

IGNORE_INDEX = -100  # labels torch's cross-entropy skips: the prompt's tokens
# input_ids/attention_mask/labels train; prompt_ids and answer drive generation
LM_COLUMNS = ("input_ids", "attention_mask", "labels", "prompt_ids", "answer")


def render_prompt(tokenizer: Any, turns: list[dict[str, str]]) -> str:
    """The prompt text the model continues: the chat template with its generation
    prompt where the tokenizer has one, else the turns' text, one per line."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    return "\n".join(turn["content"] for turn in turns) + "\n"


def encode_pair(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> tuple[list[int], list[int], bool] | None:
    """(prompt ids, response ids ending in EOS, prompt truncated?), or None when the
    response alone leaves no room for a prompt token: responses are never cut."""
    # a chat template writes its own special tokens; plain text gets the tokenizer's BOS
    special = not getattr(tokenizer, "chat_template", None)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=special)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(int(tokenizer.eos_token_id))
    room = max_length - len(response_ids)
    if room < 1:
        return None
    truncated = len(prompt_ids) > room
    return prompt_ids[-room:], response_ids, truncated  # prompts lose their start


def pairs_of(
    frame: pd.DataFrame,
    *,
    key: str,
    tokenizer: Any,
    prompt_column: str,
    response_column: str,
    messages_column: str | None,
    prompt_template: str | None = None,
) -> list[tuple[str, str]]:
    """(rendered prompt, response) per usable row; empty rows are dropped."""
    if messages_column is not None:
        if messages_column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise UserError(
                f"column {messages_column!r} is not in {key} (its columns: {found})",
                where="data.messages_column",
            )
        pairs = []
        for number, turns in enumerate(frame[messages_column].tolist()):
            turns = list(turns) if turns is not None else []
            if not turns or not all(isinstance(t, dict) and "content" in t for t in turns):
                raise UserError(
                    f"row {number} of {key}: {messages_column} must be a list of "
                    "{role, content} dicts",
                    where="data.messages_column",
                )
            if turns[-1].get("role") != "assistant" or len(turns) < 2:
                raise UserError(
                    f"row {number} of {key}: the last turn must be the assistant's answer, "
                    "after at least one user turn",
                    where="data.messages_column",
                )
            turns = [{"role": str(t["role"]), "content": str(t["content"])} for t in turns]
            pairs.append((render_prompt(tokenizer, turns[:-1]), turns[-1]["content"]))
        return [(p, r) for p, r in pairs if r.strip()]
    if prompt_template is not None:
        frame = frame.assign(**{PROMPT: _fill(frame, prompt_template, key)})
        prompt_column = PROMPT
    for column, name in (
        (prompt_column, "data.prompt_column"),
        (response_column, "data.response_column"),
    ):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise UserError(f"column {column!r} is not in {key} (its columns: {found})", where=name)
    frame = frame[[prompt_column, response_column]].dropna()
    return [
        (render_prompt(tokenizer, [{"role": "user", "content": str(p)}]), str(r))
        for p, r in zip(frame[prompt_column], frame[response_column], strict=True)
        if str(p).strip() and str(r).strip()
    ]


PROMPT = "__prompt__"  # the column a prompt_template fills


def _fill(frame: pd.DataFrame, template: str, key: str) -> list[str]:
    """``template.format(**row)`` per row; a placeholder that names no column is an error."""
    import string

    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(fields - {str(c) for c in frame.columns})
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise UserError(
            f"the template names {{{missing[0]}}}, which is not a column of {key} (its "
            f"columns: {found})",
            where="data.prompt_template",
        )
    rows = frame[sorted(fields)].astype(str).to_dict("records") if fields else [{}] * len(frame)
    return [template.format(**row) for row in rows]


def encode_pairs(
    pairs: list[tuple[str, str]], tokenizer: Any, max_length: int, stats: dict[str, int]
) -> datasets.Dataset:
    import datasets

    rows: dict[str, list[Any]] = {c: [] for c in LM_COLUMNS}
    for prompt, response in pairs:
        encoded = encode_pair(tokenizer, prompt, response, max_length)
        if encoded is None:
            stats["too_long_rows"] += 1
            continue
        prompt_ids, response_ids, truncated = encoded
        stats["truncated_prompts"] += truncated
        rows["input_ids"].append(prompt_ids + response_ids)
        rows["attention_mask"].append([1] * (len(prompt_ids) + len(response_ids)))
        rows["labels"].append([IGNORE_INDEX] * len(prompt_ids) + response_ids)
        rows["prompt_ids"].append(prompt_ids)
        rows["answer"].append(response)
    return datasets.Dataset.from_dict(rows)
