"""Results: the Pareto front, the study folder, the report, the terminal table and export."""

from __future__ import annotations

from peftsearch.results.console import baseline_line, front_table, front_title, trial_line
from peftsearch.results.export import export_adapter
from peftsearch.results.front import columns, display_name, front_of, pareto_numbers, trial_rows
from peftsearch.results.recommend import Constraints, Recommendation, recommend
from peftsearch.results.report import report_page
from peftsearch.results.study_folder import StudyFolder, atomic_write, summarize

__all__ = [
    "Constraints",
    "Recommendation",
    "StudyFolder",
    "atomic_write",
    "baseline_line",
    "columns",
    "display_name",
    "export_adapter",
    "front_of",
    "front_table",
    "front_title",
    "pareto_numbers",
    "recommend",
    "report_page",
    "summarize",
    "trial_line",
    "trial_rows",
]
