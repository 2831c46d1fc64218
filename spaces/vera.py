"""VeRA (Kopiczko et al., 2024): one pair of frozen random matrices shared by every
adapted layer, and per layer only two trained scaling vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from peftsearch.spaces._placement import PlacedOptions, PlacedRankSpace, Probability, Rank
from peftsearch.spaces._registry import LearningRateRange, MethodOptions, pick, register

if TYPE_CHECKING:
    import optuna

__all__ = ["VeraOptions", "VeraSpace"]


class VeraOptions(PlacedOptions):
    """``space.vera``.

    Args:
        lr: VeRA trains only scaling vectors, so it wants a learning rate well above
            LoRA's (the paper used 1e-2 to 4e-2 on RoBERTa); set from the SST-2 table's
            variant rows (benchmarks/peft_table.py --variants).
        rank: the rank of the shared random matrices. It costs memory, not trained
            parameters (those are rank + output features per layer).
        dropout: VeRA dropout values to try, in [0, 1).
    """

    lr: LearningRateRange = LearningRateRange(low=1e-2, high=6e-2)
    rank: list[Rank] = Field(default=[64, 256], min_length=1)
    dropout: list[Probability] = Field(default=[0.0], min_length=1)


class VeraSpace(PlacedRankSpace):
    name = "vera"
    display_name = "VeRA"
    options = VeraOptions
    mergeable = True
    peft_type = "VERA"
    calibration_rank = 64

    def method_config(self, trial: optuna.Trial, options: MethodOptions) -> dict[str, Any]:
        assert isinstance(options, VeraOptions)
        return {
            "vera_dropout": float(pick(trial, "vera.dropout", options.dropout)),
            # the shared matrices are saved with the adapter: it loads without
            # regenerating them from the seed (peft's default, kept explicit)
            "save_projection": True,
        }


register(VeraSpace())
