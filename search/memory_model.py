"""Predicting a trial's peak memory before it runs, and fitting it under a limit.

A trial's peak is what its worker needs above what it already held (trials/memory.py):
- **the base copy** it trains on: each linear layer at its storage's bytes per weight
  (float32: 4; int8: 1; nf4/fp4: half a byte plus a float32 scale per 64 weights),
  everything else (embeddings, norms, heads) in float32;
- **the trainable parameters**, each with its gradient and AdamW's two moments
  (4 + 4 + 8 bytes);
- **activations**: the tensors autograd keeps for the backward pass, per token and per
  block that runs with gradients (every block from the lowest adapted one up; all of
  them for prompt methods, whose gradient flows to the inputs), at the micro-batch's
  rows x the longest row. Gradient checkpointing keeps only each block's input and
  recomputes one block at a time. Below the lowest adapted block the forward keeps
  nothing; it runs one block at a time, unless the frozen-layer cache serves it. A
  causal LM adds its logits over the vocabulary (and the loss's copies); an evaluation
  (no gradients) one block at a time and its batch's logits. The larger of training
  and evaluation counts.

The theory's constants are rough; the model learns from every measured trial, as the
cost model does: peak - base - states = k x activations + c, fitted by ridge regression
toward (k, c) = (1, 0), so it predicts from the first trial on and sharpens as trials
finish. ``plan`` picks the memory levers that keep the maths the same (a smaller
micro-batch that accumulates to the same batch, then gradient checkpointing) for a
config predicted over the limit (less a headroom as large as the model's misses so
far), or says it does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from peftsearch.trials.memory import eval_rows
from peftsearch.trials.model import UNQUANTIZED_MODULES

if TYPE_CHECKING:
    from torch import nn

    from peftsearch.trials import PreparedData, TrialResult

__all__ = [
    "MemoryModel",
    "MemoryNeed",
    "MemoryPlan",
    "ModelShape",
    "default_memory_limit_mb",
    "lowest_adapted_block",
    "memory_limit_line",
    "model_shape",
]

MB = 2**20
# bytes per weight of a linear layer, by model.quantization (4-bit: 64-weight blocks,
# each with a float32 scale)
WEIGHT_BYTES = {"none": 4.0, "int8": 1.0 + 4 / 4096, "nf4": 0.5 + 4 / 64, "fp4": 0.5 + 4 / 64}
STATE_BYTES = 16  # a trainable float32 weight, its gradient, AdamW's two moments


def lowest_adapted_block(peft_config: dict[str, Any], num_layers: int) -> int:
    """The lowest block a config's adapter touches (0 when it is every block, or the
    config does not say)."""
    layers = peft_config.get("layers_to_transform")
    if layers is not None:
        return min(layers, default=0)
    names = peft_config.get("target_modules") or []
    if not names or isinstance(names, str):
        return 0
    indices = [int(part) for name in names for part in name.split(".") if part.isdigit()]
    every = all(any(part.isdigit() for part in name.split(".")) for name in names)
    return min(indices) if indices and every else 0


@dataclass(frozen=True)
class ModelShape:
    """What the memory model reads of the base model and the data (plain data)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    linear_params: int  # in the linear layers a quantized base stores quantized
    other_params: int  # every other weight (float32 in any case)
    logits_width: int  # the vocabulary for a causal LM; the labels otherwise
    train_tokens: int  # the longest training row
    eval_tokens: int  # the longest evaluation row
    batch_size: int
    eval_batch_size: int
    causal_lm: bool

    def token_block_bytes(self, tokens: int) -> float:
        """float32 bytes autograd keeps per token in one block: its projections and
        norms (~10 hidden-wide tensors), the MLP (~4 intermediate-wide ones) and the
        attention weights (2 per head per key)."""
        return 4.0 * (
            10 * self.hidden_size + 4 * self.intermediate_size + 2 * self.num_heads * tokens
        )


def model_shape(meta: nn.Module, data: PreparedData, batch_size: int, eval_batch_size: int,
                causal_lm: bool) -> ModelShape:  # fmt: skip
    """The shape of ``meta`` (the weightless model) and of the prepared data."""
    from torch import nn

    config = meta.config
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 768)
    linear = other = 0
    seen: set[int] = set()
    for name, module in meta.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            head = any(name == h or name.endswith("." + h) for h in UNQUANTIZED_MODULES)
            if isinstance(module, nn.Linear) and not head and param.dim() == 2:
                linear += param.numel()
            else:
                other += param.numel()
    longest = {
        split: max((len(ids) for ids in table["input_ids"]), default=1)
        for split, table in (("train", data.train), ("eval", data.eval))
    }
    return ModelShape(
        num_layers=int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 1)),
        hidden_size=hidden,
        intermediate_size=int(getattr(config, "intermediate_size", 0) or 4 * hidden),
        num_heads=int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 12)),
        linear_params=linear,
        other_params=other,
        logits_width=int(getattr(config, "vocab_size", 0))
        if causal_lm
        else max(2, data.num_labels),
        train_tokens=longest["train"],
        eval_tokens=longest["eval"],
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        causal_lm=causal_lm,
    )


@dataclass(frozen=True)
class MemoryNeed:
    """A config as the memory model sees it (plain data; the levers are in ``plan``)."""

    trainable_params: int
    lowest_block: int  # the lowest adapted block (0: all, or a prompt method)
    quantization: str = "none"
    cached: bool = False  # the frozen-layer cache serves the blocks below it
    micro_batch_size: int | None = None  # None: the batch size
    gradient_checkpointing: bool = False
    # tokens per row of the widest batch (None: the longest training row): a measured
    # trial says how wide its batches were, a short calibration run sees narrower ones
    train_tokens: int | None = None


@dataclass(frozen=True)
class MemoryPlan:
    """What a trial runs with: its levers and the peak predicted with them."""

    predicted_mb: float
    micro_batch_size: int | None = None  # None: the whole batch at once
    gradient_checkpointing: bool = False
    fits: bool = True

    def levers(self, batch_size: int, checkpointing_set: bool = False) -> str:
        """The levers in words ('' when none); checkpointing already on by
        ``training.gradient_checkpointing`` is not a lever."""
        parts = []
        if self.micro_batch_size and self.micro_batch_size < batch_size:
            pieces = -(-batch_size // self.micro_batch_size)
            parts.append(f"micro-batch {self.micro_batch_size} x {pieces} accumulated")
        if self.gradient_checkpointing and not checkpointing_set:
            parts.append("gradient checkpointing")
        return " and ".join(parts)


@dataclass
class MemoryModel:
    """Peak megabytes of a trial, from the model's shape, learned from measured trials."""

    shape: ModelShape
    ridge: float = 0.25  # the prior weighs a quarter of one measured trial
    _rows: list[tuple[float, float]] = field(default_factory=list)  # (activation MB, residual MB)
    # measured / predicted - 1 of each trial, predicted before it was learned from
    _misses: list[float] = field(default_factory=list)
    _fit: tuple[float, float] | None = None

    # the theory, in MB
    def base_mb(self, quantization: str) -> float:
        s = self.shape
        return (s.linear_params * WEIGHT_BYTES[quantization] + s.other_params * 4.0) / MB

    def states_mb(self, trainable: int) -> float:
        return trainable * STATE_BYTES / MB

    def activations_mb(self, need: MemoryNeed) -> float:
        s = self.shape
        rows = min(need.micro_batch_size or s.batch_size, s.batch_size)
        width = need.train_tokens or s.train_tokens
        tokens = rows * width
        per_block = s.token_block_bytes(width) * tokens
        with_grad = s.num_layers - need.lowest_block
        if need.gradient_checkpointing:  # block inputs kept, one block recomputed
            kept = with_grad * tokens * s.hidden_size * 4.0 + per_block
        else:
            kept = with_grad * per_block
        if need.lowest_block and not need.cached:  # frozen blocks: one at a time
            kept += per_block
        kept += 3 * tokens * s.logits_width * 4.0 if s.causal_lm else 0.0
        train = kept / MB
        eval_tokens = eval_rows(s.eval_batch_size, rows, s.batch_size) * s.eval_tokens
        evaluation = (
            s.token_block_bytes(s.eval_tokens) * eval_tokens
            + (eval_tokens * s.logits_width * 4.0 if s.causal_lm else 0.0)
        ) / MB
        return max(train, evaluation)

    # learned
    def _coefficients(self) -> tuple[float, float]:
        """(k, c) of peak - base - states = k x activations + c, ridge toward (1, 0)
        (the intercept's ridge is in units of the activations' typical size)."""
        if self._fit is None:
            if not self._rows:
                self._fit = (1.0, 0.0)
            else:
                import numpy as np

                x = np.array([[a, 1.0] for a, _ in self._rows])
                y = np.array([r for _, r in self._rows])
                scale = max(1.0, float(np.median(x[:, 0])))
                penalty = self.ridge * np.diag([scale**2, 1.0])
                prior = np.array([1.0, 0.0])
                w = np.linalg.solve(x.T @ x + penalty, x.T @ y + penalty @ prior)
                self._fit = (max(0.05, float(w[0])), float(w[1]))
        return self._fit

    def predict(self, need: MemoryNeed) -> float:
        k, c = self._coefficients()
        fixed = self.base_mb(need.quantization) + self.states_mb(need.trainable_params)
        return max(fixed, fixed + k * self.activations_mb(need) + c)

    def observe(self, need: MemoryNeed, result: TrialResult) -> None:
        """Learn from a measured trial (one that ran its steps; an out-of-memory one
        says only that the config needed more, and is not learned from)."""
        if result.peak_memory_mb is None or not result.steps or result.out_of_memory:
            return
        need = replace(
            need,
            micro_batch_size=result.micro_batch_size or need.micro_batch_size,
            gradient_checkpointing=result.gradient_checkpointing,
            cached=bool(result.cached_layers),
            train_tokens=result.train_tokens or need.train_tokens,
        )
        fixed = self.base_mb(need.quantization) + self.states_mb(need.trainable_params)
        if self._rows:  # the calibration run alone is not a prediction that was tested
            self._misses.append(result.peak_memory_mb / self.predict(need) - 1)
        self._rows.append((self.activations_mb(need), result.peak_memory_mb - fixed))
        self._fit = None

    def headroom(self) -> float:
        """The margin ``plan`` keeps below a limit: how far measured peaks have come out
        above their predictions (the 80th percentile of the misses, at least 5%, at most
        50%), and 25% until three trials have said so. On a CPU a trial's resident set
        also grows with its steps (the heap fragments), which a 3-step calibration run
        does not see."""
        if len(self._misses) < 3:
            return 0.25
        ordered = sorted(self._misses)
        miss = ordered[min(len(ordered) - 1, int(0.8 * len(ordered)))]
        return min(0.5, max(0.05, miss))

    def observe_calibration(self, result: TrialResult) -> None:
        """The cost calibration's run: its method's typical config, on every block."""
        if result.trainable_params:
            need = MemoryNeed(result.trainable_params, 0, result.quantization)
            self.observe(need, result)

    def plan(self, need: MemoryNeed, limit_mb: float | None) -> MemoryPlan:
        """The config as it is when it fits (or no limit), else the first lever setting
        that fits: halving the micro-batch down to 1, then the same with gradient
        checkpointing. ``fits`` is False when none does (predicted: the smallest). A
        config fits when its prediction plus the ``headroom`` is within the limit."""
        as_is = self.predict(need)
        if limit_mb is not None:
            limit_mb /= 1 + self.headroom()
        if limit_mb is None or as_is <= limit_mb:
            return MemoryPlan(as_is, need.micro_batch_size, need.gradient_checkpointing)
        batch = self.shape.batch_size
        best = MemoryPlan(as_is, need.micro_batch_size, need.gradient_checkpointing, fits=False)
        for checkpointing in dict.fromkeys((need.gradient_checkpointing, True)):
            micro = need.micro_batch_size or batch
            while True:
                trial = replace(need, micro_batch_size=micro, gradient_checkpointing=checkpointing)
                predicted = self.predict(trial)
                plan = MemoryPlan(predicted, micro if micro < batch else None, checkpointing)
                if predicted <= limit_mb:
                    return plan
                if predicted < best.predicted_mb:
                    best = replace(plan, fits=False)
                if micro == 1:
                    break
                micro = max(1, micro // 2)
        return best


def default_memory_limit_mb(
    device_memory_mb: float | None, *, gpu_share: float, concurrent: int
) -> float | None:
    """``resources.memory_per_trial_gb`` unset: the GPU's memory times the trial's share
    of it, or on CPUs the node's memory over the trials running at once."""
    if device_memory_mb is None:
        return None
    if gpu_share > 0:
        return device_memory_mb * min(1.0, gpu_share)
    return device_memory_mb / max(1, concurrent)


def memory_limit_line(
    plan: MemoryPlan, limit_mb: float, configured: bool, headroom: float = 0.0
) -> str:
    """Why a config did not train, in one line (with the margin the plan kept)."""
    key = "resources.memory_per_trial_gb" if configured else "the memory per trial"
    need = plan.predicted_mb / 1024
    margin = f" ({need * (1 + headroom):.2f} GB with a {headroom:.0%} margin)" if headroom else ""
    return f"needs about {need:.2f} GB{margin}; {key} is {limit_mb / 1024:.2f} GB"
