"""VeRA (Kopiczko et al., 2024): one pair of frozen random matrices shared by every
adapted layer, and per layer only two trained scaling vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.spaces._placement import (
    LayerSubset,
    Probability,
    Rank,
    TargetSet,
    describe_placement,
    ranked_calibration,
    suggest_placement,
)
from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    MethodSpaceBase,
    PeftChoice,
    pick,
    register,
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["VeraOptions", "VeraSpace"]


class VeraOptions(MethodOptions):
    """``space.vera``.

    Args:
        lr: VeRA trains only scaling vectors, so it wants a learning rate well above
            LoRA's (the paper used 1e-2 to 4e-2 on RoBERTa); set from the SST-2 table's
            variant rows (benchmarks/peft_table.py --variants).
        rank: the rank of the shared random matrices. It costs memory, not trained
            parameters (those are rank + output features per layer).
        targets: which linear layers of a block carry the adapter.
        layers: which blocks carry it.
        dropout: VeRA dropout values to try, in [0, 1).
    """

    lr: LearningRateRange = LearningRateRange(low=1e-2, high=6e-2)
    rank: list[Rank] = Field(default=[64, 256], min_length=1)
    targets: list[TargetSet] = Field(default=["qv", "attention+mlp"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all", "top-half"], min_length=1)
    dropout: list[Probability] = Field(default=[0.0], min_length=1)


class VeraSpace(MethodSpaceBase):
    name = "vera"
    display_name = "VeRA"
    options = VeraOptions
    mergeable = True

    def supports_quantization(self, quantization: str) -> str | None:
        return None if quantization == "none" else "peft's VeRA trains on nn.Linear bases"

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, VeraOptions)
        rank = int(trial.suggest_categorical("vera.rank", options.rank))
        dropout = float(pick(trial, "vera.dropout", options.dropout))
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {
            "peft_type": "VERA",
            "task_type": info.task_type,
            "r": rank,
            "vera_dropout": dropout,
            # the shared matrices are saved with the adapter: it loads without
            # regenerating them from the seed (peft's default, kept explicit)
            "save_projection": True,
            **placement,
        }
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, **summary},
        )

    def describe(self, summary: dict[str, Any]) -> str:
        return describe_placement(summary)

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {"peft_type": "VERA", **ranked_calibration(info), "r": 64}


register(VeraSpace())
