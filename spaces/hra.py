"""HRA (Yuan et al., 2024): the weight is multiplied by a chain of r Householder
reflections, trained as r vectors per adapted layer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from peftsearch.spaces._placement import PlacedOptions, PlacedRankSpace, Rank, describe_placement
from peftsearch.spaces._registry import LearningRateRange, register

__all__ = ["HraOptions", "HraSpace"]


def _even(rank: int) -> int:
    if rank % 2:
        raise ValueError(f"HRA's rank must be even (peft pairs its reflections), not {rank}")
    return rank


class HraOptions(PlacedOptions):
    """``space.hra``.

    Args:
        lr: in the SST-2 table's variant rows (60 steps, benchmarks/peft_table.py
            --variants) 1e-3 stayed at chance, 5.5e-3 learned (best 0.754) and 3e-2 best
            (0.785): the range spans the upper two.
        rank: the number of Householder reflections, even (peft initialises them in
            pairs so the product starts as the identity).
    """

    lr: LearningRateRange = LearningRateRange(low=8e-3, high=4e-2)
    rank: list[Annotated[Rank, AfterValidator(_even)]] = Field(default=[4, 8, 16], min_length=1)


class HraSpace(PlacedRankSpace):
    name = "hra"
    display_name = "HRA"
    options = HraOptions
    mergeable = True
    peft_type = "HRA"

    def describe(self, summary: dict[str, Any]) -> str:
        placement = describe_placement({k: v for k, v in summary.items() if k != "rank"})
        return f"{summary.get('rank')} reflections {placement}".strip()


register(HraSpace())
