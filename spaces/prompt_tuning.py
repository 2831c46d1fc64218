"""Prompt tuning (Lester et al., 2021): trainable virtual tokens before the input."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

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

__all__ = ["PromptTuningOptions", "PromptTuningSpace"]


class PromptTuningOptions(MethodOptions):
    # Soft prompts train from scratch through a frozen network: they need LRs ~100x LoRA's.
    lr: LearningRateRange = LearningRateRange(low=1e-2, high=3e-1)
    num_virtual_tokens: list[int] = Field(default=[8, 16, 32], min_length=1)
    init: list[Literal["random", "sample_vocab"]] = Field(
        default=["sample_vocab", "random"], min_length=1
    )


class PromptTuningSpace:
    name = "prompt_tuning"
    options = PromptTuningOptions

    def supports(self, info: ModelInfo) -> str | None:
        return None

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, PromptTuningOptions)
        tokens = int(
            trial.suggest_categorical(
                "prompt_tuning.num_virtual_tokens", options.num_virtual_tokens
            )
        )
        init = str(trial.suggest_categorical("prompt_tuning.init", options.init))
        config = {
            "peft_type": "PROMPT_TUNING",
            "task_type": info.task_type,
            "num_virtual_tokens": tokens,
            "prompt_tuning_init": init.upper(),
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"num_virtual_tokens": tokens, "init": init},
        )


register(PromptTuningSpace())
