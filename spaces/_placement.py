"""Where an adapter goes: which linear layers and which blocks. Shared by the
rank-based methods (LoRA, DoRA, LoHa, LoKr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from peftsearch.spaces._registry import MethodOptions

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["LayerSubset", "RankedOptions", "TargetSet", "suggest_placement"]

TargetSet = Literal["qv", "attention", "attention+mlp"]
LayerSubset = Literal["all", "top-half", "top-quarter", "bottom-half"]


class RankedOptions(MethodOptions):
    """Choices shared by low-rank methods; every list is a categorical search dimension."""

    rank: list[int] = Field(default=[4, 8, 16], min_length=1)
    alpha_ratio: list[float] = Field(default=[1.0, 2.0], min_length=1)
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
