"""Scoring a causal-LM adapter (trials/tasks/causal_lm.py): exact match of greedy
generations, and teacher-forced
token accuracy and response loss."""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from peftsearch.trials.train import (
    IGNORE_INDEX,
    Feed,
    autocast,
    collate,
    evaluation_mode,
    resolve_precision,
    rows_of,
    take_rows,
)

if TYPE_CHECKING:
    import datasets
    from torch import nn

__all__ = ["evaluate_lm", "generates_with_cache", "greedy_ids", "normalise_answer"]


def normalise_answer(text: str) -> str:
    """Strip, case-fold and collapse whitespace: "  Paris\\n" equals "paris"."""
    return re.sub(r"\s+", " ", text.strip().casefold())


def _teacher_forced(
    model: nn.Module,
    table: datasets.Dataset,
    batch_size: int,
    pad_token_id: int,
    device: str,
    feed: Feed | None = None,
) -> dict[str, float]:
    """Next-token accuracy and mean loss over the response tokens only."""
    import torch

    correct = counted = 0
    loss_sum = 0.0
    wanted = ("input_ids", "attention_mask", "labels", "row_id")
    columns = [c for c in wanted if c in table.column_names]
    for start in range(0, len(table), batch_size):
        rows = rows_of(table.select_columns(columns)[start : start + batch_size])
        batch = collate(rows, pad_token_id)
        take_rows(batch, feed)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits
        # prompt tuning prepends virtual tokens to the outputs: keep the inputs' positions
        gold = labels[:, 1:]
        mask = gold != IGNORE_INDEX
        # only the response positions, before any copy: the full (rows x tokens x
        # vocabulary) logits are the evaluation's peak memory, in float32 twice over
        predicted = logits[:, -labels.shape[1] :][:, :-1][mask].float()
        del logits
        gold = gold[mask]
        correct += int((predicted.argmax(-1) == gold).sum())
        counted += int(gold.numel())
        loss_sum += float(torch.nn.functional.cross_entropy(predicted, gold, reduction="sum"))
    loss = loss_sum / max(1, counted)
    return {
        "token_accuracy": correct / max(1, counted),
        "eval_loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
    }


def _exact_match(
    model: nn.Module,
    table: datasets.Dataset,
    *,
    tokenizer: Any,
    batch_size: int,
    device: str,
    max_new_tokens: int,
) -> tuple[float, dict[str, str]]:
    """Greedy generation in batches (``greedy_ids``); returns the share of exact answers
    and the first row as an example."""
    hits = 0
    example: dict[str, str] = {}
    for start in range(0, len(table), batch_size):
        chunk = table[start : start + batch_size]
        prompts, answers = chunk["prompt_ids"], chunk["answer"]
        generated = greedy_ids(
            model,
            prompts,
            pad_token_id=int(tokenizer.pad_token_id),
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=max_new_tokens,
            device=device,
        )
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        for text, answer in zip(texts, answers, strict=True):
            hits += normalise_answer(text) == normalise_answer(answer)
        if not example:
            example = {
                # with its special tokens: re-tokenized as is, it gives the same ids
                "prompt": tokenizer.decode(prompts[0], skip_special_tokens=False),
                "generated": texts[0].strip(),
                "reference": answers[0],
            }
    return hits / len(table), example


def generates_with_cache(model: nn.Module) -> bool:
    """Whether ``generate`` continues ``model`` as its own forward pass does. Not for
    peft's prompt-learning methods (prompt, prefix, p-tuning) on transformers 5 with peft
    0.21: with its KV cache, ``generate`` places the tokens after the first at other
    positions than the virtual tokens imply, and peft drops the position ids that would
    make a left-padded batch right, so greedy answers change with the batch and differ
    from the model's own greedy continuation (tests/test_lm.py)."""
    config = getattr(model, "active_peft_config", None)
    return not getattr(config, "is_prompt_learning", False)


def greedy_ids(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    pad_token_id: int,
    eos_token_id: int | None,
    max_new_tokens: int,
    device: str,
) -> list[list[int]]:
    """The greedy continuation of each prompt (up to and with EOS). ``generate`` with its
    KV cache, left-padded so every prompt ends where generation starts; for a model it
    cannot continue (``generates_with_cache``), full forward passes over the right-padded
    batch, one per new token: the very computation training and the teacher-forced pass
    run, at the cost of re-reading each prompt per token."""
    import torch

    if not generates_with_cache(model):
        return _greedy_by_forward(
            model, prompts, pad=pad_token_id, eos=eos_token_id, steps=max_new_tokens, device=device
        )
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    output = model.generate(  # type: ignore[operator]
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
    )
    return [list(map(int, row)) for row in output[:, width:].tolist()]


def _greedy_by_forward(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    pad: int,
    eos: int | None,
    steps: int,
    device: str,
) -> list[list[int]]:
    import torch

    sequences = [list(p) for p in prompts]
    new: list[list[int]] = [[] for _ in prompts]
    open_rows = list(range(len(prompts)))
    for _ in range(steps):
        if not open_rows:
            break
        rows = [sequences[i] for i in open_rows]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # prompt tuning prepends its virtual tokens to the outputs: keep the inputs'
        last = torch.tensor([len(r) - 1 for r in rows], device=device)
        chosen = logits[:, -width:][torch.arange(len(rows), device=device), last].argmax(-1)
        del logits
        still = []
        for row, token in zip(open_rows, chosen.tolist(), strict=True):
            sequences[row].append(int(token))
            new[row].append(int(token))
            if token != eos:
                still.append(row)
        open_rows = still
    return new


def evaluate_lm(
    model: nn.Module,
    table: datasets.Dataset,
    *,
    metric: str,
    tokenizer: Any,
    batch_size: int,
    pad_token_id: int,
    device: str,
    precision: str = "fp32",
    max_new_tokens: int = 32,
    feed: Feed | None = None,
    full_model: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> dict[str, Any]:
    """The metrics of ``metric``, with ``accuracy`` set to the score the search
    maximises: exact match, token accuracy, or 1/perplexity for ``eval_loss``
    (``generation_seconds``: of the call's time, generating for exact match).
    ``feed`` serves cached states to the teacher-forced pass; generation runs inside
    ``full_model()`` (the frozen-layer cache cannot serve tokens it has not seen)."""
    import torch

    with (
        evaluation_mode(model),
        torch.inference_mode(),
        autocast(device, resolve_precision(precision, device)),
    ):
        metrics: dict[str, Any] = _teacher_forced(
            model, table, batch_size, pad_token_id, device, feed
        )
        if metric == "exact_match":
            began = time.perf_counter()
            with full_model():
                metrics["exact_match"], metrics["example"] = _exact_match(
                    model,
                    table,
                    tokenizer=tokenizer,
                    batch_size=batch_size,
                    device=device,
                    max_new_tokens=max_new_tokens,
                )
            # of the evaluation's time, generating: what a teacher-forced rung saves
            metrics["generation_seconds"] = time.perf_counter() - began
    metrics["metric"] = metric
    metrics["accuracy"] = (
        1.0 / metrics["perplexity"] if metric == "eval_loss" else float(metrics[metric])
    )
    return metrics
