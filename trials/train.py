"""The training loop of one adapter (each task scores it: trials/tasks/)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

    from peftsearch.trials.tasks import EvalContext

__all__ = [
    "TrainSettings",
    "TrialDiverged",
    "autocast",
    "collate",
    "evaluation_mode",
    "labelled_logits",
    "resolve_precision",
    "rows_of",
    "take_rows",
    "train",
]

IGNORE_INDEX = -100  # label positions the loss skips (padding, causal-LM prompts)


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
    precision: str = "auto"  # auto, fp32, bf16, fp16 (see resolve_precision)
    gradient_checkpointing: bool = False
    metric: str = "accuracy"  # the task's searched metric (evaluation.metric)
    # what a rung scores (search.early_stopping.rung_metric): None, the task's cheaper
    # signal for ``metric``; else that metric in full
    rung_metric: str | None = None
    max_new_tokens: int = 32
    cache_frozen_layers: bool = True  # trials/frozen_cache.py
    cache_max_mb: int = 2048  # per worker
    forgetting: bool = True  # causal LMs: measure it per trial (trials/forgetting.py)


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 on a GPU that supports it, fp32 elsewhere (CPUs gain little from
    autocast, and fp32 keeps CPU trials exact)."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode inside the block, and back in the mode it had after it.

    An evaluation at an early-stopping rung runs in the middle of training: leaving the
    model in eval mode would train the rest of the trial without dropout, so a trial's
    result would depend on whether (and where) it was observed.
    """
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def autocast(device: str, precision: str) -> AbstractContextManager[Any]:
    """Mixed precision for the forward pass; the weights stay fp32."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def collate(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row (dynamic padding keeps short texts cheap).

    Classification rows carry one ``label``; causal-LM and tagging rows carry per-token
    ``labels``, padded with ``IGNORE_INDEX`` so padding never counts in the loss.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, torch.Tensor] = {}
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    fills["labels"] = IGNORE_INDEX
    for key, fill in fills.items():
        if key not in rows[0]:
            continue
        batch[key] = torch.tensor([list(r[key]) + [fill] * (width - len(r[key])) for r in rows])
    if "label" in rows[0]:
        batch["labels"] = torch.tensor([int(r["label"]) for r in rows])
    if "row_id" in rows[0]:  # which rows these are: the frozen-layer cache looks them up
        batch["row_id"] = torch.tensor([int(r["row_id"]) for r in rows])
    return batch


# (row ids, the batch's model inputs) -> None: serves the rows' cached states
Feed = Callable[["torch.Tensor", dict[str, "torch.Tensor"]], None]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def take_rows(batch: dict[str, torch.Tensor], feed: Feed | None) -> None:
    """Remove the batch's row ids (the model takes none) and hand them, with the batch's
    inputs, to ``feed`` (trials/frozen_cache.py), which serves their cached states."""
    row_ids = batch.pop("row_id", None)
    if feed is not None:
        if row_ids is None:
            raise ValueError("the frozen-layer cache needs row ids in the batches")
        feed(row_ids, {k: v for k, v in batch.items() if k in MODEL_INPUTS})


def rows_of(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
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
            yield collate(rows_of(order[start : start + size]), pad_token_id)
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
    feed: Feed | None = None,
    micro_batch_size: int | None = None,
    widest: list[int] | None = None,
    loraplus_lr_ratio: float | None = None,
) -> list[float]:
    """AdamW with linear warmup and decay; returns the loss per step.

    ``after_step(step, loss)`` returning False stops training there (budget, early
    stopping). ``max_steps`` overrides the settings' (the schedule follows it). ``feed``
    serves cached hidden states (trials/frozen_cache.py). ``micro_batch_size`` below the
    batch size runs each batch in pieces and accumulates their gradients, each piece's
    loss weighted by its share of the batch's loss terms: the same step, in less memory.
    ``widest`` (a one-item list) gets the widest batch trained on, in tokens per row
    (batches are padded to their longest row: the memory model sizes activations by it).
    ``loraplus_lr_ratio``: LoRA+, peft's optimizer that trains B at that multiple of A's
    learning rate.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    precision = resolve_precision(settings.precision, device)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=precision == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if loraplus_lr_ratio:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            cast("Any", model),  # a PeftModel
            optimizer_cls=torch.optim.AdamW,
            lr=learning_rate,
            loraplus_lr_ratio=loraplus_lr_ratio,
            weight_decay=settings.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=settings.weight_decay)
    total = max_steps or settings.max_steps
    warmup = int(settings.warmup_ratio * total)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    batches = _batches(table, settings.batch_size, pad_token_id, settings.seed)
    losses: list[float] = []
    model.train()
    shifted = _predicts_next_token(model)
    for step in range(total):
        batch = next(batches)
        if widest is not None:
            widest[0] = max(widest[0], int(batch["input_ids"].shape[1]))
        pieces = _pieces(batch, micro_batch_size or settings.batch_size, shifted)
        value = 0.0
        for piece, weight in pieces:
            if weight == 0.0:  # no loss terms in it (its mean would be NaN)
                continue
            take_rows(piece, feed)
            piece = {k: v.to(device) for k, v in piece.items()}
            with autocast(device, precision):
                loss = model(**piece).loss * weight
            value += float(loss.detach())
            scaler.scale(loss).backward()
        if not math.isfinite(value):
            raise TrialDiverged(f"loss became {value} at step {step + 1}")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value)
        if after_step is not None and not after_step(step + 1, value):
            break
    model.eval()
    return losses


def _predicts_next_token(model: nn.Module) -> bool:
    """A causal LM's loss counts label positions after shifting them by one."""
    configs = getattr(model, "peft_config", {})
    return any(str(getattr(c, "task_type", "")) == "CAUSAL_LM" for c in configs.values())


def _pieces(
    batch: dict[str, torch.Tensor], size: int, shifted: bool
) -> list[tuple[dict[str, torch.Tensor], float]]:
    """The batch in pieces of at most ``size`` rows, each with its weight: the share of
    the batch's loss terms it holds (rows; or label tokens, the model's loss being their
    mean), so the weighted pieces' losses add up to the batch's loss."""
    rows = len(batch["input_ids"])
    if size >= rows:
        return [(batch, 1.0)]
    labels = batch.get("labels")
    per_row: list[float]
    if labels is not None and labels.dim() == 2:
        counted = labels[:, 1:] if shifted else labels
        per_row = (counted != IGNORE_INDEX).sum(dim=1).tolist()
    else:
        per_row = [1.0] * rows
    total = sum(per_row) or 1.0
    return [
        (
            {k: v[start : start + size] for k, v in batch.items()},
            sum(per_row[start : start + size]) / total,
        )
        for start in range(0, rows, size)
    ]


def labelled_logits(
    model: nn.Module, table: datasets.Dataset, context: EvalContext
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(gold labels, logits) per evaluation batch, the model in eval mode and no grads:
    the loop a classifier's and a tagger's scoring share (trials/tasks/)."""
    import torch

    device = context.device
    with (
        evaluation_mode(model),
        torch.inference_mode(),
        autocast(device, resolve_precision(context.precision, device)),
    ):
        for start in range(0, len(table), context.batch_size):
            rows = rows_of(table[start : start + context.batch_size])
            batch = collate(rows, context.pad_token_id)
            gold = batch.pop("labels")
            take_rows(batch, context.feed)
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            yield gold, logits.float().cpu()
