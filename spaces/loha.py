"""LoHa (Hyeon-Woo et al., 2022): low-rank Hadamard product updates."""

from __future__ import annotations

from peftsearch.spaces._lycoris import LycorisSpace
from peftsearch.spaces._registry import register

__all__: list[str] = []

register(LycorisSpace(name="loha", display_name="LoHa", peft_type="LOHA"))
