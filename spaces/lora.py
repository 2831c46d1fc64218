"""LoRA (Hu et al., 2021): low-rank updates on chosen linear layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.spaces._placement import (
    Probability,
    RankedOptions,
    describe_placement,
    ranked_calibration,
    suggest_placement,
    suggest_rank,
)
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

__all__ = ["LoraOptions", "LoraSpace"]


class LoraOptions(RankedOptions):
    """``space.lora`` (and ``space.dora``).

    Args:
        lr: set for search trials of tens to hundreds of steps, by evidence: in the
            measured SST-2 table (60 steps, benchmarks/peft_table.py) LoRA and DoRA at 2e-4
            and 7e-4 stayed at chance, 2.7e-3 was best and 1e-2 diverged half the time.
            Long LLM runs want ~1e-4 to 3e-4: set ``lr`` for those.
        dropout: LoRA dropout values to try, in [0, 1).
    """

    lr: LearningRateRange = LearningRateRange(low=1e-3, high=6e-3)
    dropout: list[Probability] = Field(default=[0.0, 0.1], min_length=1)


class LoraSpace(MethodSpaceBase):
    """LoRA, and with ``use_dora`` its weight-decomposed variant DoRA."""

    options: type[LoraOptions] = LoraOptions
    mergeable = True

    def __init__(self, name: str = "lora", display_name: str = "LoRA", use_dora: bool = False):
        self.name = name
        self.display_name = display_name
        self.use_dora = use_dora

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

    def describe(self, summary: dict[str, Any]) -> str:
        return describe_placement(summary)

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {
            "peft_type": "LORA",
            "lora_alpha": 16,
            "use_dora": self.use_dora,
            **ranked_calibration(info),
        }


register(LoraSpace())
