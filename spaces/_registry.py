"""Registry of search-space methods: one plug-in per PEFT method, registered by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = [
    "LearningRateRange",
    "MethodOptions",
    "MethodSpace",
    "PeftChoice",
    "get_method",
    "method_names",
    "register",
    "suggest_lr",
]


class LearningRateRange(BaseModel):
    """A log-uniform learning-rate interval; each method needs its own scale."""

    model_config = ConfigDict(extra="forbid")
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LearningRateRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class MethodOptions(BaseModel):
    """Base of each method's ``space.<method>`` config section."""

    model_config = ConfigDict(extra="forbid")
    lr: LearningRateRange


class PeftChoice(BaseModel):
    """What a trial sampled: a serialisable peft config plus the training knobs.

    ``peft_config`` is the dict that ``peft.get_peft_config`` accepts, so it travels to
    workers as plain data and round-trips through ``adapter_config.json``.
    """

    model_config = ConfigDict(extra="forbid")
    method: str
    peft_config: dict[str, Any]
    learning_rate: float
    summary: dict[str, Any] = Field(default_factory=dict)


class MethodSpace(Protocol):
    """Contract of a search-space plug-in.

    ``name`` is the key users write in ``space.methods`` and ``space.<name>``.
    ``options`` is the pydantic model of that section; its defaults must be a sound
    space for a typical transformer. ``suggest`` samples with define-by-run calls on
    ``trial`` (parameter names prefixed with ``name`` so methods never collide) and
    returns a ``PeftChoice``. ``supports`` returns ``None`` when the method can run on
    the model, or a one-line reason why not. Neither may import torch or peft at module
    import time: the CLI imports every plug-in to build the config schema.
    """

    name: str
    options: type[MethodOptions]

    def supports(self, info: ModelInfo) -> str | None: ...

    def suggest(
        self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo
    ) -> PeftChoice: ...


_METHODS: dict[str, MethodSpace] = {}


def register(space: MethodSpace) -> MethodSpace:
    if space.name in _METHODS:
        raise ValueError(f"search-space method {space.name!r} is registered twice")
    _METHODS[space.name] = space
    return space


def get_method(name: str) -> MethodSpace:
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise KeyError(f"unknown method {name!r}; known methods: {known}") from None


def method_names() -> list[str]:
    return sorted(_METHODS)


def suggest_lr(trial: optuna.Trial, method: str, lr: LearningRateRange) -> float:
    return trial.suggest_float(f"{method}.lr", lr.low, lr.high, log=True)
