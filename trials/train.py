"""The training loop and evaluation of one adapter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

__all__ = ["TrainSettings", "TrialDiverged", "evaluate", "train"]


class TrialDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainSettings:
    max_steps: int = 100
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    seed: int = 0


def collate(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row (dynamic padding keeps short texts cheap)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key not in rows[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor([list(r[key]) + [fill] * (width - len(r[key])) for r in rows])
    batch["labels"] = torch.tensor([int(r["label"]) for r in rows])
    return batch


def _rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _batches(
    table: datasets.Dataset, size: int, pad_token_id: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches; each epoch reshuffles with a derived seed."""
    epoch = 0
    while True:
        order = table.shuffle(seed=seed + epoch)
        for start in range(0, len(order), size):
            yield collate(_rows(order[start : start + size]), pad_token_id)
        epoch += 1


def train(
    model: nn.Module,
    table: datasets.Dataset,
    *,
    learning_rate: float,
    settings: TrainSettings,
    pad_token_id: int,
    device: str,
    after_step: Callable[[int, float], bool] | None = None,
    max_steps: int | None = None,
) -> list[float]:
    """AdamW with linear warmup and decay; returns the loss per step.

    ``after_step(step, loss)`` returning False stops training there (budget, early
    stopping). ``max_steps`` overrides the settings' (the schedule follows it).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.weight_decay)
    total = max_steps or settings.max_steps
    warmup = int(settings.warmup_ratio * total)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    batches = _batches(table, settings.batch_size, pad_token_id, settings.seed)
    losses: list[float] = []
    model.train()
    for step in range(total):
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = model(**batch).loss
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrialDiverged(f"loss became {value} at step {step + 1}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value)
        if after_step is not None and not after_step(step + 1, value):
            break
    model.eval()
    return losses


def evaluate(
    model: nn.Module,
    table: datasets.Dataset,
    *,
    batch_size: int,
    pad_token_id: int,
    device: str,
    num_labels: int,
) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean of per-class F1, so rare classes count)."""
    import torch

    predictions: list[int] = []
    labels: list[int] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(table), batch_size):
            batch = collate(_rows(table[start : start + batch_size]), pad_token_id)
            gold = batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            predictions += logits.argmax(-1).tolist()
            labels += gold.tolist()
    return classification_metrics(predictions, labels, num_labels)


def classification_metrics(
    predictions: list[int], labels: list[int], num_labels: int
) -> dict[str, float]:
    correct = sum(p == g for p, g in zip(predictions, labels, strict=True))
    f1s = []
    for c in range(num_labels):
        tp = sum(p == c and g == c for p, g in zip(predictions, labels, strict=True))
        fp = sum(p == c and g != c for p, g in zip(predictions, labels, strict=True))
        fn = sum(p != c and g == c for p, g in zip(predictions, labels, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": correct / len(labels), "macro_f1": sum(f1s) / num_labels}
