"""The verdict of a review: an exported adapter's score on new data against the score
the search recorded for it.

Both scores carry a standard error (the new one from the rows just scored, the
recorded one from the search's eval rows). A drop is **beyond noise** when it exceeds
two standard errors of the difference, sqrt(e_new^2 + e_search^2): at that line a
review of an unchanged adapter on data like the search's raises a false alarm about
one time in forty (one-sided, normal approximation). The search's own noise rule
(results/noise.py) separates trials at one standard error; an alarm that someone acts
on wants the stricter line.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.trials.adapter_eval import AdapterScores

__all__ = ["BEYOND", "review", "review_lines"]

BEYOND = 2.0  # standard errors of the difference


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def review(record: dict[str, Any], scores: AdapterScores, data_file: str) -> dict[str, Any]:
    """The review as data (what ``--json`` prints): the new score, the recorded ones,
    the no-adapter score on the same rows, and the verdict."""
    searched = (record.get("scores") or {}).get("eval") or {}
    test = (record.get("scores") or {}).get("test")
    reference, reference_se = searched.get("value"), searched.get("se")
    verdict, beyond, change = "no recorded score to compare with", False, None
    if isinstance(reference, int | float):
        change = scores.score - float(reference)
        spread = math.sqrt((scores.score_se or 0.0) ** 2 + (reference_se or 0.0) ** 2)
        beyond = spread > 0 and abs(change) > BEYOND * spread
        said = f"the search's {_pm(reference, reference_se)}"
        if not beyond:
            verdict = f"within noise of {said}"
        elif change < 0:
            verdict = f"dropped {-100 * change:.1f} points, beyond noise of {said}: review it"
        else:
            verdict = f"rose {100 * change:.1f} points, beyond noise of {said}: check the data"
    return {
        "adapter": {"study": record.get("study"), "trial": record.get("trial")},
        "data": data_file,
        "rows": scores.rows,
        "metric": record.get("metric"),
        "score": scores.score,
        "score_se": scores.score_se,
        "metrics": scores.metrics,
        "no_adapter": {"score": scores.base_score, "se": scores.base_se},
        "search": {"eval": searched or None, "test": test},
        "change": change,
        "beyond_noise": beyond,
        "verdict": verdict,
        "device": scores.device,
    }


def review_lines(result: dict[str, Any]) -> list[str]:
    """The review in plain words, one fact a line."""
    from peftsearch.trials.tasks import metric_label

    label = metric_label(result["metric"])
    search = result["search"]
    recorded = []
    for split in ("eval", "test"):
        entry = search.get(split)
        if entry and entry.get("value") is not None:
            rows = f" on {entry['rows']} rows" if entry.get("rows") else ""
            recorded.append(f"{split} {_pm(entry['value'], entry.get('se'))}{rows}")
    return [
        f"{label} on {result['data']} ({result['rows']} rows): "
        f"{_pm(result['score'], result['score_se'])}",
        f"at the search: {', '.join(recorded) or 'no score recorded'}",
        f"without the adapter, same rows: "
        f"{_pm(result['no_adapter']['score'], result['no_adapter']['se'])}",
        f"verdict: {result['verdict']}",
    ]
