"""Which adapter to take, under the user's constraints, said in plain words."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from peftsearch.errors import UserError
from peftsearch.results.front import (
    baseline_bound,
    display_name,
    metric_name,
    plain_settings,
    unit_of,
)
from peftsearch.results.noise import Tolerances, beats, tied

__all__ = [
    "Constraints",
    "Recommendation",
    "parse_cost",
    "parse_memory",
    "parse_params",
    "recommend",
]

Preference = Literal["accuracy", "params", "cost"]
NEAR_BEST = 0.02  # "as good as the best" when within 2 accuracy points


def parse_params(text: str | None) -> tuple[int | None, float | None]:
    """``1%`` is a share of the model; ``200000`` or ``200k`` a count."""
    if text is None:
        return None, None
    value = text.strip().lower().replace(",", "").replace("_", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%|k|m)?", value)
    if match is None:
        raise UserError(
            f"cannot read {text!r}; write e.g. 1% or 200000 or 200k", where="--max-params"
        )
    number, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        return None, number
    return int(number * {"k": 1e3, "m": 1e6}.get(unit or "", 1)), None


def parse_cost(text: str | None) -> float | None:
    """``5usd``, ``$5`` or ``5``: dollars per run."""
    if text is None:
        return None
    value = text.strip().lower().removeprefix("$").removesuffix("usd").strip()
    try:
        return float(value)
    except ValueError:
        raise UserError(
            f"cannot read {text!r}; write e.g. 5usd or 0.5", where="--max-cost"
        ) from None


def parse_memory(text: str | None) -> float | None:
    """``12gb``, ``500mb`` or ``12`` (GB): megabytes."""
    if text is None:
        return None
    value = text.strip().lower().replace(" ", "").replace("ib", "b")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(gb|g|mb|m)?", value)
    if match is None:
        raise UserError(f"cannot read {text!r}; write e.g. 12gb or 500mb", where="--max-memory")
    number, unit = float(match.group(1)), match.group(2) or "gb"
    return number * (1024 if unit.startswith("g") else 1)


@dataclass(frozen=True)
class Constraints:
    max_params: int | None = None
    max_params_pct: float | None = None
    max_cost_usd: float | None = None
    min_accuracy: float | None = None
    prefer: Preference = "accuracy"
    max_memory_mb: float | None = None  # the trial's measured peak memory

    def violations(self, row: dict[str, Any]) -> list[str]:
        out = []
        if self.max_params is not None and row["trainable_params"] > self.max_params:
            out.append(f"{row['trainable_params']:,} trainable params > {self.max_params:,}")
        if self.max_params_pct is not None and row["trainable_pct"] > self.max_params_pct:
            out.append(f"{row['trainable_pct']:.2f}% trainable > {self.max_params_pct:g}%")
        if self.max_cost_usd is not None and row["cost_usd"] > self.max_cost_usd:
            out.append(f"${row['cost_usd']:.4f} per run > ${self.max_cost_usd:g}")
        if self.min_accuracy is not None and row["accuracy"] < self.min_accuracy:
            out.append(f"accuracy {row['accuracy']:.3f} < {self.min_accuracy:g}")
        if self.max_memory_mb is not None:
            peak = row.get("peak_memory_mb")
            if peak is None:
                out.append("peak memory not measured")
            elif peak > self.max_memory_mb:
                out.append(f"{peak / 1024:.2f} GB peak memory > {self.max_memory_mb / 1024:g} GB")
        return out

    def shortfall(self, row: dict[str, Any]) -> float:
        """How far a row is from meeting the constraints, each as a relative gap."""
        gaps = []
        if self.max_params is not None:
            gaps.append(max(0.0, row["trainable_params"] / self.max_params - 1))
        if self.max_params_pct is not None:
            gaps.append(max(0.0, row["trainable_pct"] / self.max_params_pct - 1))
        if self.max_cost_usd is not None:
            gaps.append(max(0.0, row["cost_usd"] / self.max_cost_usd - 1))
        if self.min_accuracy is not None:
            gaps.append(max(0.0, 1 - row["accuracy"] / self.min_accuracy))
        if self.max_memory_mb is not None:
            peak = row.get("peak_memory_mb")
            gaps.append(1.0 if peak is None else max(0.0, peak / self.max_memory_mb - 1))
        return sum(gaps)


@dataclass
class Recommendation:
    met: bool
    trial: int | None
    text: str
    choice: dict[str, Any] | None = None
    closest: dict[str, Any] | None = None
    traded: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    tied: list[int] = field(default_factory=list)  # trials tied with the pick within noise

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_choice(row: dict[str, Any]) -> str:
    """The plain-language settings of a trial row, in its method plug-in's words."""
    if row.get("description"):
        return str(row["description"])
    settings = dict(item.split("=", 1) for item in (row.get("params") or "").split() if "=" in item)
    return plain_settings(row["method"], {**settings, "lr": row.get("lr")})


def _facts(row: dict[str, Any], tolerances: Tolerances | None = None) -> str:
    error = (tolerances or Tolerances()).error(row)
    spread = f" ± {error:.3f}" if error else ""
    if (row.get("seeds") or 1) > 1:
        spread += f" (mean of {row['seeds']} training seeds, sd {row['accuracy_sd']:.3f})"
    if row.get("test_accuracy") is not None:
        spread += f" (on the held-out test set {row['test_accuracy']:.3f})"
    rows = row.get("eval_rows")
    scope = f" on {rows} eval {unit_of(row)}" if rows else ""
    from peftsearch.results.console import file_size

    size = (
        f", {file_size(row['adapter_bytes'])} of adapter files" if row.get("adapter_bytes") else ""
    )
    forgetting = ""
    if row.get("forgetting") is not None:
        error = f" ± {row['forgetting_se']:.3f}" if row.get("forgetting_se") is not None else ""
        forgetting = (
            f", forgetting {row['forgetting']:.3f}{error} (its loss on reference text rises "
            "that much over the base model's, nats per token)"
        )
    return (
        f"{metric_name(row)} {row['accuracy']:.3f}{spread}{scope}, "
        f"{row['trainable_pct']:.2f}% of parameters "
        f"trainable ({row['trainable_params']:,}{size}), ${row['cost_usd']:.4f} per run"
        f"{forgetting}"
    )


def _pick(
    candidates: list[dict[str, Any]], prefer: Preference, tolerances: Tolerances
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pick, and the other candidates tied with it on accuracy within noise.

    Of the trials tied with the most accurate one, the smallest wins (the cheapest with
    ``prefer="cost"``): the evaluation cannot tell them apart, their size can. Of equal
    size, the one measured on more training seeds (confirmation) goes first: a cost
    difference within a tie is timing noise, the extra seeds are evidence.
    """

    def accurate(r: dict[str, Any]) -> tuple[float, float, float]:
        return (-r["accuracy"], r["trainable_params"], r["cost_usd"])

    if prefer == "accuracy":
        top = min(candidates, key=accurate)
        ties = [r for r in candidates if tied(r, top, tolerances)]
        pick = min(
            ties,
            key=lambda r: (
                r["trainable_params"],
                -(r.get("seeds") or 1),
                r["cost_usd"],
                -r["accuracy"],
            ),
        )
        return pick, [r for r in ties if r["trial"] != pick["trial"]]
    best = max(r["accuracy"] for r in candidates)
    near = [r for r in candidates if r["accuracy"] >= best - NEAR_BEST]
    key = "trainable_params" if prefer == "params" else "cost_usd"
    pick = min(near, key=lambda r: (r[key], *accurate(r)))
    return pick, [r for r in near if r["trial"] != pick["trial"] and tied(r, pick, tolerances)]


def recommend(
    rows: list[dict[str, Any]],
    front: list[int],
    constraints: Constraints,
    baseline: dict[str, Any] | None = None,
) -> Recommendation:
    """Pick from the front; say what was traded away, which options sit nearby and, given
    the study's ``baseline`` (the model with no adapter), what fine-tuning bought."""
    trained = [r for r in rows if r["status"] == "COMPLETE" and r["accuracy"] is not None]
    tolerances = Tolerances.from_rows(rows)
    bound = baseline_bound(baseline)
    options = [
        r for r in trained if r["trial"] in front and (bound is None or beats(r, bound, tolerances))
    ]
    if not options and trained and bound is not None:
        return _nothing_beats(trained, bound, tolerances)
    if not options:
        return Recommendation(
            False, None, "No trial finished, so there is nothing to recommend yet."
        )
    fitting = [r for r in options if not constraints.violations(r)]
    if not fitting:
        closest = min(options, key=lambda r: (constraints.shortfall(r), -r["accuracy"]))
        why = "; ".join(constraints.violations(closest))
        return Recommendation(
            met=False,
            trial=None,
            closest=closest,
            text=(
                "No trial meets all your constraints. The closest is trial "
                f"{closest['trial']}: {describe_choice(closest)} "
                f"({_facts(closest, tolerances)}), "
                f"which misses on {why}."
            ),
        )
    pick, ties = _pick(fitting, constraints.prefer, tolerances)
    best = max(trained, key=lambda r: r["accuracy"])
    name = metric_name(pick)
    traded = []
    gap = (best["accuracy"] - pick["accuracy"]) * 100
    if best["trial"] != pick["trial"] and gap > 0:
        noise = tolerances.accuracy_gap(best, pick) * 100
        within = (
            f", a gap within the evaluation noise (±{noise:.1f} points)"
            if tied(best, pick, tolerances)
            else ""
        )
        traded.append(
            f"it is {gap:.1f} {name} points below the best found (trial {best['trial']}, "
            f"{display_name(best['method'])}, "
            f"{best['trainable_pct']:.2f}% trainable){within}"
        )
    else:
        traded.append("it is the most accurate trial found")
    smallest = min(options, key=lambda r: r["trainable_params"])
    if smallest["trial"] != pick["trial"]:
        ratio = pick["trainable_params"] / max(1, smallest["trainable_params"])
        traded.append(
            f"it trains {ratio:.1f}x the parameters of the smallest option (trial "
            f"{smallest['trial']}, {name} {smallest['accuracy']:.3f})"
        )
    text = (
        f"Use trial {pick['trial']}: {describe_choice(pick)}. "
        f"It reaches {_facts(pick, tolerances)}; " + "; ".join(traded) + "."
    )
    if bound is not None:
        gain = (pick["accuracy"] - bound["accuracy"]) * 100
        text += (
            f" Fine-tuning adds {gain:.1f} points of {name} over the model as it is "
            f"({bound['method']}: {name} {bound['accuracy']:.3f})."
        )
    if ties:
        names = ", ".join(str(r["trial"]) for r in sorted(ties, key=lambda r: r["trial"]))
        which = "cheapest" if constraints.prefer == "cost" else "smallest"
        text += (
            f" Trial(s) {names} are tied with it within the evaluation noise; it is the "
            f"{which} of them."
        )
    rival = _rival(trained, pick)
    if rival is not None:
        lead = (pick["accuracy"] - rival["accuracy"]) * 100
        text += f" It beat {display_name(rival['method'])} by {lead:.1f} points at similar size."
    alternatives = [
        f"trial {r['trial']}: {describe_choice(r)} ({_facts(r, tolerances)})"
        for r in sorted(options, key=lambda r: -r["accuracy"])
        if r["trial"] != pick["trial"]
    ][:3]
    return Recommendation(
        True,
        pick["trial"],
        text,
        choice=pick,
        traded=traded,
        alternatives=alternatives,
        tied=sorted(r["trial"] for r in ties),
    )


def _nothing_beats(
    trained: list[dict[str, Any]], bound: dict[str, Any], tolerances: Tolerances
) -> Recommendation:
    """Every trained trial is within the noise of (or below) the model with no adapter."""
    best = max(trained, key=lambda r: r["accuracy"])
    name = metric_name(best)
    gap = tolerances.error(best) or 0.0
    return Recommendation(
        met=False,
        trial=None,
        closest=best,
        text=(
            f"No trial beats the model with no adapter ({bound['method']}: {name} "
            f"{bound['accuracy']:.3f}) beyond the noise, so fine-tuning has not shown a "
            f"measurable gain here. The best trial, {best['trial']} "
            f"({display_name(best['method'])}), reaches {name} {best['accuracy']:.3f} "
            f"± {gap:.3f}. Keep the model as it is, or search further: more steps "
            "(training.max_steps), more data (data.max_train_samples), or other methods and "
            "learning rates."
        ),
    )


def _rival(trained: list[dict[str, Any]], pick: dict[str, Any]) -> dict[str, Any] | None:
    """The best trial of another method within 3x of the pick's size, if it lost."""
    similar = [
        r
        for r in trained
        if r["method"] != pick["method"]
        and 1 / 3 <= r["trainable_params"] / max(1, pick["trainable_params"]) <= 3
        and r["accuracy"] < pick["accuracy"]
    ]
    return max(similar, key=lambda r: r["accuracy"]) if similar else None
