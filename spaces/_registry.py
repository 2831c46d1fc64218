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
    "MethodSpaceBase",
    "PeftChoice",
    "get_method",
    "method_names",
    "pick",
    "register",
    "suggest_lr",
    "unregister",
]


class LearningRateRange(BaseModel):
    """A log-uniform learning-rate interval; each method needs its own scale.

    Args:
        low: smallest learning rate tried (> 0).
        high: largest learning rate tried (above low, at most 1).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    low: float = Field(gt=0, le=1)
    high: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> LearningRateRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class MethodOptions(BaseModel):
    """Base of each method's ``space.<method>`` config section, validated as strictly as
    the core config: unknown keys, non-finite numbers and out-of-range values fail.

    Args:
        lr: the learning-rate range searched for this method.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
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
    quantization: str = "none"  # the base it trains on (model.quantization)
    # LoRA+ (peft.optimizers.create_loraplus_optimizer): B's learning rate over A's
    loraplus_lr_ratio: float | None = None


class MethodSpace(Protocol):
    """Contract of a search-space plug-in: everything method-specific lives in it.

    ``name`` is the key users write in ``space.methods`` and ``space.<name>``.
    ``display_name`` is how reports and recommendations name the method. ``options`` is
    the pydantic model of that section; its defaults must be a sound space for a
    typical transformer. ``mergeable`` says whether peft can merge the adapter into the
    base weights (``export --merge``). ``supports`` returns ``None`` when the method can
    run on the model, or a one-line reason why not; ``supports_quantization`` the same for
    a base stored as ``nf4``, ``fp4`` or ``int8`` (model.quantization). ``suggest`` samples with
    define-by-run calls on ``trial`` (parameter names prefixed with ``name`` so methods
    never collide) and returns a ``PeftChoice``. ``describe`` says a choice's
    ``summary`` in plain words. ``calibration_config`` is a typical peft config of the
    method, which the cost calibration trains for a few steps. ``initial_configs`` gives
    the Optuna params (without ``method``) a search tries first for this method, each one
    that ``suggest`` can express (spaces/_initial_design.py). Nothing may import torch
    or peft at module import time: the CLI imports every plug-in to build the config
    schema.
    """

    name: str
    display_name: str
    options: type[MethodOptions]
    mergeable: bool

    def supports(self, info: ModelInfo) -> str | None: ...

    def supports_quantization(self, quantization: str) -> str | None: ...

    def suggest(
        self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo
    ) -> PeftChoice: ...

    def describe(self, summary: dict[str, Any]) -> str: ...

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]: ...

    def initial_configs(self, options: MethodOptions, info: ModelInfo) -> list[dict[str, Any]]: ...


class MethodSpaceBase:
    """Defaults for a plug-in: runs on any model, cannot merge, settings said as
    ``key value`` pairs. Subclasses set ``name``, ``display_name`` and ``options`` and
    implement ``suggest`` and ``calibration_config``."""

    name: str
    display_name: str
    options: type[MethodOptions]
    mergeable: bool = False

    def supports(self, info: ModelInfo) -> str | None:
        return None

    def supports_quantization(self, quantization: str) -> str | None:
        """peft wraps bitsandbytes' layers for most methods (LoRA, DoRA, IA3, prompts)."""
        return None

    def describe(self, summary: dict[str, Any]) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items() if k != "lr")

    def initial_configs(self, options: MethodOptions, info: ModelInfo) -> list[dict[str, Any]]:
        """The smallest adapter per placement at the top learning rate; a plug-in whose
        knobs do not follow ``<name>.<option field>`` overrides this."""
        from peftsearch.spaces._initial_design import smallest_configs

        return smallest_configs(self.name, options, info)


_METHODS: dict[str, MethodSpace] = {}


def register(space: MethodSpace) -> MethodSpace:
    """Add a method by its name; its ``space.<name>`` section appears in the config."""
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


def unregister(name: str) -> None:
    """Remove a method (tests that register throwaway methods clean up with this)."""
    _METHODS.pop(name, None)


def suggest_lr(trial: optuna.Trial, method: str, lr: LearningRateRange) -> float:
    return trial.suggest_float(f"{method}.lr", lr.low, lr.high, log=True)


def pick(trial: optuna.Trial, name: str, values: list[Any]) -> Any:
    """A categorical knob, searched only when it offers a choice: a single value is
    used as it is and stays out of the trial's params (and the sampler's model)."""
    if len(values) == 1:
        return values[0]
    return trial.suggest_categorical(name, values)
