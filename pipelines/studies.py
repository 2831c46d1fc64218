"""A study read back from its folder and storage: the config a run left, its results, the
fronts a warm start takes; and the files a run writes first. The folder's files
themselves have one owner, results/study_folder.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.config import Config, load_config

if TYPE_CHECKING:
    from peftsearch.trials import PreparedData

__all__ = ["build_warm_start", "load_results", "load_study_config", "write_study_files"]


def write_study_files(config: Config, data: PreparedData) -> None:
    """The resolved config and the labels, first, so a study folder is readable (and
    resumable) from the moment its first trial runs."""
    from peftsearch.results import StudyFolder

    folder = StudyFolder(config.study_dir)
    folder.write_config(config.to_yaml())
    folder.write_labels(data)


def load_study_config(study_dir: Path, overrides: list[str] | None = None) -> Config:
    """The resolved config a run left in its study folder; the folder may have moved."""
    from peftsearch.results import StudyFolder

    folder = StudyFolder(study_dir).require()
    return load_config(
        folder.config_file,
        overrides=[f"output_dir={study_dir.resolve().parent}", *(overrides or [])],
    )


def build_warm_start(config: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """``(study:trial, method, params)`` of the Pareto trials of ``search.warm_start``."""
    from peftsearch.results import pareto_numbers
    from peftsearch.search import load_existing_study, read_records

    configs = []
    for folder in config.search.warm_start:
        earlier = load_study_config(folder)
        study = load_existing_study(earlier.search.study_name, earlier.storage_url)
        front = set(pareto_numbers(study))
        for record in read_records(study):
            if record.number in front:
                source = f"{earlier.search.study_name}:{record.number}"
                configs.append((source, record.method, record.params))
    return configs


def load_results(study_dir: Path) -> tuple[Config, list[dict[str, Any]], list[int], dict[str, Any]]:
    """Config, trial rows and front from storage, plus the last run's summary, budget and
    stop reason from ``pareto.json``."""
    from peftsearch.results import StudyFolder, pareto_numbers, trial_rows
    from peftsearch.search import load_existing_study

    config = load_study_config(study_dir)
    study = load_existing_study(config.search.study_name, config.storage_url)
    extra = StudyFolder(study_dir).read_summary()
    return config, trial_rows(study), pareto_numbers(study), extra
