"""Recommendation and the HTML report, checked in a real headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app
from peftsearch.results.recommend import (
    Constraints,
    parse_cost,
    parse_memory,
    parse_params,
    recommend,
)


def row(
    trial: int, method: str, accuracy: float, params: int, cost: float, status: str = "COMPLETE"
) -> dict:
    return {
        "trial": trial,
        "method": method,
        "params": "rank=8 targets=qv layers=all",
        "lr": 1e-3,
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "trainable_params": params,
        "trainable_pct": params / 1e5,
        "cost_usd": cost,
        "device_seconds": cost * 1000,
        "status": status,
        "error": None,
    }


ROWS = [
    row(0, "lora", 0.91, 40000, 0.010),
    row(1, "ia3", 0.89, 5000, 0.008),
    row(2, "prompt_tuning", 0.70, 6000, 0.009),
    row(3, "dora", 0.92, 90000, 0.020),
    row(4, "lora", 0.50, 90000, 0.030),
]
FRONT = [0, 1, 3]


def test_recommend_most_accurate_by_default() -> None:
    advice = recommend(ROWS, FRONT, Constraints())
    assert advice.met and advice.trial == 3
    assert advice.text.startswith(
        "Use trial 3: DoRA rank 8 on query/value projections in every layer"
    )
    assert "it is the most accurate trial found" in advice.text
    assert len(advice.alternatives) == 2


def test_recommend_under_a_size_cap_says_what_it_traded() -> None:
    advice = recommend(ROWS, FRONT, Constraints(max_params_pct=0.5))
    assert advice.trial == 0
    assert "1.0 accuracy points below the best found (trial 3" in advice.text
    assert "8.0x the parameters of the smallest option (trial 1" in advice.text


def test_prefer_params_takes_the_smallest_near_the_best() -> None:
    advice = recommend(ROWS, FRONT, Constraints(prefer="params"))
    assert advice.trial == 0  # IA3 is 3 points behind the best: not "near" it
    advice = recommend(ROWS, FRONT, Constraints(prefer="params", max_params=50000))
    assert advice.trial == 1  # best under the cap is 0.91, and IA3 is within 2 points
    assert "It beat prompt tuning by 19.0 points at similar size." in advice.text


def test_no_trial_meets_the_constraints() -> None:
    advice = recommend(ROWS, FRONT, Constraints(min_accuracy=0.95, max_cost_usd=0.009))
    assert not advice.met and advice.trial is None and advice.closest["trial"] == 1
    assert advice.text.startswith("No trial meets all your constraints. The closest is trial 1")
    assert "misses on accuracy 0.890 < 0.95" in advice.text


def test_recommend_under_a_memory_limit() -> None:
    """``--max-memory``: a trial whose measured peak is over it is not taken; one that
    never measured its peak cannot be vouched for."""
    peaks = (900, 300, 250, 14000, 90)
    rows = [{**r, "peak_memory_mb": peak} for r, peak in zip(ROWS, peaks, strict=True)]
    advice = recommend(rows, FRONT, Constraints(max_memory_mb=12 * 1024))
    assert advice.trial == 0  # DoRA (trial 3) is the most accurate, at 13.7 GB
    advice = recommend(rows, FRONT, Constraints(max_memory_mb=200))
    assert not advice.met and "900 MB" not in advice.text
    assert "0.29 GB peak memory > 0.195312 GB" in " ".join(
        Constraints(max_memory_mb=200).violations(rows[1])
    )
    unmeasured = {**rows[0], "peak_memory_mb": None}
    assert Constraints(max_memory_mb=200).violations(unmeasured) == ["peak memory not measured"]


def test_the_report_charts_memory_against_accuracy() -> None:
    from peftsearch.results.recommend import Recommendation
    from peftsearch.results.report import render_report

    def page(rows: list[dict]) -> str:
        advice = Recommendation(True, 0, "Use trial 0.")
        return render_report(
            title="s", rows=rows, front=FRONT, recommendation=advice, summary={},
            budget=None, stop_reason=None,
        )  # fmt: skip

    measured = page([{**r, "peak_memory_mb": 100.0 + r["trial"]} for r in ROWS])
    assert "Accuracy vs peak memory (MB)" in measured
    assert "Accuracy vs peak memory" not in page(ROWS)
    assert "<th>quantization</th>" not in page(ROWS)
    assert "<th>quantization</th>" in page([{**r, "quantization": "nf4"} for r in ROWS])


def test_parse_flags() -> None:
    assert parse_params("1%") == (None, 1.0)
    assert parse_params("200000") == (200000, None)
    assert parse_params("200k") == (200000, None)
    assert parse_cost("5usd") == 5.0 and parse_cost("$0.5") == 0.5
    assert parse_memory("12gb") == 12 * 1024 and parse_memory("500mb") == 500
    assert parse_memory("1.5") == 1.5 * 1024 and parse_memory("8GiB") == 8 * 1024


@pytest.fixture(scope="module")
def study_dir(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("report")
    config = tiny_config(
        tiny_model_dir,
        tiny_data,
        out / "results",
        search={"study_name": "tiny", "n_trials": 5, "seed": 1},
    )
    path = out / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return out / "results" / "tiny"


def test_cli_recommend_json_and_export_pick(study_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["recommend", str(study_dir), "--json"])
    assert result.exit_code == 0, result.output
    advice = json.loads(result.output)
    assert (
        advice["met"]
        and isinstance(advice["trial"], int)
        and advice["text"].startswith("Use trial")
    )
    # trials no better than the model with no adapter: off the front, never recommended
    pareto = json.loads((study_dir / "pareto.json").read_text())
    floor = max(b["accuracy"] for b in pareto["summary"]["baseline"].values())
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    at_floor = {int(r["trial"]) for r in rows if r["accuracy"] and float(r["accuracy"]) <= floor}
    assert at_floor and at_floor <= set(pareto["summary"]["below_baseline"])
    assert not at_floor & {r["trial"] for r in pareto["pareto"]}
    assert advice["trial"] not in at_floor
    exported = CliRunner().invoke(
        app, ["export", str(study_dir), "--pick", "recommended", "--out", str(tmp_path / "a")]
    )
    assert exported.exit_code == 0, exported.output
    assert f"Exported trial {advice['trial']} " in exported.output
    refused = CliRunner().invoke(app, ["recommend", str(study_dir), "--max-params", "lots"])
    assert refused.exit_code == 2 and "--max-params: cannot read 'lots'" in refused.output
    roomy = CliRunner().invoke(app, ["recommend", str(study_dir), "--max-memory", "12gb"])
    assert roomy.exit_code == 0 and roomy.output.startswith("Use trial"), roomy.output
    # the tiny model's trials peak under a megabyte: a limit under that is for the unit test
    unread = CliRunner().invoke(app, ["recommend", str(study_dir), "--max-memory", "lots"])
    assert unread.exit_code == 2 and "--max-memory: cannot read 'lots'" in unread.output
    none = CliRunner().invoke(
        app,
        [
            "export",
            str(study_dir),
            "--pick",
            "recommended",
            "--min-accuracy",
            "1.01",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert none.exit_code == 2 and "No trial meets all your constraints" in none.output


def chromium_driver(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: `make test` installs them")
        pytest.skip("chromium/chromedriver not installed (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,2400",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Chromium keeps crash reports and dconf state under XDG folders whatever the
    # profile: point those into this test's folder so nothing lands in ~.
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
    }
    return webdriver.Chrome(service=Service(driver, env=env), options=options)


def test_report_renders_in_chromium(study_dir: Path, tmp_path: Path) -> None:
    import csv

    from selenium.webdriver.support.ui import WebDriverWait

    assert (study_dir / "report.html").is_file()  # `run` writes it
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(study_dir), "--out", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    # Self-contained: no script or stylesheet is fetched from anywhere.
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text)
    # plotly.js's basic partial bundle, not all of it (4.8 MB): the file stays small
    assert "plotly.js (basic - minified)" in text
    assert page.stat().st_size <= 1_500_000, page.stat().st_size
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    expected = len([r for r in rows if r["status"] in ("COMPLETE", "PRUNED") and r["accuracy"]])
    assert expected >= 3

    driver = chromium_driver(tmp_path)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: (
                d.execute_script(
                    "return document.querySelectorAll('.js-plotly-plot .main-svg').length"
                )
                >= 4
            )
        )
        points = driver.execute_script(
            "return ['plot-0', 'plot-1'].map(id => document.getElementById(id)"
            ".querySelectorAll('.scatterlayer .point').length)"
        )
        # every plotted trial once, and the ring around the most accurate one
        assert points == [expected + 1, expected + 1]
        assert "Use trial" in driver.find_element("css selector", ".recommendation").text
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_the_report_draws_the_baseline_and_explains_the_best_trial() -> None:
    """The no-adapter score is a dashed line on every accuracy chart; a trial below it
    is marked so in the table; the most accurate trial is ringed and explained."""
    from peftsearch.results.recommend import Recommendation
    from peftsearch.results.report import render_report

    baseline = {"majority_class": {"method": "always 'pos'", "accuracy": 0.5, "eval_rows": 400}}
    rows = [*ROWS, {**ROWS[1], "trial": 5, "accuracy": 0.49, "method": "prompt_tuning"}]
    page = render_report(
        title="s", rows=rows, front=FRONT, recommendation=Recommendation(True, 0, "Use trial 0."),
        summary={"baseline": baseline}, budget=None, stop_reason=None,
    )  # fmt: skip
    assert page.count("no adapter 0.500") >= 3  # each projection, by method, convergence
    assert "COMPLETE, no better than no adapter" in page
    assert "most accurate (trial 3)" in page
    assert "Most accurate trial: 3 (accuracy 0.920)" in page
