"""The study folder: its one owner names, writes and reads every file in it.

``<output_dir>/<study_name>/`` holds what a run leaves beside the Optuna storage:

- ``config.yaml``: the resolved config (a folder that holds one is a study folder);
- ``labels.json``: the task, the label names, the pad token and the data's counts;
- ``trials.csv``, ``pareto.csv``, ``pareto.json``: every trial, the front, and the front
  with the last run's summary, budget, metric, objectives and stop reason;
- ``report.html``: the self-contained report;
- ``trial_adapters/<n>/``: every trained trial's adapter; ``adapters/<n>/``: the front's.

Every write is atomic (a temp file renamed into place, a staged folder swapped in), so
a crash never leaves half a file. Nothing else in peftsearch names these files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    from peftsearch.trials import PreparedData

__all__ = ["LABELS_FILE", "StudyFolder", "atomic_write", "summarize"]

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"  # also travels with an exported adapter
TRIALS_FILE = "trials.csv"
PARETO_CSV = "pareto.csv"
PARETO_JSON = "pareto.json"
REPORT_FILE = "report.html"
ADAPTERS = "adapters"
TRIAL_ADAPTERS = "trial_adapters"


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    os.replace(tmp, path)


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summarize(study_name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The study's totals, as ``pareto.json`` and the report show them."""
    complete = [r for r in rows if r["status"] == "COMPLETE"]
    return {
        "study": study_name,
        "trials": len(rows),
        "complete": len(complete),
        "failed": sum(r["status"] == "FAIL" for r in rows),
        # what the search paid (rung evaluations and lost attempts included)
        "total_cost_usd": sum(r.get("spent_usd") or r["cost_usd"] or 0 for r in rows),
        "total_device_seconds": sum(r["device_seconds"] or 0 for r in rows),
        "pruned": sum(r["status"] == "PRUNED" for r in rows),
        "infeasible": sum(r["status"] == "INFEASIBLE" for r in rows),
        "best_accuracy": max((r["accuracy"] for r in complete), default=None),
    }


@dataclass(frozen=True)
class StudyFolder:
    """One study's folder on the driver (workers never see it: adapters travel as bytes)."""

    path: Path

    # -- where things are

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def labels_file(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def trial_adapters(self) -> Path:
        """The folder under which each trial's adapter lands (``trial_adapter``)."""
        return self.path / TRIAL_ADAPTERS

    def trial_adapter(self, number: int) -> Path:
        return self.path / TRIAL_ADAPTERS / str(number)

    def has_adapter(self, number: int) -> bool:
        return (self.trial_adapter(number) / "adapter_config.json").is_file()

    @property
    def result_files(self) -> list[Path]:
        """What a finished run logs to its MLflow parent run."""
        return [self.path / n for n in (PARETO_JSON, PARETO_CSV, TRIALS_FILE, REPORT_FILE)]

    def is_study(self) -> bool:
        return self.config_file.is_file()

    def require(self) -> StudyFolder:
        """This folder, or a user error when it holds no study."""
        if not self.is_study():
            raise UserError(
                f"not a study folder (no {CONFIG_FILE})",
                where=str(self.path),
                hint="pass <output_dir>/<study_name> of a `peftsearch run`",
            )
        return self

    # -- writing

    def write_config(self, text: str) -> None:
        atomic_write(self.config_file, text)

    def write_labels(self, data: PreparedData) -> None:
        """What an export needs to rebuild the model's head and name its task."""
        labels = {
            "id2label": dict(enumerate(data.label_names)),
            "label2id": {name: i for i, name in enumerate(data.label_names)},
            "pad_token_id": data.pad_token_id,
            "task": data.task,
            "data": data.stats,
        }
        atomic_write(self.labels_file, json.dumps(labels, indent=2, default=str) + "\n")

    def write_tables(
        self, rows: list[dict[str, Any]], front: list[int], extra: dict[str, Any]
    ) -> None:
        """``trials.csv``, ``pareto.csv``, and ``pareto.json`` (``extra`` and the front)."""
        from peftsearch.results.front import columns

        front_rows = [r for r in rows if r["trial"] in front]
        fields = columns(rows)
        atomic_write(self.path / TRIALS_FILE, _csv(rows, fields))
        atomic_write(self.path / PARETO_CSV, _csv(front_rows, fields))
        payload = {**extra, "pareto": front_rows}
        atomic_write(self.path / PARETO_JSON, json.dumps(payload, indent=2, default=str) + "\n")

    def write_results(
        self, study_name: str, rows: list[dict[str, Any]], front: list[int], extra: dict[str, Any]
    ) -> dict[int, Path]:
        """What a finished run leaves: the tables, the front's adapters and the report;
        returns the front's adapter folders by trial."""
        from peftsearch.results.report import report_page

        self.write_tables(rows, front, extra)
        copied = self.copy_front_adapters(front)
        self.write_report(report_page(study_name, rows, front, extra))
        return copied

    def write_report(self, page: str, out: Path | None = None) -> Path:
        target = out or self.report_file
        atomic_write(target, page)
        return target

    def copy_front_adapters(self, front: list[int]) -> dict[int, Path]:
        """Make ``adapters/`` hold exactly the front's adapters (every trial keeps its own
        in ``trial_adapters/``, so any trial stays exportable)."""
        target = self.path / ADAPTERS
        staging = self.path / f".{ADAPTERS}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        copied = {}
        for number in front:
            source = self.trial_adapter(number)
            if source.is_dir():
                shutil.copytree(source, staging / str(number))
                copied[number] = target / str(number)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return copied

    # -- reading

    def read_labels(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.labels_file.read_text()))
        except FileNotFoundError:
            raise UserError(
                f"the study folder has no {LABELS_FILE} (its run never read the data)",
                where=str(self.path),
            ) from None

    def read_summary(self) -> dict[str, Any]:
        """The last run's ``pareto.json`` without the front's rows (storage has them):
        summary, budget, metric, objectives, stop reason. Empty before a run finished."""
        saved = self.path / PARETO_JSON
        extra = json.loads(saved.read_text()) if saved.is_file() else {}
        extra.pop("pareto", None)
        return dict(extra)

    def read_front_rows(self) -> list[dict[str, Any]]:
        """The front as the last run wrote it to ``pareto.json``."""
        saved = self.path / PARETO_JSON
        return list(json.loads(saved.read_text()).get("pareto", [])) if saved.is_file() else []

    def read_trials(self) -> list[dict[str, str]]:
        """``trials.csv`` as text cells."""
        with (self.path / TRIALS_FILE).open(newline="") as handle:
            return list(csv.DictReader(handle))
