"""A method added the way a contributor adds one: this file alone, written like those in
``spaces/``. LoRA on the MLP layers only, under its own name (tests/test_plugin.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.spaces import (
    LearningRateRange,
    MethodOptions,
    MethodSpaceBase,
    PeftChoice,
    register,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces import ModelInfo

NAME = "mlp_lora"


class MlpLoraOptions(MethodOptions):
    """``space.mlp_lora``.

    Args:
        rank: ranks to try.
    """

    lr: LearningRateRange = LearningRateRange(low=5e-3, high=2e-2)
    rank: list[int] = Field(default=[2, 4], min_length=1)


class MlpLoraSpace(MethodSpaceBase):
    name = NAME
    display_name = "MLP-only LoRA"
    options = MlpLoraOptions
    mergeable = True

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, MlpLoraOptions)
        rank = int(trial.suggest_categorical(f"{NAME}.rank", options.rank))
        lr = trial.suggest_float(f"{NAME}.lr", options.lr.low, options.lr.high, log=True)
        return PeftChoice(
            method=NAME,
            peft_config=self._config(info, rank),
            learning_rate=lr,
            summary={"rank": rank},
        )

    def _config(self, info: ModelInfo, rank: int) -> dict[str, Any]:
        layers = list(range(info.num_layers))
        return {
            "peft_type": "LORA",
            "task_type": info.task_type,
            "r": rank,
            "lora_alpha": 2 * rank,
            "target_modules": info.target_modules(info.mlp, layers),
        }

    def describe(self, summary: dict[str, Any]) -> str:
        return f"rank {summary['rank']} on the feed-forward layers only"

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return self._config(info, 4)


register(MlpLoraSpace())
