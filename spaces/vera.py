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
            LoRA's. In the SST-2 table's variant rows (60 steps, benchmarks/peft_table.py
            --variants) 3e-3 stayed at chance (best 0.508), 1.7e-2 barely learned (0.613)
            and 1e-1 learned (0.805, LoRA's best there): the range sits around 1e-1.
        rank: the rank of the shared random matrices. It costs memory, not trained
            parameters (those are rank + output features per layer).
        dropout: VeRA dropout values to try, in [0, 1).
    """

    lr: LearningRateRange = LearningRateRange(low=5e-2, high=1.2e-1)
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
