"""IA3 (Liu et al., 2022): learned rescaling of keys, values and the FFN activation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from peftsearch.spaces._placement import LayerSubset
from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    PeftChoice,
    register,
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["IA3Options", "IA3Space"]


class IA3Options(MethodOptions):
    # IA3 has ~1 parameter per hidden unit, so it needs far larger steps than LoRA.
    lr: LearningRateRange = LearningRateRange(low=3e-3, high=1e-1)
    targets: list[Literal["kv", "kv+ffn"]] = Field(default=["kv+ffn", "kv"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all"], min_length=1)


class IA3Space:
    name = "ia3"
    options = IA3Options

    def supports(self, info: ModelInfo) -> str | None:
        return None if info.key_value else "no key/value projections were found"

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, IA3Options)
        targets = str(trial.suggest_categorical("ia3.targets", options.targets))
        subset = str(trial.suggest_categorical("ia3.layers", options.layers))
        layers = info.layer_indices(subset)
        feedforward = info.mlp_down if targets == "kv+ffn" else ()
        # peft's IA3Config has no layers_to_transform: a subset is named layer by layer.
        names = info.target_modules if subset == "all" else info.per_layer_modules
        config = {
            "peft_type": "IA3",
            "task_type": info.task_type,
            "target_modules": names(info.key_value + feedforward, layers),
            "feedforward_modules": names(feedforward, layers),
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"targets": targets, "layers": subset},
        )


register(IA3Space())
