"""HRA (Yuan et al., 2024): the weight is multiplied by a chain of r Householder
reflections, trained as r vectors per adapted layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field

from peftsearch.spaces._placement import (
    LayerSubset,
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
    register,
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["HraOptions", "HraSpace"]


def _even(rank: int) -> int:
    if rank % 2:
        raise ValueError(f"HRA's rank must be even (peft pairs its reflections), not {rank}")
    return rank


class HraOptions(MethodOptions):
    """``space.hra``.

    Args:
        lr: set from the SST-2 table's variant rows (benchmarks/peft_table.py --variants).
        rank: the number of Householder reflections, even (peft initialises them in
            pairs so the product starts as the identity).
        targets: which linear layers of a block carry the adapter.
        layers: which blocks carry it.
    """

    lr: LearningRateRange = LearningRateRange(low=2e-3, high=2e-2)
    rank: list[Annotated[Rank, AfterValidator(_even)]] = Field(default=[4, 8, 16], min_length=1)
    targets: list[TargetSet] = Field(default=["qv", "attention+mlp"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all", "top-half"], min_length=1)


class HraSpace(MethodSpaceBase):
    name = "hra"
    display_name = "HRA"
    options = HraOptions
    mergeable = True

    def supports_quantization(self, quantization: str) -> str | None:
        return None if quantization == "none" else "peft's HRA trains on nn.Linear bases"

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, HraOptions)
        rank = int(trial.suggest_categorical("hra.rank", options.rank))
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {"peft_type": "HRA", "task_type": info.task_type, "r": rank, **placement}
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, **summary},
        )

    def describe(self, summary: dict[str, Any]) -> str:
        placement = describe_placement({k: v for k, v in summary.items() if k != "rank"})
        return f"{summary.get('rank')} reflections {placement}".strip()

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {"peft_type": "HRA", **ranked_calibration(info)}


register(HraSpace())
