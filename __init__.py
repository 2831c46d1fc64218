"""peftsearch: multi-objective search over parameter-efficient fine-tuning configurations.

Data flows one way: config -> ``spaces`` (trial -> peft config) -> ``trials`` (train,
evaluate, measure) -> ``search`` (study, budget, scheduling) -> ``results`` (front,
report, export). ``pipelines`` wires them into the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
