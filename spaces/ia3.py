"""IA3 (Liu et al., 2022): learned rescaling of keys, values and the FFN activation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

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

__all__ = ["IA3Options", "IA3Space"]

TARGET_WORDS = {
    "kv": "keys and values",
    "kv+ffn": "keys, values and the feed-forward activation",
}


class IA3Options(MethodOptions):
    """``space.ia3``.

    Args:
        lr: IA3 has ~1 parameter per hidden unit, so it needs far larger steps than LoRA
            (measured at 60 steps: 1e-2 and below stayed near chance, 3e-2 to 1e-1 learned).
        targets: rescale keys and values, or also the feed-forward activation.
        layers: which blocks carry the rescaling vectors.
    """

    lr: LearningRateRange = LearningRateRange(low=2e-2, high=1.5e-1)
    targets: list[Literal["kv", "kv+ffn"]] = Field(default=["kv+ffn", "kv"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all"], min_length=1)


class IA3Space(MethodSpaceBase):
    name = "ia3"
    display_name = "IA3"
    options = IA3Options
    mergeable = True

    def supports(self, info: ModelInfo) -> str | None:
        return None if info.key_value else "no key/value projections were found"

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, IA3Options)
        targets = str(trial.suggest_categorical("ia3.targets", options.targets))
        subset = str(trial.suggest_categorical("ia3.layers", options.layers))
        return PeftChoice(
            method=self.name,
            peft_config=self._config(info, targets, info.layer_indices(subset), subset == "all"),
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"targets": targets, "layers": subset},
        )

    @staticmethod
    def _config(info: ModelInfo, targets: str, layers: list[int], every: bool) -> dict[str, Any]:
        feedforward = info.mlp_down if targets == "kv+ffn" else ()
        # peft's IA3Config has no layers_to_transform: a subset is named layer by layer.
        names = info.target_modules if every else info.per_layer_modules
        return {
            "peft_type": "IA3",
            "task_type": info.task_type,
            "target_modules": names(info.key_value + feedforward, layers),
            "feedforward_modules": names(feedforward, layers),
        }

    def describe(self, summary: dict[str, Any]) -> str:
        targets = TARGET_WORDS.get(summary.get("targets", ""), summary.get("targets"))
        layers = layer_words(str(summary.get("layers", "")))
        return f"on {targets} in {layers}"

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return self._config(info, "kv+ffn", list(range(info.num_layers)), True)


register(IA3Space())
