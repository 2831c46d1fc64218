"""After the search: an exported adapter is verified against what its export (or its
registry version) recorded, and re-scored on new data (``peftsearch verify``,
``peftsearch evaluate``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def study(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A finished tiny study (LoRA and a bottleneck adapter) and a LoRA export of it,
    registered in the study's MLflow store."""
    out = tmp_path_factory.mktemp("after")
    config = tiny_config(tiny_model_dir, tiny_data, out / "results")
    config["model"]["revision"] = "v1.0"
    config["space"] = {
        "methods": ["lora", "bottleneck_adapter"],
        "lora": {"lr": {"low": 5e-3, "high": 2e-2}},
    }
    config["search"].update(n_trials=2, early_stopping=False)
    path = out / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    ran = cli("run", str(path))
    assert ran.exit_code == 0, ran.output
    study_dir = out / "results" / "tiny"
    rows = {r["method"]: r for r in _rows(study_dir)}
    exported = out / "lora-adapter"
    done = cli(
        "export",
        str(study_dir),
        "--trial",
        str(rows["lora"]["trial"]),
        "--out",
        str(exported),
        "--register",
        "tiny-lora",
    )
    assert done.exit_code == 0, done.output
    return {"study_dir": study_dir, "rows": rows, "export": exported, "out": out}


def _rows(study_dir: Path) -> list[dict[str, Any]]:
    from peftsearch.pipelines.api import load

    return load(study_dir).rows


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def test_a_fresh_export_verifies(study: dict[str, Any]) -> None:
    result = cli("verify", str(study["export"]))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ")
    assert "files' sha256" in result.output and "the base's files" in result.output
    import peftsearch

    assert peftsearch.verify(study["export"]).ok


def test_one_changed_byte_fails_naming_the_file(study: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(study["export"], tmp_path / "changed")
    weights = folder / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    result = cli("verify", str(folder))
    assert result.exit_code == 1, result.output
    assert "MISMATCH" in result.output and "adapter_model.safetensors: sha256" in result.output


def test_another_base_revision_fails_naming_the_key(study: dict[str, Any]) -> None:
    result = cli("verify", str(study["export"]), "--revision", "v2.0")
    assert result.exit_code == 1, result.output
    assert "revision: the base to deploy on is" in result.output
    assert "@v2.0" in result.output and "@v1.0" in result.output


def test_changed_base_files_fail_naming_the_base(
    study: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The recorded base is a local folder: a copy of it with one file changed is not
    the base the search trained on."""
    base = _copy(tiny_model_dir, tmp_path / "copy" / tiny_model_dir.name)
    folder = _copy(study["export"], tmp_path / "export")
    record_path = folder / "peftsearch_export.json"
    record = json.loads(record_path.read_text())
    record["base"]["name_or_path"] = str(base)
    record_path.write_text(json.dumps(record))
    config = base / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "edited"}', 1))
    result = cli("verify", str(folder))
    assert result.exit_code == 1, result.output
    assert f"base model {base}: its files hash to" in result.output.replace("\n", "")


def test_the_registered_version_is_the_reference_with_registry(
    study: dict[str, Any], tmp_path: Path
) -> None:
    good = cli("verify", str(study["export"]), "--registry", "tiny-lora")
    assert good.exit_code == 0, good.output
    assert "registered model 'tiny-lora' version 1" in good.output.replace("\n", "")
    folder = _copy(study["export"], tmp_path / "changed")
    config = folder / "adapter_config.json"
    config.write_text(config.read_text() + "\n")
    # the record travels with the folder: re-pin it, as someone covering a change would
    record_path = folder / "peftsearch_export.json"
    record = json.loads(record_path.read_text())
    from peftsearch.results.export import adapter_digests

    record["files"] = adapter_digests(folder)
    record_path.write_text(json.dumps(record))
    assert cli("verify", str(folder)).exit_code == 0  # its own record is fooled
    caught = cli("verify", str(folder), "--registry", "tiny-lora/1")
    assert caught.exit_code == 1, caught.output
    assert "adapter_config.json: sha256" in caught.output


def test_a_folder_without_a_record_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    result = cli("verify", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "peftsearch_export.json" in result.output and "Traceback" not in result.output
    missing = cli("verify", str(tmp_path), "--registry", "no-such-model")
    assert missing.exit_code == 2


def _evaluate(*args: str) -> dict[str, Any]:
    result = cli("evaluate", *args, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def _record(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "peftsearch_export.json").read_text()))


def test_evaluate_on_the_searchs_eval_data_reproduces_its_figure(
    study: dict[str, Any], tiny_data: dict[str, Path]
) -> None:
    result = _evaluate(str(study["export"]), "--data", str(tiny_data["eval"]))
    recorded = _record(study["export"])["scores"]["eval"]
    assert result["rows"] == recorded["rows"] == 48
    assert result["score"] == recorded["value"]  # the same rows, the same model: exactly
    assert result["verdict"].startswith("within noise of the search's")
    assert not result["beyond_noise"]
    assert result["score_se"] == pytest.approx(recorded["se"])
    # the base with its new head untrained, on the same rows
    assert result["no_adapter"]["score"] < result["score"]
    words = cli("evaluate", str(study["export"]), "--data", str(tiny_data["eval"]))
    assert words.exit_code == 0, words.output
    assert "verdict: within noise of the search's" in words.output
    assert "without the adapter, same rows:" in words.output


def test_evaluate_flags_a_drop_beyond_noise(
    study: dict[str, Any], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The eval rows with their labels permuted (each one swapped for the other): the
    adapter's answers no longer fit, and the verdict says so."""
    import pandas as pd

    frame = pd.read_csv(tiny_data["eval"])
    values = sorted(frame["label"].unique())
    frame["label"] = frame["label"].map(dict(zip(values, values[::-1], strict=True)))
    permuted = tmp_path / "permuted.csv"
    frame.to_csv(permuted, index=False)
    assert _record(study["export"])["scores"]["eval"]["value"] >= 0.75  # it learned
    result = _evaluate(str(study["export"]), "--data", str(permuted))
    assert result["beyond_noise"] and result["change"] < 0
    assert result["verdict"].startswith("dropped ") and "beyond noise" in result["verdict"]
    assert result["verdict"].endswith("review it")


def test_a_label_the_adapter_never_saw_is_one_line_naming_it(
    study: dict[str, Any], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    lines = tiny_data["eval"].read_text().splitlines()
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([*lines, "a puzzling film,maybe"]) + "\n")
    result = cli("evaluate", str(study["export"]), "--data", str(extra))
    assert result.exit_code == 2, result.output
    assert "label 'maybe' is not one the adapter was trained on" in result.output
    assert str(extra) in result.output.replace("\n", "") and "Traceback" not in result.output


def test_evaluate_scores_a_bottleneck_adapter(
    study: dict[str, Any], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    trial = study["rows"]["bottleneck_adapter"]["trial"]
    folder = tmp_path / "bottleneck"
    done = cli("export", str(study["study_dir"]), "--trial", str(trial), "--out", str(folder))
    assert done.exit_code == 0, done.output
    result = _evaluate(str(folder), "--data", str(tiny_data["eval"]))
    assert result["score"] == _record(folder)["scores"]["eval"]["value"]


def test_a_review_is_logged_to_the_registered_version(
    study: dict[str, Any], tiny_data: dict[str, Path]
) -> None:
    from mlflow import MlflowClient

    result = _evaluate(
        str(study["export"]), "--data", str(tiny_data["eval"]), "--registry", "tiny-lora/1"
    )
    logged = result["logged"]
    client = MlflowClient(tracking_uri=_record(study["export"])["tracking_uri"])
    version = client.get_model_version("tiny-lora", "1")
    assert version.tags["peftsearch.last_review"] == logged["run_id"]
    run = client.get_run(logged["run_id"])
    assert run.data.tags["peftsearch.model_version"] == "1"
    assert run.data.metrics["score"] == pytest.approx(result["score"])
    assert run.data.tags["verdict"] == result["verdict"]
    # a second review adds to the history
    _evaluate(str(study["export"]), "--data", str(tiny_data["eval"]), "--registry", "tiny-lora")
    experiment = run.info.experiment_id
    reviews = client.search_runs(
        [experiment], "tags.`peftsearch.model_version` = '1' and tags.`peftsearch.kind` = 'review'"
    )
    assert len(reviews) == 2


def test_evaluate_scores_a_causal_lm_export_by_exact_match(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_llama_dir, tiny_lm_data, tmp_path / "out")
    config["model"]["task"] = "causal-lm"
    config["space"] = {"methods": ["lora"], "lora": {"lr": {"low": 3e-2, "high": 6e-2}}}
    config["search"].update(n_trials=1, early_stopping=False)
    config["evaluation"] = {"metric": "exact_match", "max_new_tokens": 3, "forgetting": False}
    config["tracking"] = {"enabled": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    ran = cli("run", str(path))
    assert ran.exit_code == 0, ran.output
    folder = tmp_path / "lm-adapter"
    done = cli("export", str(tmp_path / "out" / "tiny"), "--trial", "0", "--out", str(folder))
    assert done.exit_code == 0, done.output
    result = _evaluate(str(folder), "--data", str(tiny_lm_data["eval"]))
    recorded = _record(folder)["scores"]["eval"]
    assert result["metric"] == "exact_match" and result["rows"] == 24
    assert result["score"] == recorded["value"]
    assert {"exact_match", "token_accuracy"} <= set(result["metrics"])


def test_data_with_one_class_only_is_scored_on_the_adapters_labels(
    study: dict[str, Any], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A review's data may hold some of the labels: they keep the adapter's ids."""
    import pandas as pd

    frame = pd.read_csv(tiny_data["eval"])
    first = sorted(frame["label"].unique())[-1]
    only = tmp_path / "one-class.csv"
    frame[frame["label"] == first].to_csv(only, index=False)
    result = _evaluate(str(study["export"]), "--data", str(only))
    assert result["rows"] == int((frame["label"] == first).sum())
    assert result["score"] >= 0.5  # scored against the right class, not a renumbered one
