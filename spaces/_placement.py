"""Where an adapter goes: which linear layers and which blocks. Shared by the
rank-based methods (LoRA, DoRA, LoHa, LoKr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from peftsearch.spaces._registry import MethodOptions

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = [
    "LAYER_WORDS",
    "TARGET_WORDS",
    "LayerSubset",
    "RankedOptions",
    "TargetSet",
    "describe_placement",
    "ranked_calibration",
    "suggest_placement",
]

TargetSet = Literal["qv", "attention", "attention+mlp"]
LayerSubset = Literal["all", "top-half", "top-quarter", "bottom-half"]
Rank = Annotated[int, Field(ge=1, le=4096)]
Probability = Annotated[float, Field(ge=0, lt=1)]

TARGET_WORDS = {
    "qv": "query/value projections",
    "attention": "all attention projections",
    "attention+mlp": "attention and MLP layers",
}
LAYER_WORDS = {
    "all": "every layer",
    "top-half": "the top half of the layers",
    "top-quarter": "the top quarter of the layers",
    "bottom-half": "the bottom half of the layers",
}


class RankedOptions(MethodOptions):
    """Choices shared by low-rank methods; every list is a categorical search dimension.

    Args:
        rank: adapter ranks to try (1 to 4096).
        alpha_ratio: scaling alpha as a multiple of the rank (> 0), so alpha/r stays
            comparable across ranks.
        targets: which linear layers of a block carry the adapter.
        layers: which blocks carry it.
    """

    rank: list[Rank] = Field(default=[4, 8, 16], min_length=1)
    alpha_ratio: list[Annotated[float, Field(gt=0, le=64)]] = Field(
        default=[1.0, 2.0], min_length=1
    )
    targets: list[TargetSet] = Field(default=["qv", "attention", "attention+mlp"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all", "top-half"], min_length=1)


def suggest_placement(
    trial: optuna.Trial, method: str, targets: list[str], layers: list[str], info: ModelInfo
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample a target set and layer subset; return peft kwargs and a readable summary."""
    target_set = trial.suggest_categorical(f"{method}.targets", targets)
    layer_subset = trial.suggest_categorical(f"{method}.layers", layers)
    layer_ids = info.layer_indices(str(layer_subset))
    modules = info.target_modules(info.target_set(str(target_set)), layer_ids)
    kwargs: dict[str, Any] = {
        "target_modules": modules,
        "layers_to_transform": layer_ids,
        "layers_pattern": info.layers_pattern,
    }
    summary = {"targets": target_set, "layers": layer_subset}
    return kwargs, summary


def suggest_rank(trial: optuna.Trial, method: str, options: RankedOptions) -> tuple[int, float]:
    """Rank and alpha; alpha is searched as a ratio so the LoRA scale alpha/r stays comparable."""
    rank = int(trial.suggest_categorical(f"{method}.rank", options.rank))
    ratio = float(trial.suggest_categorical(f"{method}.alpha_ratio", options.alpha_ratio))
    return rank, rank * ratio


def describe_placement(summary: dict[str, Any]) -> str:
    """``rank 8 on all attention projections in the top half of the layers``."""
    words = []
    if "rank" in summary:
        words.append(f"rank {summary['rank']}")
    if "targets" in summary:
        words.append(f"on {TARGET_WORDS.get(summary['targets'], summary['targets'])}")
    if "layers" in summary:
        words.append(f"in {LAYER_WORDS.get(summary['layers'], summary['layers'])}")
    return " ".join(words)


def ranked_calibration(info: ModelInfo) -> dict[str, Any]:
    """Rank 8 on the query/value projections of every layer: a typical low-rank trial."""
    layers = list(range(info.num_layers))
    return {
        "task_type": info.task_type,
        "r": 8,
        "target_modules": info.target_modules(info.query_value or info.attention, layers),
    }
