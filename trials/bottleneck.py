"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021) as a peft tuner.

Each adapter wraps a sublayer's output projection (attention output, feed-forward
output): ``y = W x``, then ``y + up(act(down(y)))`` before the block's residual and norm,
which is where Houlsby places it. ``up`` starts at zero, so training starts from the
base model exactly.

Why a peft tuner and not a format of our own: an exported adapter then is a standard
peft adapter (``get_peft_model``, ``save_pretrained``, ``PeftModel.from_pretrained``,
the trial runner, export and the model card all work unchanged). peft only registers
names that its ``PeftType`` enum lists, so ``register()`` adds ``BOTTLENECK_ADAPTER`` to
that enum first; ``tests/test_bottleneck.py`` breaks loudly if a peft upgrade changes
what that relies on. ``import peftsearch`` registers it as soon as peft is imported
(``trials/peft_methods.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.peft_types import PeftType, register_peft_method
from torch import nn

__all__ = ["NAME", "PEFT_TYPE", "BottleneckConfig", "BottleneckLayer", "BottleneckModel"]

NAME = "bottleneck_adapter"
PEFT_TYPE = NAME.upper()
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def _extend_peft_type() -> Any:
    """Add ``BOTTLENECK_ADAPTER`` to peft's ``PeftType`` (a ``str`` enum) in place."""
    if PEFT_TYPE not in PeftType.__members__:
        member = str.__new__(PeftType, PEFT_TYPE)
        member._name_ = PEFT_TYPE
        member._value_ = PEFT_TYPE
        member.__objclass__ = PeftType  # type: ignore[attr-defined]
        type.__setattr__(PeftType, PEFT_TYPE, member)
        PeftType._member_map_[PEFT_TYPE] = member
        PeftType._value2member_map_[PEFT_TYPE] = member
        PeftType._member_names_.append(PEFT_TYPE)
    return PeftType[PEFT_TYPE]


@dataclass
class BottleneckConfig(PeftConfig):
    """A serial bottleneck adapter after each targeted output projection.

    Args:
        bottleneck_size: width of the down-projection.
        target_modules: the output projections to adapt (names or a regex, as in LoRA).
        layers_to_transform / layers_pattern: restrict to these block indices.
        non_linearity: relu, gelu, silu or tanh.
        modules_to_save: extra modules trained and saved in full (a classifier's head).
    """

    bottleneck_size: int = field(default=16)
    target_modules: list[str] | str | None = field(default=None)
    layers_to_transform: list[int] | int | None = field(default=None)
    layers_pattern: list[str] | str | None = field(default=None)
    non_linearity: str = field(default="relu")
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = _extend_peft_type()
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)  # type: ignore[assignment]
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(
                f"non_linearity {self.non_linearity!r}: choose from {', '.join(ACTIVATIONS)}"
            )
        if self.bottleneck_size < 1:
            raise ValueError("bottleneck_size must be at least 1")


def _out_features(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    weight = getattr(layer, "weight", None)
    if type(layer).__name__ == "Conv1D" and weight is not None:  # GPT-2 style
        return int(weight.shape[1])
    raise ValueError(
        f"bottleneck adapters wrap linear output projections, not {type(layer).__name__}"
    )


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """The wrapped projection plus one down/act/up adapter per adapter name."""

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_size", "non_linearity")

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, bottleneck_size: int, non_linearity: str
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck_down = nn.ModuleDict({})
        self.bottleneck_up = nn.ModuleDict({})
        self.bottleneck_size: dict[str, int] = {}
        self.non_linearity: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.out_features = _out_features(base_layer)
        self.update_layer(adapter_name, bottleneck_size, non_linearity)

    def update_layer(self, adapter_name: str, bottleneck_size: int, non_linearity: str) -> None:
        down = nn.Linear(self.out_features, bottleneck_size)
        up = nn.Linear(bottleneck_size, self.out_features)
        nn.init.zeros_(up.weight)  # the adapter starts as the identity
        nn.init.zeros_(up.bias)
        self.bottleneck_down[adapter_name] = down
        self.bottleneck_up[adapter_name] = up
        self.bottleneck_size[adapter_name] = bottleneck_size
        self.non_linearity[adapter_name] = non_linearity
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(
            "a bottleneck adapter has a non-linearity between its projections, so it cannot "
            "be merged into the base weights; load it with PeftModel.from_pretrained instead"
        )

    def unmerge(self) -> None:
        """Nothing is ever merged."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down, up = self.bottleneck_down[name], self.bottleneck_up[name]
            hidden = ACTIVATIONS[self.non_linearity[name]]()(down(result.to(down.weight.dtype)))
            result = result + up(hidden).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


class BottleneckModel(BaseTuner):
    """peft's tuner for ``BottleneckConfig``: wraps each targeted module."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict[str, list[str]] = {}  # noqa: RUF012 (peft's own shape)

    def _create_and_replace(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
    ) -> None:
        assert isinstance(peft_config, BottleneckConfig)
        if isinstance(target, BottleneckLayer):
            target.update_layer(
                adapter_name, peft_config.bottleneck_size, peft_config.non_linearity
            )
            return
        new = BottleneckLayer(
            target, adapter_name, peft_config.bottleneck_size, peft_config.non_linearity
        )
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)


def register() -> None:
    """Make ``bottleneck_adapter`` a peft method (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = _extend_peft_type()
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(
            name=NAME, config_cls=BottleneckConfig, model_cls=BottleneckModel, prefix="bottleneck_"
        )


register()
