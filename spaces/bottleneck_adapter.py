"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021): a small
down-projection, non-linearity and zero-initialised up-projection after a block's
attention output and/or feed-forward output (the peft tuner: trials/bottleneck.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from peftsearch.spaces._placement import LayerSubset, layer_words
from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    MethodSpaceBase,
    PeftChoice,
    register,
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["BottleneckOptions", "BottleneckSpace"]

Placement = Literal["attention+ffn", "ffn", "attention"]
PLACEMENT_WORDS = {
    "attention+ffn": "after the attention and feed-forward outputs (Houlsby)",
    "ffn": "after the feed-forward output (Pfeiffer)",
    "attention": "after the attention output",
}


class BottleneckOptions(MethodOptions):
    """``space.bottleneck_adapter``.

    Args:
        lr: adapters start at the identity and train from scratch, so they take larger
            steps than LoRA in short trials.
        bottleneck_size: widths of the down-projection to try (1 to 4096).
        placement: after the attention output and the feed-forward output (Houlsby),
            the feed-forward output only (Pfeiffer), or the attention output only.
        layers: which blocks carry adapters.
        non_linearity: the activation between the projections.
    """

    lr: LearningRateRange = LearningRateRange(low=3e-4, high=1e-2)
    bottleneck_size: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default=[8, 16, 32, 64], min_length=1
    )
    placement: list[Placement] = Field(default=["attention+ffn", "ffn"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all", "top-half"], min_length=1)
    non_linearity: list[Literal["relu", "gelu", "silu", "tanh"]] = Field(
        default=["relu"], min_length=1
    )


class BottleneckSpace(MethodSpaceBase):
    name = "bottleneck_adapter"
    display_name = "bottleneck adapter"
    options = BottleneckOptions
    mergeable = False  # a non-linearity sits between its projections

    def supports(self, info: ModelInfo) -> str | None:
        if not info.attention_out and not info.mlp_down:
            return "no attention or feed-forward output projection was found"
        return None

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, BottleneckOptions)
        size = int(
            trial.suggest_categorical(f"{self.name}.bottleneck_size", options.bottleneck_size)
        )
        placement = str(trial.suggest_categorical(f"{self.name}.placement", options.placement))
        subset = str(trial.suggest_categorical(f"{self.name}.layers", options.layers))
        activation = str(
            trial.suggest_categorical(f"{self.name}.non_linearity", options.non_linearity)
        )
        return PeftChoice(
            method=self.name,
            peft_config=self._config(info, size, placement, info.layer_indices(subset), activation),
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={
                "bottleneck_size": size,
                "placement": placement,
                "layers": subset,
                "non_linearity": activation,
            },
        )

    @staticmethod
    def _config(
        info: ModelInfo, size: int, placement: str, layers: list[int], activation: str
    ) -> dict[str, Any]:
        relative = {
            "attention+ffn": info.attention_out + info.mlp_down,
            "ffn": info.mlp_down,
            "attention": info.attention_out,
        }[placement]
        if not relative:
            raise ValueError(f"this model has no projection for placement {placement!r}")
        return {
            "peft_type": "BOTTLENECK_ADAPTER",
            "task_type": info.task_type,
            "bottleneck_size": size,
            "non_linearity": activation,
            "target_modules": info.target_modules(relative, layers),
            "layers_to_transform": layers,
            "layers_pattern": info.layers_pattern,
        }

    def describe(self, summary: dict[str, Any]) -> str:
        where = PLACEMENT_WORDS.get(summary.get("placement", ""), summary.get("placement"))
        layers = layer_words(str(summary.get("layers", "")))
        return f"of width {summary.get('bottleneck_size')} {where} in {layers}"

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        layers = list(range(info.num_layers))
        placement = "attention+ffn" if info.attention_out and info.mlp_down else "ffn"
        if not info.mlp_down:
            placement = "attention"
        return self._config(info, 16, placement, layers, "relu")


register(BottleneckSpace())
