"""What a search space needs to know about the model: its blocks and linear layers.

Module names come from the model itself (BERT ``query/value``, LLaMA ``q_proj/v_proj``,
GPT-2 ``c_attn``...), so no method hard-codes one architecture.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "LAYER_SUBSETS",
    "TARGET_SETS",
    "ModelInfo",
    "find_blocks",
    "inspect_model",
    "top_count",
]

TARGET_SETS = ("qv", "attention", "attention+mlp")
# named subsets of the blocks; "top-<N>" (the top N blocks, e.g. "top-2") works too
LAYER_SUBSETS = ("all", "top-half", "top-third", "top-quarter", "bottom-half")
FRACTIONS = {"top-half": 2, "top-third": 3, "top-quarter": 4}

_QUERY = {"query", "q_proj", "q", "q_lin", "wq"}
_KEY = {"key", "k_proj", "k", "k_lin", "wk"}
_VALUE = {"value", "v_proj", "v", "v_lin", "wv"}
_FUSED_QKV = {"c_attn", "qkv_proj", "wqkv", "query_key_value", "qkv", "in_proj"}
_ATTENTION_WORDS = ("attn", "attention")


@dataclass(frozen=True)
class ModelInfo:
    """Structure of a transformer, as plain data that travels to Ray workers."""

    model_type: str
    layers_pattern: str
    num_layers: int
    block_linears: tuple[str, ...]
    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    query_value: tuple[str, ...]
    key_value: tuple[str, ...]
    total_params: int
    decoder_only: bool
    takes_past_key_values: bool = False
    task_type: str = "SEQ_CLS"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)

    def target_set(self, name: str) -> tuple[str, ...]:
        """Block-relative module names of a named target set."""
        if name == "qv":
            return self.query_value or self.attention
        if name == "attention":
            return self.attention
        if name == "attention+mlp":
            return self.block_linears
        raise ValueError(f"unknown target set {name!r}; choose from {', '.join(TARGET_SETS)}")

    def target_modules(self, relative: tuple[str, ...], layers: list[int]) -> list[str]:
        """Name suffixes that peft's suffix matching maps onto exactly ``relative``.

        BERT's MLP ``output.dense`` is also a suffix of ``attention.output.dense``; where no
        suffix is unambiguous, the layer index is written in (``layer.3.output.dense``).
        """
        wanted = set(relative)
        suffixes: list[str] = []
        for name in relative:
            parts = name.split(".")
            for size in range(1, len(parts) + 1):
                suffix = ".".join(parts[-size:])
                hits = {m for m in self.block_linears if m == suffix or m.endswith("." + suffix)}
                if hits <= wanted:
                    suffixes.append(suffix)
                    break
            else:
                suffixes.extend(f"{self.layers_pattern}.{i}.{name}" for i in layers)
        return list(dict.fromkeys(suffixes))

    def per_layer_modules(self, relative: tuple[str, ...], layers: list[int]) -> list[str]:
        """Layer-qualified suffixes (``layer.3.attention.self.key``), for methods whose
        peft config has no ``layers_to_transform``."""
        return [f"{self.layers_pattern}.{i}.{name}" for i in layers for name in relative]

    @property
    def attention_out(self) -> tuple[str, ...]:
        """The attention block's output projection (BERT ``attention.output.dense``,
        LLaMA ``self_attn.o_proj``): attention linears that are not q, k, v or fused."""
        inputs = _QUERY | _KEY | _VALUE | _FUSED_QKV
        return tuple(n for n in self.attention if n.rsplit(".", 1)[-1].lower() not in inputs)

    @property
    def mlp_down(self) -> tuple[str, ...]:
        """The MLP projection that reads the FFN activation (IA3's feed-forward scale)."""
        return self.mlp[-1:]

    def layer_indices(self, subset: str) -> list[int]:
        """The blocks of a subset: ``all``, ``top-half``/``-third``/``-quarter`` (at
        least one block), ``bottom-half``, or ``top-<N>`` (all of them when N exceeds
        the model's)."""
        n = self.num_layers
        if subset == "all":
            return list(range(n))
        if subset in FRACTIONS:
            return list(range(n - max(1, n // FRACTIONS[subset]), n))
        if subset == "bottom-half":
            return list(range(max(1, n // 2)))
        count = top_count(subset)
        if count is not None:
            return list(range(max(0, n - count), n))
        raise ValueError(
            f"unknown layer subset {subset!r}; choose from {', '.join(LAYER_SUBSETS)} "
            "or top-<N> (the top N blocks, e.g. top-2)"
        )


def top_count(subset: str) -> int | None:
    """N of a ``top-<N>`` subset; None for anything else."""
    match = re.fullmatch(r"top-([1-9]\d*)", subset)
    return int(match.group(1)) if match else None


def _is_linear(module: nn.Module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def _is_attention(relative: str) -> bool:
    lowered = relative.lower()
    leaf = lowered.rsplit(".", 1)[-1]
    return (
        any(w in lowered for w in _ATTENTION_WORDS) or leaf in _QUERY | _KEY | _VALUE | _FUSED_QKV
    )


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The repeated transformer blocks: the longest list of same-typed modules, with its
    dotted path in ``model``. Raises ValueError when there is none."""
    import torch

    blocks: tuple[str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and (blocks is None or len(module) > len(blocks[1])):
                blocks = (name, module)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no repeated transformer blocks")
    return blocks


def inspect_model(model: nn.Module, task_type: str = "SEQ_CLS") -> ModelInfo:
    """Find the repeated transformer blocks and sort their linear layers.

    Works on a model built on the meta device, so the driver never loads weights.
    """
    block_path, block_list = find_blocks(model)
    linears = tuple(n for n, m in block_list[0].named_modules() if n and _is_linear(m))
    if not linears:
        raise ValueError(f"{type(model).__name__}: its blocks have no linear layers to adapt")
    attention = tuple(n for n in linears if _is_attention(n))
    mlp = tuple(n for n in linears if n not in attention)
    leaf = {n: n.rsplit(".", 1)[-1].lower() for n in attention}
    query_value = tuple(n for n in attention if leaf[n] in _QUERY | _VALUE)
    key_value = tuple(n for n in attention if leaf[n] in _KEY | _VALUE)
    fused = tuple(n for n in attention if leaf[n] in _FUSED_QKV)

    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", type(model).__name__))
    return ModelInfo(
        model_type=model_type,
        layers_pattern=block_path.rsplit(".", 1)[-1],
        num_layers=len(block_list),
        block_linears=linears,
        attention=attention,
        mlp=mlp,
        query_value=query_value or fused,
        key_value=key_value or fused,
        total_params=sum(p.numel() for p in model.parameters()),
        decoder_only=_decoder_only(model_type),
        takes_past_key_values=_takes_past_key_values(model),
        task_type=task_type,
    )


def _takes_past_key_values(model: nn.Module) -> bool:
    """peft's prefix tuning hands its prefixes over as a ``past_key_values`` argument."""
    import inspect

    backbone = getattr(model, "base_model", model)
    return any(
        "past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone)
    )


def _decoder_only(model_type: str) -> bool:
    """Prefix tuning needs a KV cache: true of decoder-only models, not of BERT-likes."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )
