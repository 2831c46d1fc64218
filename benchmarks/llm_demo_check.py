"""The LLM demo's live check (issue 25): what `make demo-llm` bought, in its own budget.

Run:

    .venv/bin/python benchmarks/llm_demo_check.py                 # runs the demo, then checks
    .venv/bin/python benchmarks/llm_demo_check.py --study peftsearch-out/llm-demo   # checks one

Without ``--study`` it runs what `make demo-llm` runs (``peftsearch init --example llm``,
then ``peftsearch run``) into a temporary folder. It prints the study's zero-shot exact
match (the base model with no adapter), the model-free bar (always giving the most
common answer), the best trial and its margin over zero-shot, and each trial of the
initial design against the model-free bar. Targets: the best trial at least 40 points of
exact match over zero-shot; no design trial at chance, that is within one standard error
of the difference of the most common answer's rate, or below it (the product's own noise
rule, results/noise.py); a design trial pruned at a rung or cut by the budget is shown as
not finished. Ends with one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MARGIN = 0.40  # points of exact match over zero-shot (issue 25)


def run_demo(out: Path) -> tuple[Path, float]:
    """`make demo-llm`'s two commands into ``out``; the study folder and the wall time."""
    cli = str(Path(sys.executable).with_name("peftsearch"))
    config = out / "llm.yaml"
    subprocess.run([cli, "init", str(config), "--example", "llm", "--force"], check=True)
    began = time.perf_counter()
    subprocess.run([cli, "run", str(config), "--set", f"output_dir={out}"], check=True)
    return out / "llm-demo", time.perf_counter() - began


def design_labels(result: Any) -> dict[int, str]:
    """Trial number -> initial-design label, from the study's records."""
    from peftsearch.search import records
    from peftsearch.search.study import load_existing_study

    study = load_existing_study(result.config.search.study_name, result.config.storage_url)
    return {
        int(r.number): r.initial_design
        for r in records.read_records(study)
        if r.initial_design and r.number is not None
    }


def check(study_dir: Path) -> dict[str, Any]:
    from peftsearch.pipelines.api import load
    from peftsearch.results.noise import accuracy_error

    result = load(study_dir)
    baseline = result.extra.get("summary", {}).get("baseline") or {}
    zero_shot = (baseline.get("base_model") or {}).get("accuracy")
    bar = next(
        (entry for key, entry in baseline.items() if key != "base_model"), None
    )  # the task's model-free baseline (most_common_answer)
    complete = [
        r for r in result.rows if r.get("status") == "COMPLETE" and r.get("accuracy") is not None
    ]
    best = max(complete, key=lambda r: float(r["accuracy"]), default=None)
    labels = design_labels(result)

    def verdict(row: dict[str, Any]) -> str:
        if row.get("status") != "COMPLETE" or row.get("accuracy") is None:
            return "not finished"  # pruned at a rung or cut by the budget: no final score
        if bar is None:
            return "no model-free bar"
        gap = float(row["accuracy"]) - float(bar["accuracy"])
        errors = [accuracy_error(row) or 0.0, accuracy_error(bar) or 0.0]
        return "above chance" if gap > math.sqrt(sum(e * e for e in errors)) else "at chance"

    design = [
        {
            "trial": int(r["trial"]),
            "label": labels[int(r["trial"])],
            "status": r.get("status"),
            "exact_match": r.get("accuracy"),
            "verdict": verdict(r),
        }
        for r in result.rows
        if int(r["trial"]) in labels
    ]
    margin = (
        float(best["accuracy"]) - float(zero_shot)
        if best is not None and zero_shot is not None
        else None
    )
    return {
        "study": str(study_dir),
        "trials": len(result.rows),
        "zero_shot": zero_shot,
        "most_common_answer": None if bar is None else bar.get("accuracy"),
        "best": None
        if best is None
        else {"trial": best["trial"], "method": best["method"], "exact_match": best["accuracy"]},
        "margin_over_zero_shot": margin,
        "margin_target": MARGIN,
        "meets_margin": margin is not None and margin >= MARGIN,
        "design": design,
        "design_at_chance": [d["label"] for d in design if d["verdict"] == "at chance"],
        # every finished design trial beyond the noise of the most common answer's rate
        "meets_design": bar is not None
        and any(d["verdict"] == "above chance" for d in design)
        and not any(d["verdict"] == "at chance" for d in design),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=None, help="check this study folder")
    args = parser.parse_args()
    wall = None
    if args.study is None:
        with tempfile.TemporaryDirectory() as temp:
            study, wall = run_demo(Path(temp))
            figures = check(study)
    else:
        figures = check(args.study)
    figures["wall_seconds"] = wall
    for entry in figures["design"]:
        shown = "-" if entry["exact_match"] is None else f"{float(entry['exact_match']):.3f}"
        print(
            f"design trial {entry['trial']} ({entry['label']}): exact match {shown}, "
            f"{entry['verdict']}"
        )
    print(
        f"zero-shot {figures['zero_shot']}, most common answer {figures['most_common_answer']}, "
        f"best {figures['best']}: {figures['margin_over_zero_shot']} over zero-shot "
        f"(target >= {MARGIN})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
