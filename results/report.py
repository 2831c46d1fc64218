"""One self-contained HTML report: plotly is inlined, so it opens with no network."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftsearch.results.front import metric_name
from peftsearch.results.noise import Tolerances

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from peftsearch.results.recommend import Recommendation
    from peftsearch.search.objectives import Objective

__all__ = ["plotted_rows", "render_report", "report_page"]

GREY = "#b0b0b0"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def plotted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that have an accuracy and a size: complete ones, and early-stopped ones
    with their partial accuracy. Each appears once in every projection."""
    return [
        r
        for r in rows
        if r["status"] in ("COMPLETE", "PRUNED")
        and r["accuracy"] is not None
        and r["trainable_params"] is not None
    ]


def _spread(row: dict[str, Any], tolerances: Tolerances) -> str:
    error = tolerances.error(row)
    text = f" ± {error:.3f}" if error else ""
    if (row.get("seeds") or 1) > 1:
        text += f" (mean of {row['seeds']} seeds)"
    return text


def _hover(row: dict[str, Any], tolerances: Tolerances) -> str:
    return (
        f"trial {row['trial']} ({row['status'].lower()})<br>{row['method']} {row['params']}"
        f"<br>lr {row['lr']:.2e}<br>{metric_name(row)} {row['accuracy']:.3f}"
        f"{_spread(row, tolerances)}"
        f"<br>{row['trainable_params']:,} trainable ({row['trainable_pct']:.3f}%)"
        f"<br>${row['cost_usd']:.4f}, {row['device_seconds']:.0f} device-s"
    )


def _baseline_line(figure: Figure, bound: dict[str, Any] | None) -> None:
    """The model with no adapter, as a dashed line across an accuracy chart: a trial
    must clear it beyond the noise to count."""
    if bound is not None:
        figure.add_hline(
            y=bound["accuracy"],
            line_dash="dash",
            line_color="#555",
            annotation_text=f"no adapter {bound['accuracy']:.3f}",
            annotation_position="bottom right",
        )


@dataclass(frozen=True)
class _Marks:
    """What every chart marks: the front, the trials the baseline beats, the most
    accurate trial, the baseline's level, and the study's noise."""

    front: set[int]
    beaten: set[int]
    best: int | None
    bound: dict[str, Any] | None
    tolerances: Tolerances


def _projection(
    rows: list[dict[str, Any]],
    marks: _Marks,
    x: str,
    title: str,
    log_x: bool,
    metric: str = "accuracy",
) -> Figure:
    """Front trials colored by method, the rest grey: one trace per group, one point per
    trial; the most accurate trial ringed, the no-adapter baseline a dashed line."""
    import plotly.graph_objects as go

    front, tolerances = marks.front, marks.tolerances
    figure = go.Figure()
    methods = sorted({r["method"] for r in rows})
    groups: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
    for i, method in enumerate(methods):
        members = [r for r in rows if r["method"] == method and r["trial"] in front]
        groups.append(
            (f"{method} (front)", members, {"color": PALETTE[i % len(PALETTE)], "size": 12})
        )
    groups.append(
        (
            "dominated",
            [
                r
                for r in rows
                if r["trial"] not in front | marks.beaten and r["status"] == "COMPLETE"
            ],
            {"color": GREY, "size": 8},
        )
    )
    groups.append(
        (
            "no better than no adapter",
            [r for r in rows if r["trial"] in marks.beaten],
            {"color": GREY, "size": 8, "symbol": "triangle-down"},
        )
    )
    groups.append(
        (
            "stopped early",
            [r for r in rows if r["status"] == "PRUNED"],
            {"color": GREY, "size": 8, "symbol": "x"},
        )
    )
    for name, members, marker in groups:
        if members:
            figure.add_trace(
                go.Scatter(
                    x=[r[x] for r in members],
                    y=[r["accuracy"] for r in members],
                    # One standard error of each accuracy (results/noise.py).
                    error_y={
                        "type": "data",
                        "array": [tolerances.error(r) or 0.0 for r in members],
                        "thickness": 1,
                        "width": 0,
                    },
                    mode="markers",
                    name=name,
                    marker=marker,
                    hovertext=[_hover(r, tolerances) for r in members],
                    hoverinfo="text",
                )
            )
    best = [r for r in rows if r["trial"] == marks.best]
    if best:
        figure.add_trace(
            go.Scatter(
                x=[best[0][x]],
                y=[best[0]["accuracy"]],
                mode="markers",
                name=f"most accurate (trial {marks.best})",
                marker={"size": 20, "color": "rgba(0,0,0,0)", "line": {"width": 2}},
                hoverinfo="skip",
            )
        )
    _baseline_line(figure, marks.bound)
    figure.update_layout(
        title=title,
        xaxis_title=x.replace("_", " "),
        yaxis_title=metric,
        template="plotly_white",
        height=420,
        margin={"t": 50, "l": 60, "r": 20, "b": 50},
    )
    if log_x:
        figure.update_xaxes(type="log")
    return figure


def _by_method(rows: list[dict[str, Any]], marks: _Marks, metric: str = "accuracy") -> Figure:
    """Every completed trial of each method as a point (spread across the method's
    column so none hides another), and the method's median as a bar: scatter traces
    only, which the report's partial plotly bundle draws."""
    import statistics

    import plotly.graph_objects as go

    figure = go.Figure()
    methods = sorted({r["method"] for r in rows})
    for i, method in enumerate(methods):
        members = sorted(
            (r for r in rows if r["method"] == method and r["status"] == "COMPLETE"),
            key=lambda r: r["accuracy"],
        )
        if not members:
            continue
        colour = PALETTE[i % len(PALETTE)]
        spread = [(k / max(1, len(members) - 1) - 0.5) * 0.5 for k in range(len(members))]
        figure.add_trace(
            go.Scatter(
                x=[i + offset if len(members) > 1 else i for offset in spread],
                y=[r["accuracy"] for r in members],
                mode="markers",
                name=method,
                marker={"color": colour, "size": 8},
                hovertext=[_hover(r, marks.tolerances) for r in members],
                hoverinfo="text",
            )
        )
        median = statistics.median(r["accuracy"] for r in members)
        figure.add_trace(
            go.Scatter(
                x=[i - 0.35, i + 0.35],
                y=[median, median],
                mode="lines",
                name=f"{method} median",
                line={"color": colour, "width": 3},
                hovertext=f"{method}: median {median:.3f} over {len(members)} trial(s)",
                hoverinfo="text",
            )
        )
    _baseline_line(figure, marks.bound)
    figure.update_layout(
        title=f"{metric.capitalize()} by method (completed trials; bars: medians)",
        yaxis_title=metric,
        template="plotly_white",
        height=380,
        showlegend=False,
    )
    figure.update_xaxes(
        tickvals=list(range(len(methods))), ticktext=methods, range=[-0.6, len(methods) - 0.4]
    )
    return figure


def plotly_script() -> str:
    """The plotly.js the report inlines: the vendored basic partial bundle
    (results/assets/README.md, a quarter of the full one's size) when it is the
    plotly.js version this plotly.py writes figures for, else plotly.py's full bundle."""
    import re
    from importlib.resources import files

    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    bundle = files("peftsearch.results").joinpath("assets/plotly-basic.min.js").read_text()
    found = re.search(r"plotly\.js \(basic - minified\) v([0-9.]+)", bundle[:200])
    if found and found.group(1) == get_plotlyjs_version():
        return bundle
    return get_plotlyjs()


def _convergence(rows: list[dict[str, Any]], marks: _Marks, metric: str = "accuracy") -> Figure:
    """Accuracy against the money spent so far, with the best-so-far line: flat means
    the search has stopped finding better adapters."""
    import plotly.graph_objects as go

    spent, best, xs, ys, line_x, line_y = 0.0, 0.0, [], [], [], []
    for row in sorted(rows, key=lambda r: r["trial"]):
        spent += row["cost_usd"] or 0.0
        if row["accuracy"] is None or row["status"] != "COMPLETE":
            continue
        xs.append(spent)
        ys.append(row["accuracy"])
        best = max(best, row["accuracy"])
        line_x.append(spent)
        line_y.append(best)
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="trial", marker={"color": GREY}))
    figure.add_trace(
        go.Scatter(x=line_x, y=line_y, mode="lines", name="best so far", line={"shape": "hv"})
    )
    _baseline_line(figure, marks.bound)
    figure.update_layout(
        title=f"Has the search converged? {metric.capitalize()} against budget spent",
        xaxis_title="cumulative cost (USD)",
        yaxis_title=metric,
        template="plotly_white",
        height=380,
    )
    return figure


def _table(rows: list[dict[str, Any]], marks: _Marks) -> str:
    columns: tuple[str, ...] = (
        "trial",
        "method",
        "params",
        "lr",
        "accuracy",
        "± (1 s.e.)",
        "seeds",
        "accuracy_sd",
        "test_accuracy",
        "macro_f1",
        "forgetting",
        "trainable_params",
        "trainable_pct",
        "adapter_bytes",
        "cost_usd",
        "device_seconds",
        "peak_memory_mb",
        "status",
        "error",
    )
    if any((r.get("quantization") or "none") != "none" for r in rows):
        columns = (*columns[:4], "quantization", *columns[4:])  # the base each trained on
    # a column no row has (seeds without confirmation, forgetting for a classifier)
    columns = tuple(
        c for c in columns if c.startswith("±") or any(r.get(c) is not None for r in rows)
    )
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = marks.tolerances.error(row) if column.startswith("±") else row.get(column)
            if column == "status" and row["trial"] in marks.beaten:
                value = "COMPLETE, no better than no adapter"
            if isinstance(value, float):
                value = f"{value:.4g}"
            cells.append(f"<td>{html.escape('' if value is None else str(value))}</td>")
        css = ' class="front"' if row["trial"] in marks.front else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _example(rows: list[dict[str, Any]], recommendation: Recommendation) -> str:
    """A causal LM's answer to one evaluation prompt, next to the reference answer."""
    import json

    shown = recommendation.trial
    if shown is None and recommendation.closest:  # nothing recommended: the closest one
        shown = recommendation.closest["trial"]
    row = next((r for r in rows if r["trial"] == shown), None)
    if not row or not row.get("example"):
        return ""
    example = json.loads(row["example"])
    items = "".join(
        f"<dt>{label}</dt><dd><pre>{html.escape(str(example.get(key, '')))}</pre></dd>"
        for label, key in (
            ("prompt", "prompt"),
            ("its answer", "generated"),
            ("the reference", "reference"),
        )
    )
    return f"<p>An evaluation prompt and trial {row['trial']}'s answer:</p><dl>{items}</dl>"


def _budget(
    summary: dict[str, Any],
    budget: dict[str, Any] | None,
    stop_reason: str | None,
    metric: str = "accuracy",
) -> str:
    plain = summary.get("baseline") or {}
    items = [
        f"Without an adapter ({b['method']}): {metric} {b['accuracy']:.3f}" for b in plain.values()
    ] + [
        f"{summary.get('trials', 0)} trials: {summary.get('complete', 0)} complete, "
        f"{summary.get('pruned', 0)} stopped early or by the budget, "
        f"{summary.get('failed', 0)} failed, "
        f"{summary.get('infeasible', 0)} over the size cap",
        f"total cost ${summary.get('total_cost_usd', 0):.4f} "
        f"({summary.get('total_device_seconds', 0):.0f} device-seconds)",
    ]
    if budget and budget.get("limit_usd") is not None:
        items.append(
            f"budget ${budget['limit_usd']:.4f}: spent ${budget['spent_usd']:.4f} "
            f"(the cost calibration included), left ${budget['left_usd']:.4f}"
        )
    if stop_reason:
        items.append(f"stopped because: {stop_reason}")
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.recommendation { background: #eef6ee; border-left: 4px solid #2ca02c; padding: 0.8em 1em; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; }
tr.front { background: #f3f8ff; font-weight: 600; }
"""


def render_report(
    *,
    title: str,
    rows: list[dict[str, Any]],
    front: list[int],
    recommendation: Recommendation,
    summary: dict[str, Any],
    budget: dict[str, Any] | None,
    stop_reason: str | None,
    objectives: tuple[Objective, ...] | None = None,
) -> str:
    """The page; one chart of the task's metric against each other objective, and
    against peak memory whenever trials measured it (an objective or not)."""
    import plotly.io as pio

    from peftsearch.results.front import best_trial_line, most_accurate, verdict
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    baseline = summary.get("baseline")
    judged = verdict(rows, objectives, baseline)
    best = most_accurate(rows)
    marks = _Marks(
        set(front),
        judged.beaten,
        best["trial"] if best else None,
        judged.bound,
        Tolerances.from_rows(rows),
    )
    best_line = best_trial_line(rows, objectives, baseline, judged) or ""
    shown = plotted_rows(rows)
    metric = metric_name(next((r for r in rows if r.get("metric")), {}))
    title_word = metric.capitalize()
    charted = list(objectives or objectives_of(DEFAULT_OBJECTIVES))
    if "peak_memory" not in {o.name for o in charted} and any(
        r.get("peak_memory_mb") is not None for r in shown
    ):
        charted += objectives_of(("peak_memory",))
    figures = [
        _projection(shown, marks, o.column, f"{title_word} vs {o.label}", o.log_scale, metric)
        for o in charted
        if o.column != "accuracy"
    ]
    figures += [_by_method(shown, marks, metric), _convergence(rows, marks, metric)]
    example = _example(rows, recommendation)
    divs = [
        pio.to_html(f, full_html=False, include_plotlyjs=False, div_id=f"plot-{i}")
        for i, f in enumerate(figures)
    ]
    alternatives = "".join(f"<li>{html.escape(a)}</li>" for a in recommendation.alternatives)
    pairs = [divs[i : i + 2] for i in range(0, len(divs), 2)]  # two charts a row
    charts = "\n".join(
        '<div class="grid">' + "".join(f"<div>{d}</div>" for d in pair) + "</div>" for pair in pairs
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly_script()}</script></head><body>
<h1>{html.escape(title)}</h1>
<h2>Recommendation</h2>
<p class="recommendation">{html.escape(recommendation.text)}</p>
{f"<p>Nearby options:</p><ul>{alternatives}</ul>" if alternatives else ""}
{example}
<h2>The trade-off</h2>
<p>Each coloured point is on the Pareto front: no other trial is at once more accurate, smaller
and cheaper by more than the measurement noise, and it beats the model with no adapter (the
dashed line) beyond that noise. Grey points are beaten; triangles are no better than no
adapter; crosses were stopped early; the ring marks the most accurate trial. Bars show one
standard error of each accuracy (the evaluation rows and, where configs were re-run with new
training seeds, the seed-to-seed spread): trials whose bars overlap are tied. Hover for
details.</p>
<p class="best">{html.escape(best_line)}</p>
{charts}
<h2>Budget</h2>
{_budget(summary, budget, stop_reason, metric)}
<h2>All trials</h2>
{_table(rows, marks)}
</body></html>
"""


def report_page(
    study_name: str, rows: list[dict[str, Any]], front: list[int], extra: dict[str, Any]
) -> str:
    """``report.html`` with the default recommendation (most accurate on the front);
    ``extra`` is what ``pareto.json`` holds beside the front."""
    from peftsearch.results.recommend import Constraints, recommend
    from peftsearch.search.objectives import DEFAULT_OBJECTIVES, objectives_of

    return render_report(
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
