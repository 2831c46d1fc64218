"""Do peft's LoRA variants and the newer methods earn a place in the default space?

Run (after ``benchmarks/peft_table.py --dataset sst2 --variants`` has measured them):

    .venv/bin/python benchmarks/variant_replay.py --seeds 20 --json

Each arm is the product's default search (``default`` strategy of
benchmarks/search_quality.py: TPE, the initial design, early stopping, the budget)
replayed against the measured SST-2 rows. The baseline is the table's space with LoRA on
the sub-grid the variant rows were measured on (``LORA_SUBGRID``: ranks 4 and 16, both
target sets, every block); each arm adds one thing to it: a LoRA variant as a searched
knob (``use_rslora: [false, true]``, ``init_lora_weights: [true, pissa]``, ...), or a new
method with its grid. Both arms of a pair are scored against the same truth: the
hypervolume and the exhaustive cost of every row the arm's space can reach (so a variant
that adds nothing to the front leaves the baseline's score as it was).

Timings: the variant rows were measured in another session than the main table, at
another machine load (identical-compute pairs, e.g. rsLoRA against plain LoRA of the
same shape, ran a median 1.6x faster per step there), so measured seconds are not
comparable across the two files. ``comparable_timings`` puts the variant rows on the
main table's clock: a variant whose compute is plain LoRA's (rsLoRA, LoRA+, Gaussian)
takes its plain twin's timings; PiSSA, OLoRA and EVA take the twin's step and
evaluation times and its setup scaled by their own extra setup (the SVD or EVA pass,
relative to identical-compute rows of their session); VeRA and HRA, which have no twin,
are scaled by the median ratios of the identical-compute pairs.

Rule (issue 24): a variant or method enters the default space only if its arm raises
the median HV at 15% of the exhaustive cost by at least ``HV_MARGIN`` or needs at most
95% of the baseline's budget to reach 95% of the true front's HV.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peft_table import (
    LORA_SUBGRID,
    LORA_SUBGRID_LRS,
    NEW_METHODS,
    TABLE_LR,
    TABLES,
    VARIANTS,
    lr_grid,
    space_overrides,
    table_config,
)
from search_quality import Row, Table, load_table, replay, summarise

HORIZON = 0.25  # the default reaches 95% near 3% of the exhaustive cost on SST-2
HV_MARGIN = 0.01
FRACTIONS = ("0.1", "0.15", "0.25")
# each variant knob's plain value: a space without the knob trains with it
PLAIN: dict[str, Any] = {"use_rslora": False, "init_lora_weights": True, "loraplus_lr_ratio": 1.0}


def arm_space(arm: str | None) -> dict[str, Any]:
    """The ``space`` section of an arm: the baseline (``None``), a variant, a method."""
    space = copy.deepcopy(space_overrides("sst2"))
    space["lora"] = dict(LORA_SUBGRID)
    if arm in VARIANTS:
        space["lora"].update(VARIANTS[arm])
    elif arm in NEW_METHODS:
        space["methods"].append(arm)
        space[arm] = dict(NEW_METHODS[arm])
    return space


def _key(row: Row) -> tuple[str, str, float | None, float]:
    return row.method, row.config, row.loraplus_lr_ratio, row.lr


def grid_lrs(method: str) -> list[float]:
    """The learning rates each method's rows were measured at."""
    from peft_table import NEW_METHOD_LR

    if method == "lora":
        return LORA_SUBGRID_LRS
    if method in NEW_METHOD_LR:
        return lr_grid(*NEW_METHOD_LR[method], 3)
    points = 4 if method in TABLE_LR else 3
    return lr_grid(*TABLE_LR[method], points)


def fits(params: dict[str, Any], space: dict[str, Any]) -> bool:
    """Whether a measured row is a config of ``space`` (every knob's value is among its
    options; a knob the row lacks took the option's plain value, listed first)."""
    method = params["method"]
    if method not in space["methods"]:
        return False
    options = space[method]
    for key, value in params.items():
        if key == "method":
            continue
        knob = key.split(".", 1)[1]
        if knob == "lr":
            if not any(abs(value - lr) <= 1e-9 + 1e-3 * lr for lr in grid_lrs(method)):
                return False
        elif knob in options:
            if value not in options[knob]:
                return False
        elif value != PLAIN.get(knob, ...):  # a variant this space does not search
            return False
    return True


def rows_of(space: dict[str, Any], tables: list[Path]) -> list[Row]:
    rows = []
    for path in tables:
        params = _params_by_row(path)
        loaded = load_table(path)
        if path.name.endswith("_variants.csv"):
            loaded = comparable_timings(loaded, params, tables[0])
        rows += [r for r, p in zip(loaded, params, strict=True) if fits(p, space)]
    return rows


SAME_COMPUTE = ("rslora", "loraplus", "gaussian")  # plain LoRA's shapes and steps


def _variant(params: dict[str, Any]) -> str:
    if params["method"] != "lora":
        return str(params["method"])
    if params.get("lora.use_rslora"):
        return "rslora"
    if params.get("lora.loraplus_lr_ratio", 1.0) != 1.0:
        return "loraplus"
    return str(params.get("lora.init_lora_weights"))


def comparable_timings(
    rows: list[Row], params: list[dict[str, Any]], main_table: Path
) -> list[Row]:
    """The variant rows on the main table's clock (see the module docstring)."""
    import dataclasses

    twins: dict[tuple[Any, ...], Row] = {}
    for row, p in zip(load_table(main_table), _params_by_row(main_table), strict=True):
        if p["method"] == "lora":
            twins[(p["lora.rank"], p["lora.targets"], p["lora.layers"], p["lora.lr"])] = row

    def twin(p: dict[str, Any]) -> Row | None:
        return twins.get((p["lora.rank"], p["lora.targets"], p["lora.layers"], p["lora.lr"]))

    same = [
        (r, t)
        for r, p in zip(rows, params, strict=True)
        if _variant(p) in SAME_COMPUTE and (t := twin(p)) is not None
    ]
    ratio = {
        name: statistics.median(getattr(t, name) / getattr(r, name) for r, t in same)
        for name in ("step_seconds", "eval_seconds", "setup_seconds")
    }
    plain_setup = statistics.median(r.setup_seconds for r, _ in same)
    out = []
    for row, p in zip(rows, params, strict=True):
        kind, found = _variant(p), twin(p) if p["method"] == "lora" else None
        if found is not None and kind in SAME_COMPUTE:
            times = {n: getattr(found, n) for n in ratio}
        elif found is not None:  # PiSSA, OLoRA, EVA: plain steps, their own extra setup
            times = {
                "step_seconds": found.step_seconds,
                "eval_seconds": found.eval_seconds,
                "setup_seconds": found.setup_seconds * row.setup_seconds / plain_setup,
            }
        else:
            times = {n: getattr(row, n) * ratio[n] for n in ratio}
        # an encoder row's rung costs its evaluation
        out.append(dataclasses.replace(row, **times, rung_seconds=times["eval_seconds"]))
    return out


def _params_by_row(path: Path) -> list[dict[str, Any]]:
    """The Optuna params of the rows ``load_table`` keeps, in its order."""
    import csv

    with path.open() as handle:
        return [
            json.loads(raw["params"])
            for raw in csv.DictReader(handle)
            if raw["status"] == "COMPLETE" and not int(raw.get("seed") or 0)
        ]


def arm_config(space: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """(model info, the space's method options, the config a search of it runs with)."""
    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import build_model_info

    with tempfile.TemporaryDirectory() as temp:
        config = parse_config({**table_config("sst2", Path(temp)), "space": space})
        info, _ = build_model_info(config, ["0", "1"])
        return info, config.method_options(), config


def measure_arm(table: Table, space: dict[str, Any], seeds: int) -> dict[str, Any]:
    info, options, config = arm_config(space)
    runs = [replay(table, info, options, config, "default", s, HORIZON) for s in range(seeds)]
    summary = summarise(runs, HORIZON)
    return {
        "hv_at": {f: summary["hv_at"][f] for f in FRACTIONS},
        "budget_to_95": summary["budget_to_95"],
        "seeds_reaching_95": summary["seeds_reaching_95"],
    }


def decide(base: dict[str, Any], arm: dict[str, Any]) -> tuple[bool, str]:
    gain = arm["hv_at"]["0.15"] - base["hv_at"]["0.15"]
    b, a = base["budget_to_95"], arm["budget_to_95"]
    cheaper = a is not None and (b is None or a <= 0.95 * b)
    why = f"HV@15% {gain:+.3f}; budget to 95% {a} vs {b}"
    return gain >= HV_MARGIN or cheaper, why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--arms", nargs="*", default=[*VARIANTS, *NEW_METHODS])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tables = [TABLES / "sst2_minilm.csv", TABLES / "sst2_minilm_variants.csv"]
    baseline_space = arm_space(None)
    baseline_configs = {_key(r) for r in rows_of(baseline_space, tables)}
    figures: dict[str, Any] = {"seeds": args.seeds, "horizon": HORIZON, "arms": {}}
    for arm in args.arms:
        space = arm_space(arm)
        rows = rows_of(space, tables)
        added = [r for r in rows if _key(r) not in baseline_configs]
        table = Table(rows)
        baseline = measure_arm(table, baseline_space, args.seeds)
        with_it = measure_arm(table, space, args.seeds)
        enters, why = decide(baseline, with_it)
        best = max(added, key=lambda r: r.accuracy, default=None)
        figures["arms"][arm] = {
            "rows": len(rows),
            "added_rows": len(added),
            "added_complete_above_chance": sum(r.accuracy > 0.6 for r in added),
            "added_best_accuracy": best.accuracy if best else None,
            "table_best_accuracy": max(r.accuracy for r in rows),
            "baseline": baseline,
            "with_it": with_it,
            "enters_default": enters,
            "why": why,
        }
        if not args.json:
            print(arm, json.dumps(figures["arms"][arm]), flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
