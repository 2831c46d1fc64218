"""Prefix tuning (Li & Liang, 2021): trainable key/value prefixes in every layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    MethodSpaceBase,
    PeftChoice,
    register,
    suggest_lr,
)
from peftsearch.spaces.prompt_tuning import VirtualTokens

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["PrefixTuningOptions", "PrefixTuningSpace"]


class PrefixTuningOptions(MethodOptions):
    """``space.prefix_tuning``.

    Args:
        num_virtual_tokens: prefix lengths to try (1 to 1024).
        prefix_projection: whether the prefix goes through a trained MLP first.
    """

    lr: LearningRateRange = LearningRateRange(low=1e-3, high=5e-2)
    num_virtual_tokens: list[VirtualTokens] = Field(default=[8, 16, 32], min_length=1)
    prefix_projection: list[bool] = Field(default=[False], min_length=1)


class PrefixTuningSpace(MethodSpaceBase):
    name = "prefix_tuning"
    display_name = "prefix tuning"
    options = PrefixTuningOptions

    def supports(self, info: ModelInfo) -> str | None:
        if not info.decoder_only:
            return f"it needs a decoder with a KV cache, and {info.model_type} is an encoder"
        if info.task_type == "CAUSAL_LM":
            # peft's causal-LM path hands the prefix over as `past_key_values`, which
            # transformers 5 still maps onto `cache` (tests/test_lm.py trains and generates)
            return None
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
        return PeftChoice(
            method=self.name,
            peft_config=self._config(info, tokens, projection),
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"num_virtual_tokens": tokens, "prefix_projection": projection},
        )

    @staticmethod
    def _config(info: ModelInfo, tokens: int, projection: bool) -> dict[str, Any]:
        return {
            "peft_type": "PREFIX_TUNING",
            "task_type": info.task_type,
            "num_virtual_tokens": tokens,
            "prefix_projection": projection,
        }

    def describe(self, summary: dict[str, Any]) -> str:
        through = " through an MLP" if summary.get("prefix_projection") else ""
        return f"with {summary.get('num_virtual_tokens')} virtual tokens{through}"

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return self._config(info, 16, False)


register(PrefixTuningSpace())
