"""LoRA (Hu et al., 2021): low-rank updates on chosen linear layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from peftsearch.spaces._placement import RankedOptions, suggest_placement, suggest_rank
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

__all__ = ["LoraOptions", "LoraSpace"]


class LoraOptions(RankedOptions):
    # Wide on purpose: short searches on small models want ~5e-3, long LLM runs ~2e-4.
    lr: LearningRateRange = LearningRateRange(low=2e-4, high=1e-2)
    dropout: list[float] = Field(default=[0.0, 0.1], min_length=1)


class LoraSpace:
    """LoRA, and with ``use_dora`` its weight-decomposed variant DoRA."""

    options: type[LoraOptions] = LoraOptions

    def __init__(self, name: str = "lora", use_dora: bool = False) -> None:
        self.name = name
        self.use_dora = use_dora

    def supports(self, info: ModelInfo) -> str | None:
        return None

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, LoraOptions)
        rank, alpha = suggest_rank(trial, self.name, options)
        dropout = float(trial.suggest_categorical(f"{self.name}.dropout", options.dropout))
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {
            "peft_type": "LORA",
            "task_type": info.task_type,
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": dropout,
            "use_dora": self.use_dora,
            **placement,
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, "alpha": alpha, "dropout": dropout, **summary},
        )


register(LoraSpace())
