"""peftsearch: multi-objective search over parameter-efficient fine-tuning configurations.

Data flows one way: config -> ``spaces`` (trial -> peft config) -> ``trials`` (train,
evaluate, measure) -> ``search`` (study, budget, scheduling) -> ``results`` (front,
report, export). ``pipelines`` wires them into this API and the CLI.

    import peftsearch
    result = peftsearch.run("search.yaml")
    result.front, result.recommend(max_params="1%"), result.export("adapter", trial=3)
    peftsearch.load("peftsearch-out/my-study")

The names below load lazily, so ``import peftsearch`` (and the CLI) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.config import Config, load_config
    from peftsearch.errors import UserError
    from peftsearch.pipelines.api import StudyResult, evaluate, load, resume, run, verify

__version__ = "0.1.0"
__all__ = [
    "Config",
    "StudyResult",
    "UserError",
    "__version__",
    "evaluate",
    "load",
    "load_config",
    "resume",
    "run",
    "verify",
]

_LAZY = {
    "Config": "peftsearch.config",
    "load_config": "peftsearch.config",
    "UserError": "peftsearch.errors",
    "StudyResult": "peftsearch.pipelines.api",
    "load": "peftsearch.pipelines.api",
    "resume": "peftsearch.pipelines.api",
    "run": "peftsearch.pipelines.api",
    "verify": "peftsearch.pipelines.api",
    "evaluate": "peftsearch.pipelines.api",
}


def _register_peft_methods() -> None:
    """peftsearch's own peft methods load with ``PeftModel.from_pretrained`` once
    peftsearch is imported (registered when peft loads; see trials/peft_methods.py)."""
    from peftsearch.trials.peft_methods import install

    install()


_register_peft_methods()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'peftsearch' has no attribute {name!r}")
