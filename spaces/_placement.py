"""Where an adapter goes: which linear layers and which blocks. Shared by the
rank-based methods (LoRA, DoRA, LoHa, LoKr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from peftsearch.spaces._model_info import LAYER_SUBSETS, top_count
from peftsearch.spaces._registry import MethodOptions, MethodSpaceBase, PeftChoice, suggest_lr

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = [
    "LAYER_WORDS",
    "TARGET_WORDS",
    "LayerSubset",
    "PlacedOptions",
    "PlacedRankSpace",
    "Probability",
    "Rank",
    "RankedOptions",
    "TargetSet",
    "describe_placement",
    "layer_words",
    "ranked_calibration",
    "suggest_placement",
]

TargetSet = Literal["qv", "attention", "attention+mlp"]


def _layer_subset(value: str) -> str:
    if value in LAYER_SUBSETS or top_count(value) is not None:
        return value
    raise ValueError(
        f"unknown layer subset {value!r}; choose from {', '.join(LAYER_SUBSETS)} or "
        "top-<N> (the top N blocks, e.g. top-2)"
    )


# A named subset of the blocks (spaces/_model_info.py: ModelInfo.layer_indices). Subsets
# above the lowest block let trials use the frozen-layer cache (trials/frozen_cache.py).
LayerSubset = Annotated[str, AfterValidator(_layer_subset)]
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
    "top-third": "the top third of the layers",
    "top-quarter": "the top quarter of the layers",
    "bottom-half": "the bottom half of the layers",
}


def layer_words(subset: str) -> str:
    """``top-2`` -> "the top 2 layers"; named subsets from ``LAYER_WORDS``."""
    count = top_count(subset)
    if count is not None:
        return "the top layer" if count == 1 else f"the top {count} layers"
    return LAYER_WORDS.get(subset, subset)


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
        words.append(f"in {layer_words(str(summary['layers']))}")
    return " ".join(words)


def ranked_calibration(info: ModelInfo) -> dict[str, Any]:
    """Rank 8 on the query/value projections of every layer: a typical low-rank trial."""
    layers = list(range(info.num_layers))
    return {
        "task_type": info.task_type,
        "r": 8,
        "target_modules": info.target_modules(info.query_value or info.attention, layers),
    }


class PlacedOptions(MethodOptions):
    """Options of a method with one rank-like knob on chosen linear layers (VeRA, HRA).

    Args:
        rank: the method's rank values to try (1 to 4096).
        targets: which linear layers of a block carry the adapter.
        layers: which blocks carry it.
    """

    rank: list[Rank] = Field(default=[4, 8, 16], min_length=1)
    targets: list[TargetSet] = Field(default=["qv", "attention+mlp"], min_length=1)
    layers: list[LayerSubset] = Field(default=["all", "top-half"], min_length=1)


class PlacedRankSpace(MethodSpaceBase):
    """A plug-in for a method whose peft config is ``r`` on chosen linear layers, plus
    whatever ``method_config`` adds; peft has its layers for ``nn.Linear`` only."""

    peft_type: str
    calibration_rank = 8

    def supports_quantization(self, quantization: str) -> str | None:
        if quantization == "none":
            return None
        return f"peft's {self.display_name} trains on nn.Linear bases only"

    def method_config(self, trial: optuna.Trial, options: MethodOptions) -> dict[str, Any]:
        """The method's own peft keys beyond ``r`` and the placement."""
        return {}

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, PlacedOptions)
        rank = int(trial.suggest_categorical(f"{self.name}.rank", options.rank))
        own = self.method_config(trial, options)
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {"peft_type": self.peft_type, "task_type": info.task_type, "r": rank}
        return PeftChoice(
            method=self.name,
            peft_config={**config, **own, **placement},
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, **summary},
        )

    def describe(self, summary: dict[str, Any]) -> str:
        return describe_placement(summary)

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {"peft_type": self.peft_type, **ranked_calibration(info), "r": self.calibration_rank}
