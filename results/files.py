"""The study folder: resolved config, trials.csv, pareto.csv/json and front adapters."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from peftsearch.results.front import columns

__all__ = [
    "ADAPTERS",
    "CONFIG_FILE",
    "LABELS_FILE",
    "REPORT_FILE",
    "TRIAL_ADAPTERS",
    "atomic_write",
    "copy_front_adapters",
    "summarize",
    "write_report",
    "write_tables",
]

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
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
    import io

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


def write_tables(
    study_dir: Path,
    rows: list[dict[str, Any]],
    front: list[int],
    extra: dict[str, Any] | None = None,
) -> None:
    front_rows = [r for r in rows if r["trial"] in front]
    fields = columns(rows)
    atomic_write(study_dir / "trials.csv", _csv(rows, fields))
    atomic_write(study_dir / "pareto.csv", _csv(front_rows, fields))
    payload = {**(extra or {}), "pareto": front_rows}
    atomic_write(study_dir / "pareto.json", json.dumps(payload, indent=2, default=str) + "\n")


def copy_front_adapters(study_dir: Path, front: list[int]) -> dict[int, Path]:
    """Make ``adapters/`` hold exactly the front's adapters (all trials keep theirs in
    ``trial_adapters/`` so any trial stays exportable)."""
    target = study_dir / ADAPTERS
    staging = study_dir / f".{ADAPTERS}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    copied = {}
    for number in front:
        source = study_dir / TRIAL_ADAPTERS / str(number)
        if source.is_dir():
            shutil.copytree(source, staging / str(number))
            copied[number] = target / str(number)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return copied


def write_report(
    study_dir: Path,
    study_name: str,
    rows: list[dict[str, Any]],
    front: list[int],
    extra: dict[str, Any],
    out: Path | None = None,
) -> Path:
    """``report.html`` with the default recommendation (most accurate on the front)."""
    from peftsearch.results.recommend import Constraints, recommend
    from peftsearch.results.report import render_report
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    target = out or study_dir / REPORT_FILE
    page = render_report(
        title=f"peftsearch study '{study_name}'",
        rows=rows,
        front=front,
        recommendation=recommend(
            rows, front, Constraints(), baseline=extra.get("summary", {}).get("baseline")
        ),
        summary=extra.get("summary", {}),
        budget=extra.get("budget"),
        stop_reason=extra.get("stop_reason"),
        objectives=objectives_of(extra.get("objectives") or DEFAULT_OBJECTIVES),
    )
    atomic_write(target, page)
    return target
