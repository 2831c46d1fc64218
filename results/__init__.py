"""Results: the Pareto front, the study folder's files, the terminal table and export."""

from __future__ import annotations

from peftsearch.results.console import front_table, front_title, trial_line
from peftsearch.results.export import export_adapter
from peftsearch.results.files import (
    ADAPTERS,
    CONFIG_FILE,
    LABELS_FILE,
    REPORT_FILE,
    TRIAL_ADAPTERS,
    atomic_write,
    copy_front_adapters,
    summarize,
    write_report,
    write_tables,
)
from peftsearch.results.front import columns, display_name, front_of, pareto_numbers, trial_rows
from peftsearch.results.recommend import Constraints, Recommendation, recommend

__all__ = [
    "ADAPTERS",
    "CONFIG_FILE",
    "LABELS_FILE",
    "REPORT_FILE",
    "TRIAL_ADAPTERS",
    "Constraints",
    "Recommendation",
    "atomic_write",
    "columns",
    "copy_front_adapters",
    "display_name",
    "export_adapter",
    "front_of",
    "front_table",
    "front_title",
    "pareto_numbers",
    "recommend",
    "summarize",
    "trial_line",
    "trial_rows",
    "write_report",
    "write_tables",
]
