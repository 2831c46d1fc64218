"""Prefix tuning (Li & Liang, 2021): trainable key/value prefixes in every layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

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

__all__ = ["PrefixTuningOptions", "PrefixTuningSpace"]


class PrefixTuningOptions(MethodOptions):
    lr: LearningRateRange = LearningRateRange(low=1e-3, high=5e-2)
    num_virtual_tokens: list[int] = Field(default=[8, 16, 32], min_length=1)
    prefix_projection: list[bool] = Field(default=[False], min_length=1)


class PrefixTuningSpace:
    name = "prefix_tuning"
    options = PrefixTuningOptions

    def supports(self, info: ModelInfo) -> str | None:
        if not info.decoder_only:
            return f"it needs a decoder with a KV cache, and {info.model_type} is an encoder"
        if not info.takes_past_key_values:
            return (
                f"peft passes the prefix as `past_key_values`, which this transformers "
                f"version's {info.model_type} classifier no longer accepts"
            )
        return None

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, PrefixTuningOptions)
        tokens = int(
            trial.suggest_categorical(
                "prefix_tuning.num_virtual_tokens", options.num_virtual_tokens
            )
        )
        projection = bool(
            trial.suggest_categorical("prefix_tuning.prefix_projection", options.prefix_projection)
        )
        config = {
            "peft_type": "PREFIX_TUNING",
            "task_type": info.task_type,
            "num_virtual_tokens": tokens,
            "prefix_projection": projection,
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"num_virtual_tokens": tokens, "prefix_projection": projection},
        )


register(PrefixTuningSpace())
