"""DoRA (Liu et al., 2024): LoRA with a learned magnitude per output feature."""

from __future__ import annotations

from peftsearch.spaces._registry import register
from peftsearch.spaces.lora import LoraSpace

__all__: list[str] = []

register(LoraSpace(name="dora", display_name="DoRA", use_dora=True))
