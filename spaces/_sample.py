"""The conditional (define-by-run) space: pick a method, then that method's knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftsearch.spaces._registry import MethodOptions, PeftChoice, get_method

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["sample_choice"]


def sample_choice(
    trial: optuna.Trial,
    methods: dict[str, MethodOptions],
    info: ModelInfo,
    quantizations: tuple[str, ...] = ("none",),
) -> PeftChoice:
    """Sample ``method`` first; only the chosen method's parameters exist in the trial.
    With more than one of ``quantizations`` (model.quantization as a list), the base's
    storage is a searched dimension too."""
    names = list(methods)
    method = str(trial.suggest_categorical("method", names)) if len(names) > 1 else names[0]
    choice = get_method(method).suggest(trial, methods[method], info)
    if len(quantizations) == 1:
        return choice.model_copy(update={"quantization": quantizations[0]})
    quantization = str(trial.suggest_categorical("quantization", list(quantizations)))
    summary = {**choice.summary, "base": quantization}
    return choice.model_copy(update={"quantization": quantization, "summary": summary})
