"""Results: the Pareto front, the study folder's files, the terminal table and export."""

from __future__ import annotations

from peftsearch.results.console import front_table, trial_line
from peftsearch.results.export import export_adapter
from peftsearch.results.files import (
    ADAPTERS,
    CONFIG_FILE,
    LABELS_FILE,
    TRIAL_ADAPTERS,
    atomic_write,
    copy_front_adapters,
    write_tables,
)
from peftsearch.results.front import COLUMNS, pareto_numbers, trial_rows

__all__ = [
    "ADAPTERS",
    "COLUMNS",
    "CONFIG_FILE",
    "LABELS_FILE",
    "TRIAL_ADAPTERS",
    "atomic_write",
    "copy_front_adapters",
    "export_adapter",
    "front_table",
    "pareto_numbers",
    "trial_line",
    "trial_rows",
    "write_tables",
]
