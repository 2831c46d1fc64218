"""Forgetting: how far an adapter moves a causal LM away from what it could do before.

The measure is the one peft's method comparison calls forgetting: the rise of the
model's loss on reference text, against the base model's loss on the same text. Per
reference passage, the mean loss per token with the adapter less the mean without it;
``forgetting`` is the mean of those differences over the passages (nats per token) and
``forgetting_se`` their standard error (passages, not tokens, are the independent
units: tokens of one passage move together). A zero-initialised adapter forgets 0.

The reference is ``evaluation.reference_data`` when given (passages read and tokenized
on the driver, scored whole). By default it is text the base model writes itself:
greedy continuations of ``NEUTRAL_PROMPTS``, so nothing is downloaded and it works
offline; greedy decoding is deterministic, so every worker derives the same text (once,
with the base losses, on its first trial: overhead, not the config's cost), and only the
continuation is scored. Text the base model finds likely is where a drift away from it
shows first.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "NEUTRAL_PROMPTS",
    "Reference",
    "forgetting_of",
    "generated_reference",
    "passage_losses",
    "reference_from_tokens",
]

# Topic-neutral openings (no task, no instruction): what the base model writes after them
# is its own everyday text.
NEUTRAL_PROMPTS = (
    "The history of the city begins",
    "Water boils at a lower temperature",
    "In the morning the market",
    "A good way to learn a new language is",
    "The old library had",
    "Scientists study the ocean because",
    "The recipe calls for",
    "When the train arrived at the station,",
)
NEW_TOKENS = 32  # generated per prompt: 8 x 32 = 256 scored tokens
REFERENCE_PASSAGES = 16  # at most this many passages of evaluation.reference_data


@dataclass(frozen=True)
class Reference:
    """Token ids of each passage, the position its scored part starts at, and the base
    model's mean loss per scored token on each (filled in once per worker)."""

    sequences: list[list[int]]
    starts: list[int]
    base_losses: list[float] | None = None


def reference_from_tokens(sequences: list[list[int]]) -> Reference:
    """``evaluation.reference_data`` passages, scored whole (after their first token)."""
    kept = [s for s in sequences if len(s) > 1][:REFERENCE_PASSAGES]
    return Reference(kept, [1] * len(kept))


def generated_reference(model: nn.Module, tokenizer: Any, device: str) -> Reference:
    """Greedy continuations of ``NEUTRAL_PROMPTS`` by ``model`` (the base, its adapter
    disabled), each scored from its first generated token."""
    import torch

    sequences, starts = [], []
    with torch.no_grad():
        for prompt in NEUTRAL_PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            output = model.generate(  # type: ignore[operator]
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            tokens = output[0].tolist()
            if len(tokens) > ids.shape[1]:
                sequences.append(tokens)
                starts.append(int(ids.shape[1]))
    return Reference(sequences, starts)


def passage_losses(model: nn.Module, reference: Reference, device: str) -> list[float]:
    """The mean loss per scored token of each passage under ``model`` (eval mode, no
    gradients; one passage at a time, so no padding enters the loss)."""
    import torch

    losses = []
    with torch.no_grad():
        for tokens, start in zip(reference.sequences, reference.starts, strict=True):
            ids = torch.tensor([tokens], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            # prompt tuning puts its virtual tokens' logits first: the passage's are last
            logits = logits[:, -ids.shape[1] :]
            # the logits at position t predict token t + 1
            predicted = logits[0, start - 1 : -1].float()
            losses.append(float(torch.nn.functional.cross_entropy(predicted, ids[0, start:])))
    return losses


def forgetting_of(adapted: list[float], base: list[float]) -> tuple[float, float | None]:
    """The mean rise in loss per passage, and its standard error (None for one passage)."""
    rises = [a - b for a, b in zip(adapted, base, strict=True)]
    mean = statistics.fmean(rises)
    if len(rises) < 2:
        return mean, None
    return mean, statistics.stdev(rises) / math.sqrt(len(rises))
