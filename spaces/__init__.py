"""Search spaces: an Optuna trial becomes a peft config.

Each PEFT method is one module in this package that calls ``register``; every public
module here is imported on first use, so adding a method touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from peftsearch.spaces._initial_design import initial_design
from peftsearch.spaces._model_info import (
    LAYER_SUBSETS,
    TARGET_SETS,
    ModelInfo,
    find_blocks,
    inspect_model,
)
from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    MethodSpace,
    MethodSpaceBase,
    PeftChoice,
    get_method,
    method_names,
    register,
    unregister,
)
from peftsearch.spaces._sample import sample_choice

__all__ = [
    "LAYER_SUBSETS",
    "TARGET_SETS",
    "LearningRateRange",
    "MethodOptions",
    "MethodSpace",
    "MethodSpaceBase",
    "ModelInfo",
    "PeftChoice",
    "find_blocks",
    "get_method",
    "initial_design",
    "inspect_model",
    "method_names",
    "register",
    "sample_choice",
    "unregister",
]


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()
