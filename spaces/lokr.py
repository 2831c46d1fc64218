"""LoKr (Edalati et al., 2022): low-rank Kronecker product updates."""

from __future__ import annotations

from peftsearch.spaces._lycoris import LycorisSpace
from peftsearch.spaces._registry import register

__all__: list[str] = []

register(LycorisSpace(name="lokr", display_name="LoKr", peft_type="LOKR"))
