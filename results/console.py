"""The front as a rich table, in words a non-expert can read."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["baseline_line", "file_size", "front_table", "front_title", "trial_line"]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def file_size(size: float | None) -> str:
    """``1.3 MB``, ``12 kB``: an adapter's files."""
    if size is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def _score(row: dict[str, Any]) -> str:
    """The accuracy, with the seeds it averages when confirmation re-ran it."""
    text = _fmt(row["accuracy"], ".3f")
    if (row.get("seeds") or 1) > 1:
        text += f" ({row['seeds']} seeds, sd {row['accuracy_sd']:.3f})"
    return text


def front_title(rows: list[dict[str, Any]], on_front: int) -> str:
    """``Pareto front: 3 of 7 complete trials (also 2 stopped, 1 not launched)``: the front
    is drawn from the complete trials only, so they are what it is counted against."""
    words = {"FAIL": "failed", "INFEASIBLE": "over the params cap", "RUNNING": "running"}
    complete, others = 0, Counter[str]()
    for row in rows:
        if row["status"] == "COMPLETE":
            complete += 1
        elif row["status"] == "PRUNED":  # a trial that never started has no steps
            others["stopped" if row.get("steps") else "not launched"] += 1
        else:
            others[words.get(row["status"], str(row["status"]).lower())] += 1
    title = f"Pareto front: {on_front} of {complete} complete trials"
    if not others:
        return title
    return f"{title} (also {', '.join(f'{n} {kind}' for kind, n in others.items())})"


def front_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    from peftsearch.results.front import metric_name

    lm = any(r.get("metric") not in (None, "accuracy") for r in rows)
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("trial", "right"),
        ("method", "left"),
        ("settings", "left"),
        ("lr", "right"),
        (metric_name(rows[0]) if rows else "accuracy", "right"),
        ("perplexity" if lm else "macro-F1", "right"),
        ("trainable", "right"),
        ("adapter", "right"),
        ("cost", "right"),
        ("device time", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in sorted(rows, key=lambda r: -(r["accuracy"] or 0)):
        table.add_row(
            str(row["trial"]),
            row["method"],
            row["params"],
            _fmt(row["lr"], ".1e"),
            _score(row),
            _fmt(row.get("perplexity"), ".2f") if lm else _fmt(row["macro_f1"], ".3f"),
            f"{_fmt(row['trainable_params'], ',')} ({_fmt(row['trainable_pct'], '.2f')}%)",
            file_size(row.get("adapter_bytes")),
            f"${_fmt(row['cost_usd'], '.4f')}",
            f"{_fmt(row['device_seconds'], '.0f')} s",
        )
    return table


def trial_line(result: Any, done: int, total: int) -> str:
    head = f"[{done}/{total}] trial {result.number} {result.method}"
    if getattr(result, "infeasible", False):
        return f"{head}: [yellow]skipped[/yellow] {result.error or ''}"
    if result.status != "COMPLETE":
        return f"{head}: [red]{result.status}[/red] {result.error or ''}"
    metric = (result.metrics or {}).get("metric", "accuracy").replace("_", " ")
    memory = (
        f", {result.peak_memory_mb / 1024:.2f} GB peak"
        if getattr(result, "peak_memory_mb", None) is not None
        else ""
    )
    note = f" ({result.memory_note})" if getattr(result, "memory_note", None) else ""
    size = getattr(result, "adapter_bytes", None)
    size = f", {file_size(size)} on disk" if size else ""
    return (
        f"{head}: {metric} {result.accuracy:.3f}, "
        f"{result.trainable_params:,} trainable ({result.trainable_pct:.2f}%"
        f"{size}), "
        f"${result.cost_usd:.4f}, {result.wall_seconds:.0f} s{memory}{note}"
    )


def baseline_line(baseline: dict[str, Any], metric: str) -> str:
    """``Without an adapter: accuracy 0.532 (no adapter: always 'pos').``: the best of
    the study's no-adapter baselines."""
    from peftsearch.trials.tasks import metric_label

    if not baseline:
        return "Without an adapter: not measured."
    best = max(baseline.values(), key=lambda b: b["accuracy"])
    return f"Without an adapter: {metric_label(metric)} {best['accuracy']:.3f} ({best['method']})."
