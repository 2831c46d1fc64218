"""The initial design: the configs a search tries before its sampler takes over.

A sampler's first trials are random draws (TPE's start-up trials), and in short search
trials most random draws learn nothing: a large adapter at a high learning rate diverges,
a small one at a low rate barely moves. The two measured tables (benchmarks/peft_table.py)
show one pattern on both tasks: the smallest adapter of a method at the top of its
learning-rate range learns, and it is the cheap end of the front. So the design is, for
each method and each placement it offers (target set), the smallest adapter its options
allow (fewest blocks, lowest rank, fewest virtual tokens, no dropout) at the top of its
learning-rate range. The sampler then searches on from these trials. A task may name
methods whose design spans the most blocks instead (``design_most_blocks``: on the
causal-LM table, LoRA on the top half of a decoder's blocks stays near chance).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.spaces._model_info import ModelInfo
    from peftsearch.spaces._registry import MethodOptions

__all__ = ["initial_design", "smallest_configs"]

# knobs whose smallest value gives the smallest (or plainest) adapter
SMALLEST = frozenset({"rank", "num_virtual_tokens", "bottleneck_size"})
# short trials learn faster without dropout
NO_DROPOUT = frozenset({"dropout", "module_dropout", "rank_dropout"})
# one config of the design per listed value
PLACEMENTS = frozenset({"targets", "placement"})
# the alpha/rank ratio the default learning-rate ranges were measured at
ALPHA_RATIO = 2.0


def smallest_configs(method: str, options: MethodOptions, info: ModelInfo) -> list[dict[str, Any]]:
    """Optuna params (``<method>.<knob>``, without ``method``) of the method's design:
    one config per placement, in the order the options list them."""
    fixed: dict[str, Any] = {f"{method}.lr": options.lr.high}
    placements: list[dict[str, Any]] = [{}]
    for knob, values in options:
        if not isinstance(values, list):
            continue
        if knob in PLACEMENTS:
            placements = [{f"{method}.{knob}": value} for value in values]
        else:
            fixed[f"{method}.{knob}"] = _first_value(knob, values, info)
    return [{**fixed, **placement} for placement in placements]


def _first_value(knob: str, values: list[Any], info: ModelInfo) -> Any:
    if knob in SMALLEST or knob in NO_DROPOUT:
        return min(values)
    if knob == "alpha_ratio":
        return min(values, key=lambda ratio: abs(math.log(ratio / ALPHA_RATIO)))
    if knob == "layers":
        # the fewest blocks; of equal counts the top ones, where a task is learned
        return min(values, key=lambda subset: _layer_key(subset, info))
    return values[0]


def _layer_key(subset: str, info: ModelInfo) -> tuple[int, int]:
    blocks = info.layer_indices(subset)
    return len(blocks), -min(blocks, default=0)


def initial_design(
    methods: dict[str, MethodOptions],
    info: ModelInfo,
    most_blocks: frozenset[str] = frozenset(),
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, method, params)`` of every method's design, in rounds: the first
    placement of each method, then the second of each, and so on, so that a budget which
    ends inside the design has tried every method once first. The methods in
    ``most_blocks`` (the task's ``design_most_blocks``) span the most blocks their
    ``layers`` allow instead of the fewest."""
    from peftsearch.spaces._registry import get_method

    designs = {
        method: [
            _on_most_blocks(config, method, options, info) if method in most_blocks else config
            for config in get_method(method).initial_configs(options, info)
        ]
        for method, options in methods.items()
    }
    queued = []
    for round_ in range(max((len(d) for d in designs.values()), default=0)):
        for method, configs in designs.items():
            if round_ < len(configs):
                params = {"method": method, **configs[round_]}
                queued.append((_label(method, params), method, params))
    return queued


def _on_most_blocks(
    config: dict[str, Any], method: str, options: MethodOptions, info: ModelInfo
) -> dict[str, Any]:
    """``config`` with its layer subset the one of most blocks (of equal counts, the
    first listed); unchanged when the method has no layer choice."""
    key = f"{method}.layers"
    values = getattr(options, "layers", None)
    if key not in config or not isinstance(values, list) or not values:
        return config
    most = max(values, key=lambda subset: len(info.layer_indices(subset)))
    return {**config, key: most}


def _label(method: str, params: dict[str, Any]) -> str:
    """``lora targets=qv``: the design entry, named by its placement."""
    placement = [
        f"{key.split('.', 1)[1]}={value}"
        for key, value in params.items()
        if key.split(".", 1)[-1] in PLACEMENTS
    ]
    return " ".join([method, *placement])
