"""LoHa and LoKr (LyCORIS): Hadamard- and Kronecker-product low-rank updates."""

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
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["LycorisOptions", "LycorisSpace"]


class LycorisOptions(RankedOptions):
    """``space.loha`` and ``space.lokr``.

    Args:
        lr: in the measured SST-2 table (60 steps) LoHa and LoKr learned only at the top
            of the old range (5e-3; 1.4e-3 and below stayed at chance).
        module_dropout: chance of skipping a whole adapted module in a step, in [0, 1).
    """

    lr: LearningRateRange = LearningRateRange(low=2e-3, high=1e-2)
    module_dropout: list[Probability] = Field(default=[0.0], min_length=1)


class LycorisSpace(MethodSpaceBase):
    """One class for both: they share every knob and differ only in ``peft_type``."""

    options: type[LycorisOptions] = LycorisOptions
    mergeable = True

    def __init__(self, name: str, display_name: str, peft_type: str) -> None:
        self.name = name
        self.display_name = display_name
        self.peft_type = peft_type

    def supports_quantization(self, quantization: str) -> str | None:
        # checked here: 4-bit fails on the packed weight's shape; int8 runs but peft has
        # no bitsandbytes LoHa/LoKr layer, so merging would write into int8 storage
        return "peft has no bitsandbytes layer for it (only full-precision nn.Linear)"

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, LycorisOptions)
        rank, alpha = suggest_rank(trial, self.name, options)
        module_dropout = float(
            trial.suggest_categorical(f"{self.name}.module_dropout", options.module_dropout)
        )
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {
            "peft_type": self.peft_type,
            "task_type": info.task_type,
            "r": rank,
            "alpha": alpha,
            "module_dropout": module_dropout,
            **placement,
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, "alpha": alpha, **summary},
        )

    def describe(self, summary: dict[str, Any]) -> str:
        return describe_placement(summary)

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {"peft_type": self.peft_type, "alpha": 16, **ranked_calibration(info)}
