"""Deployment profiles: where an adapter will be served limits what a search may try.

A profile constrains the space before anything is sampled (``constrain``: which methods
and which values of their knobs it keeps, with the reason for each removal), and checks
a saved adapter's ``adapter_config.json`` against the same rules (``check``), so that
``validate`` says what a profile removes and ``export --check`` says whether a trial's
adapter fits. Profiles are small and named (``deployment.target``); ``merge: true`` is
one too, as it limits the methods the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.spaces._registry import MethodOptions

__all__ = [
    "PROFILES",
    "VLLM_MAX_LORA_RANK",
    "Removal",
    "check_adapter",
    "constrain_space",
    "profile_words",
]

# vLLM's default --max-lora-rank (vllm/config: LoRAConfig.max_lora_rank)
VLLM_MAX_LORA_RANK = 16


@dataclass(frozen=True)
class Removal:
    """What a profile takes out of the space: ``where`` names the config key
    (``space.methods`` or ``space.lora.rank``), ``what`` the values, ``why`` the rule."""

    where: str
    what: str
    why: str

    def line(self) -> str:
        return f"{self.where}: removes {self.what} ({self.why})"


def _is_plain_lora(method: str) -> bool:
    from peftsearch.spaces import get_method
    from peftsearch.spaces.lora import LoraSpace

    space = get_method(method)
    return isinstance(space, LoraSpace) and not space.use_dora


def _vllm_space(
    methods: dict[str, MethodOptions], task: str, max_rank: int
) -> tuple[dict[str, MethodOptions], list[Removal]]:
    """vLLM serves LoRA adapters of generative models: no DoRA, no other method, no
    ``modules_to_save``, rank at most ``--max-lora-rank``.

    Follows vLLM's LoRA documentation (https://docs.vllm.ai/en/latest/features/lora.html)
    and the checks it runs on loading an adapter (vllm/lora/peft_helper.py:
    ``PEFTHelper.validate_legal``: "vLLM does not yet support DoRA", "vLLM only supports
    modules_to_save being None", "LoRA rank {r} is greater than max_lora_rank").
    """
    removals: list[Removal] = []
    if task != "causal-lm":
        removals.append(
            Removal(
                "space.methods",
                ", ".join(methods),
                f"vLLM serves generative LMs' adapters without modules_to_save; a {task} "
                "study trains a new head, which is one",
            )
        )
        return {}, removals
    kept: dict[str, MethodOptions] = {}
    dropped = [m for m in methods if not _is_plain_lora(m)]
    if dropped:
        removals.append(
            Removal(
                "space.methods",
                ", ".join(dropped),
                "vLLM serves LoRA adapters only, and not DoRA",
            )
        )
    for method, options in methods.items():
        if method in dropped:
            continue
        ranks = [r for r in getattr(options, "rank", []) if r <= max_rank]
        over = [r for r in getattr(options, "rank", []) if r > max_rank]
        if over:
            removals.append(
                Removal(
                    f"space.{method}.rank",
                    ", ".join(map(str, over)),
                    f"above max_lora_rank {max_rank}",
                )
            )
        if not ranks:
            removals.append(Removal("space.methods", method, f"no rank <= {max_rank} is left"))
            continue
        update: dict[str, Any] = {"rank": ranks}
        inits = list(getattr(options, "init_lora_weights", [True]))
        doubled = [i for i in inits if _may_double(i)]
        if doubled and max(ranks) * 2 > max_rank:
            update["init_lora_weights"] = [i for i in inits if not _may_double(i)] or [True]
            removals.append(
                Removal(
                    f"space.{method}.init_lora_weights",
                    ", ".join(map(str, doubled)),
                    "their adapters can reach twice the rank (PiSSA/OLoRA exports are "
                    "converted to 2r; EVA moves rank between layers, up to 2r), and rank "
                    f"{max(ranks)} becomes {2 * max(ranks)} > max_lora_rank {max_rank}",
                )
            )
        kept[method] = options.model_copy(update=update)
    return kept, removals


def _changes_base(init: Any) -> bool:
    from peftsearch.spaces.lora import changes_base_weights

    return changes_base_weights({"init_lora_weights": init})


def _may_double(init: Any) -> bool:
    """An initialisation whose saved adapter can hold ranks up to 2r: PiSSA and OLoRA
    (converted for export to a LoRA of 2r) and EVA (peft's default rho 2 moves rank
    between layers)."""
    return _changes_base(init) or init == "eva"


def _merge_space(
    methods: dict[str, MethodOptions], task: str, max_rank: int
) -> tuple[dict[str, MethodOptions], list[Removal]]:
    """A merged model needs an adapter that is a change of the weights themselves (the
    plug-in's ``mergeable``: peft's ``merge_and_unload`` folds it into them)."""
    from peftsearch.spaces import get_method

    dropped = [m for m in methods if not get_method(m).mergeable]
    removals = (
        [
            Removal(
                "space.methods",
                ", ".join(dropped),
                "they cannot merge into the weights: prompts add tokens, a bottleneck "
                "adapter has a non-linearity inside",
            )
        ]
        if dropped
        else []
    )
    return {m: o for m, o in methods.items() if m not in dropped}, removals


# name -> (constrain the space, check an adapter config): the targets users write
Constrain = Callable[
    ["dict[str, MethodOptions]", str, int], "tuple[dict[str, MethodOptions], list[Removal]]"
]
PROFILES: dict[str, Constrain] = {"vllm": _vllm_space, "merge": _merge_space}


def profile_words(target: str, max_lora_rank: int | None) -> str:
    if target == "vllm":
        return f"vllm (max_lora_rank {max_lora_rank or VLLM_MAX_LORA_RANK})"
    return "a merged model" if target == "merge" else target


def constrain_space(
    methods: dict[str, MethodOptions],
    task: str,
    targets: list[str],
    max_lora_rank: int | None = None,
) -> tuple[dict[str, MethodOptions], list[Removal]]:
    """The space each of ``targets`` (profile names) leaves, and what they removed."""
    removals: list[Removal] = []
    for target in targets:
        methods, removed = PROFILES[target](methods, task, max_lora_rank or VLLM_MAX_LORA_RANK)
        removals += removed
    return methods, removals


def check_adapter(
    target: str, adapter_config: dict[str, Any], method: str, max_lora_rank: int | None = None
) -> str | None:
    """None when a saved adapter (its ``adapter_config.json``) fits the profile, else
    why not, in one clause."""
    from peftsearch.spaces import get_method

    if target == "merge":
        try:
            mergeable = get_method(method).mergeable
        except KeyError:
            mergeable = False
        return None if mergeable else f"{method} adapters cannot merge into the weights"
    max_rank = max_lora_rank or VLLM_MAX_LORA_RANK
    peft_type = str(adapter_config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        return f"vLLM serves LoRA adapters only; this is {peft_type or 'not a peft adapter'}"
    if adapter_config.get("use_dora"):
        return "vLLM does not serve DoRA"
    if adapter_config.get("modules_to_save"):
        saved = ", ".join(adapter_config["modules_to_save"])
        return f"vLLM serves no modules_to_save; this adapter trains {saved}"
    if str(adapter_config.get("bias", "none")) != "none":
        return "vLLM serves adapter biases only with --enable-lora-bias"
    pattern = adapter_config.get("rank_pattern") or {}
    ranks = [int(adapter_config.get("r", 0)), *pattern.values()]
    init = adapter_config.get("init_lora_weights", True)
    # a config not yet trained (a sampled one): as its saved adapter may become
    if _changes_base(init) or (init == "eva" and not pattern):
        ranks = [2 * r for r in ranks]
    if max(ranks) > max_rank:
        return f"rank {max(ranks)} is above max_lora_rank {max_rank} (vllm --max-lora-rank)"
    return None
