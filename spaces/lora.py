"""LoRA (Hu et al., 2021): low-rank updates on chosen linear layers, with peft's variants
as searched dimensions: rank-stabilised scaling (rsLoRA), LoRA+ learning rates, and the
initialisations (Gaussian, PiSSA, OLoRA, EVA)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from peftsearch.spaces._placement import (
    Probability,
    RankedOptions,
    describe_placement,
    ranked_calibration,
    suggest_placement,
    suggest_rank,
)
from peftsearch.spaces._registry import (
    LearningRateRange,
    MethodOptions,
    MethodSpaceBase,
    PeftChoice,
    pick,
    register,
    suggest_lr,
)

if TYPE_CHECKING:
    import optuna

    from peftsearch.spaces._model_info import ModelInfo

__all__ = ["DoraOptions", "LoraOptions", "LoraSpace", "changes_base_weights"]

# peft's ``init_lora_weights`` values that searches offer (peft/tuners/lora/config.py):
# true is LoRA's own (B = 0); PiSSA and OLoRA start from the base weights' principal or
# orthonormal directions and subtract them from the base; EVA starts from the principal
# directions of the layers' inputs over a few training batches.
INITS = ("gaussian", "pissa", "olora", "eva")
INIT_WORDS = {"gaussian": "Gaussian", "pissa": "PiSSA", "olora": "OLoRA", "eva": "EVA"}


def _init(value: bool | str) -> bool | str:
    if value is True or value in INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", str(value)):
        return value
    raise ValueError(
        f"unknown init_lora_weights {value!r}; choose from true, {', '.join(INITS)} or "
        "pissa_niter_<n> (PiSSA by fast SVD with n iterations)"
    )


LoraInit = Annotated[bool | str, AfterValidator(_init)]


def changes_base_weights(peft_config: dict[str, Any]) -> bool:
    """PiSSA and OLoRA move part of the base weights into the adapter: the adapter as
    trained only works on that changed base, and peft converts it before export."""
    init = str(peft_config.get("init_lora_weights", True)).lower()
    return init.startswith(("pissa", "olora", "corda"))


class LoraOptions(RankedOptions):
    """``space.lora`` (and ``space.dora``).

    Args:
        lr: set for search trials of tens to hundreds of steps, by evidence: in the
            measured SST-2 table (60 steps, benchmarks/peft_table.py) LoRA and DoRA at 2e-4
            and 7e-4 stayed at chance, 2.7e-3 was best and 1e-2 diverged half the time.
            Long LLM runs want ~1e-4 to 3e-4: set ``lr`` for those.
        dropout: LoRA dropout values to try, in [0, 1).
        use_rslora: peft's rank-stabilised scaling alpha/sqrt(r) instead of alpha/r.
        init_lora_weights: peft's initialisations to try: true (LoRA's own), gaussian,
            pissa (or pissa_niter_<n>), olora, eva. PiSSA and OLoRA exports are converted
            by peft into a plain LoRA (of twice the rank) for the unchanged base.
        loraplus_lr_ratio: LoRA+ (peft.optimizers.create_loraplus_optimizer): B learns at
            this multiple of A's learning rate; 1 is plain AdamW.
    """

    lr: LearningRateRange = LearningRateRange(low=1e-3, high=6e-3)
    dropout: list[Probability] = Field(default=[0.0, 0.1], min_length=1)
    use_rslora: list[bool] = Field(default=[False], min_length=1)
    init_lora_weights: list[LoraInit] = Field(default=[True], min_length=1)
    loraplus_lr_ratio: list[Annotated[float, Field(ge=1, le=1024)]] = Field(
        default=[1.0], min_length=1
    )


class DoraOptions(LoraOptions):
    """``space.dora``: LoRA's options, less the initialisations that change the base.

    DoRA learns each output feature's magnitude against the base weights; PiSSA and OLoRA
    change those weights, and peft's conversion back to the unchanged base keeps only
    the low-rank matrices, so such a DoRA adapter could not be exported.
    """

    @model_validator(mode="after")
    def _keeps_the_base(self) -> DoraOptions:
        changing = [
            i for i in self.init_lora_weights if changes_base_weights({"init_lora_weights": i})
        ]
        if changing:
            raise ValueError(
                f"init_lora_weights {changing[0]!r} changes the base weights, and a DoRA "
                "adapter trained on them cannot be converted back for the unchanged base; "
                "use true, gaussian or eva"
            )
        return self


class LoraSpace(MethodSpaceBase):
    """LoRA, and with ``use_dora`` its weight-decomposed variant DoRA."""

    options: type[LoraOptions] = LoraOptions
    mergeable = True

    def __init__(self, name: str = "lora", display_name: str = "LoRA", use_dora: bool = False):
        self.name = name
        self.display_name = display_name
        self.use_dora = use_dora
        if use_dora:
            self.options = DoraOptions

    def suggest(self, trial: optuna.Trial, options: MethodOptions, info: ModelInfo) -> PeftChoice:
        assert isinstance(options, LoraOptions)
        rank, alpha = suggest_rank(trial, self.name, options)
        dropout = float(trial.suggest_categorical(f"{self.name}.dropout", options.dropout))
        placement, summary = suggest_placement(
            trial, self.name, list(options.targets), list(options.layers), info
        )
        config = {
            "peft_type": "LORA",
            "task_type": info.task_type,
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": dropout,
            "use_dora": self.use_dora,
            **placement,
        }
        variants: dict[str, Any] = {}
        # a variant enters the trial's params only when it is searched (a list of more
        # than one value), so a space without variants samples as it always did
        if pick(trial, f"{self.name}.use_rslora", options.use_rslora):
            config["use_rslora"] = variants["rslora"] = True
        init = pick(trial, f"{self.name}.init_lora_weights", options.init_lora_weights)
        if init is not True:
            config["init_lora_weights"] = variants["init"] = init
        ratio = float(pick(trial, f"{self.name}.loraplus_lr_ratio", options.loraplus_lr_ratio))
        if ratio != 1.0:
            variants["loraplus_lr_ratio"] = ratio
        return PeftChoice(
            method=self.name,
            peft_config=config,
            learning_rate=suggest_lr(trial, self.name, options.lr),
            summary={"rank": rank, "alpha": alpha, "dropout": dropout, **summary, **variants},
            loraplus_lr_ratio=ratio if ratio != 1.0 else None,
        )

    def describe(self, summary: dict[str, Any]) -> str:
        words = [describe_placement(summary)]
        if summary.get("rslora"):
            words.append("rank-stabilised scaling")
        if "init" in summary:
            init = str(summary["init"])
            words.append(f"{INIT_WORDS.get(init.split('_')[0], init)} init")
        if summary.get("loraplus_lr_ratio"):
            words.append(f"LoRA+ ratio {summary['loraplus_lr_ratio']:g}")
        return ", ".join(words)

    def calibration_config(self, info: ModelInfo) -> dict[str, Any]:
        return {
            "peft_type": "LORA",
            "lora_alpha": 16,
            "use_dora": self.use_dora,
            **ranked_calibration(info),
        }


register(LoraSpace())
