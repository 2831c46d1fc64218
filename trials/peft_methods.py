"""peftsearch's own peft methods (the bottleneck adapter), registered with peft as soon
as peft is imported, so that ``PeftModel.from_pretrained`` loads them after
``import peftsearch`` without making that import pay for peft and torch."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["OWN_PEFT_TYPES", "install", "register_all"]

OWN_PEFT_TYPES = ("BOTTLENECK_ADAPTER",)  # peft types that exist once peftsearch registers them


def register_all() -> None:
    from peftsearch.trials import bottleneck

    bottleneck.register()


class _AfterPeftImport(importlib.abc.MetaPathFinder):
    """Finds ``peft`` the normal way, and registers our methods once it has loaded.

    ``importlib.util.find_spec("peft")`` is also how libraries check that peft is
    installed (transformers does), without importing it: so every spec handed out gets
    the hook, and the finder leaves ``sys.meta_path`` only once peft has really loaded.
    """

    def __init__(self) -> None:
        self._looking = False

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "peft" or self._looking:
            return None
        self._looking = True
        try:
            spec = importlib.util.find_spec(name)  # the finders after this one
        finally:
            self._looking = False
        loader: Any = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        load = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_all()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now if peft is loaded, else right after it loads (once)."""
    if "peft" in sys.modules:
        register_all()
    elif not any(isinstance(f, _AfterPeftImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPeftImport())
