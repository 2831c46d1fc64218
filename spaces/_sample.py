"""The conditional (define-by-run) space: pick a method, then that method's knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftsearch.spaces._registry import MethodOptions, PeftChoice, get_method

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["sample_choice"]


def sample_choice(
    trial: optuna.Trial, methods: dict[str, MethodOptions], info: ModelInfo
) -> PeftChoice:
    """Sample ``method`` first; only the chosen method's parameters exist in the trial."""
    names = list(methods)
    method = str(trial.suggest_categorical("method", names)) if len(names) > 1 else names[0]
    return get_method(method).suggest(trial, methods[method], info)
