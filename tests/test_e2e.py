"""`peftsearch run` end to end on the tiny BERT: files, MLflow, continuing, export."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_card_code, task_scores, tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def searched(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    out = tmp_path_factory.mktemp("e2e")
    config = tiny_config(tiny_model_dir, tiny_data, out / "results")
    # A local folder has no revisions; the export must still name and merge this one.
    config["model"]["revision"] = "v1.0"
    config["space"] = {
        "methods": ["lora", "ia3", "prompt_tuning"],
        "lora": {"lr": {"low": 5e-3, "high": 2e-2}},
    }
    # every trial runs to the end: these tests read their runs, files and exports (early
    # stopping has tests of its own; here it would stop a trial on timing noise)
    config["search"]["early_stopping"] = False
    path = out / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    output = cli("run", str(path))
    return {"path": path, "study_dir": out / "results" / "tiny", "output": output, "out": out}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_study_folder(searched: dict) -> None:
    study_dir: Path = searched["study_dir"]
    trials = read_csv(study_dir / "trials.csv")
    assert [int(r["trial"]) for r in trials] == [0, 1, 2]
    memory = {"peak_memory_mb", "predicted_memory_mb", "quantization", "micro_batch_size"}
    assert memory | {"memory_note"} <= set(trials[0])
    # the frozen-layer cache served the block below a top-half adapter, and only that
    for row in trials:
        upper = "layers=top-half" in row["params"] and row["method"] != "prompt_tuning"
        assert row["cached_layers"] == ("1" if upper else "0"), row
    pareto = json.loads((study_dir / "pareto.json").read_text())
    front = [row["trial"] for row in pareto["pareto"]]
    assert front and set(front) <= {0, 1, 2}
    assert [int(r["trial"]) for r in read_csv(study_dir / "pareto.csv")] == front
    for row in pareto["pareto"]:
        assert row["status"] == "COMPLETE"
        assert {
            "method",
            "params",
            "accuracy",
            "trainable_params",
            "trainable_pct",
            "cost_usd",
            "device_seconds",
        } <= set(row)
        # memory, measured per trial and predicted before it launched (Linux: /proc)
        assert row["peak_memory_mb"] > 0 and row["predicted_memory_mb"] > 0
        assert row["quantization"] == "none"
    assert sorted(int(p.name) for p in (study_dir / "adapters").iterdir()) == sorted(front)
    assert (study_dir / "config.yaml").is_file() and (study_dir / "labels.json").is_file()
    assert "Pareto front" in searched["output"]


def mlflow_runs(searched: dict) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{searched['out'] / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location.startswith("file://")
    assert "mlruns" not in experiment.artifact_location
    return client, client.search_runs([experiment.experiment_id], max_results=100)


def test_mlflow_parent_and_children(searched: dict) -> None:
    client, runs = mlflow_runs(searched)
    parents = [r for r in runs if r.data.tags.get("peftsearch.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("peftsearch.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    pareto = {
        row["trial"]
        for row in json.loads((searched["study_dir"] / "pareto.json").read_text())["pareto"]
    }
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["status"] == "COMPLETE", child.data.tags.get("error")
        assert child.data.params["method"] in {"lora", "ia3", "prompt_tuning"}
        assert "peft.peft_type" in child.data.params and "learning_rate" in child.data.params
        assert {
            "accuracy",
            "trainable_params",
            "cost_usd",
            "spent_usd",
            "macro_f1",
            "peak_memory_mb",
            "predicted_memory_mb",
        } <= set(child.data.metrics)
        assert child.data.tags["quantization"] == "none"
        assert child.data.tags["precision"] == "fp32"
        assert child.data.tags["gradient_checkpointing"] == "False"
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, 7))
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert ("adapter" in artifacts) == (int(child.data.tags["peftsearch.trial"]) in pareto)
    assert parents[0].info.status == "FINISHED"


def test_continue_and_export(searched: dict, tmp_path: Path) -> None:
    cli("run", str(searched["path"]), "--set", "search.n_trials=4")
    study_dir: Path = searched["study_dir"]
    trials = read_csv(study_dir / "trials.csv")
    assert [int(r["trial"]) for r in trials] == [0, 1, 2, 3]
    # the continued run does not replay the first run's random start-up samples
    assert len({(r["method"], r["params"], r["lr"]) for r in trials}) == 4
    _, runs = mlflow_runs(searched)
    children = [
        r.data.tags["peftsearch.trial"]
        for r in runs
        if r.data.tags.get("peftsearch.kind") == "trial"
    ]
    assert sorted(children) == ["0", "1", "2", "3"]

    rows = read_csv(study_dir / "pareto.csv")
    row = rows[0]
    out = tmp_path / "export"
    cli("export", str(study_dir), "--trial", row["trial"], "--out", str(out))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "labels.json"} <= {
        p.name for p in out.iterdir()
    }
    card = (out / "README.md").read_text()
    assert f"| accuracy on {row['eval_rows']} eval texts | {float(row['accuracy']):.4f} |" in card
    assert f"| macro-F1 | {float(row['macro_f1']):.4f} |" in card
    accuracy, macro_f1 = reproduce_metrics(study_dir, out)
    assert accuracy == float(row["accuracy"]) and macro_f1 == float(row["macro_f1"])

    refused = CliRunner().invoke(
        app, ["export", str(study_dir), "--trial", row["trial"], "--out", str(out)]
    )
    assert refused.exit_code == 2 and "--force" in refused.output
    cli("export", str(study_dir), "--trial", row["trial"], "--out", str(out), "--force")

    card = (out / "README.md").read_text()
    assert "at revision `v1.0`" in card and "revision='v1.0'," in card
    loaded = run_card_code(out)  # the card's code runs as written
    assert type(loaded["model"]).__name__ == "PeftModelForSequenceClassification"


def test_merge_into_the_searched_checkpoint(searched: dict, tmp_path: Path) -> None:
    """--merge writes full weights that score exactly as the adapter did."""
    from peftsearch.spaces import get_method

    study_dir: Path = searched["study_dir"]
    mergeable = [
        r
        for r in read_csv(study_dir / "trials.csv")
        if r["status"] == "COMPLETE" and get_method(r["method"]).mergeable
    ]
    assert mergeable, "the study must hold a mergeable trial (lora or ia3)"
    row = mergeable[0]
    out = tmp_path / "merged"
    cli("export", str(study_dir), "--trial", row["trial"], "--out", str(out), "--merge")
    assert (out / "merged" / "config.json").is_file()
    assert (out / "merged" / "model.safetensors").is_file()
    accuracy, macro_f1 = merged_metrics(study_dir, out / "merged")
    assert accuracy == float(row["accuracy"]) and macro_f1 == float(row["macro_f1"])


def score(model: Any, study_dir: Path) -> tuple[float, float]:
    """Accuracy and macro-F1 of a model on the study's own evaluation set."""
    from peftsearch.pipelines.builders import build_data
    from peftsearch.pipelines.studies import load_study_config

    metrics = task_scores(model, build_data(load_study_config(study_dir)), "accuracy")
    return metrics["accuracy"], metrics["macro_f1"]


def merged_metrics(study_dir: Path, merged: Path) -> tuple[float, float]:
    from transformers import AutoModelForSequenceClassification

    return score(AutoModelForSequenceClassification.from_pretrained(str(merged)).eval(), study_dir)


def reproduce_metrics(study_dir: Path, adapter: Path) -> tuple[float, float]:
    """Load the export the way its model card says, and score the study's eval set."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftsearch.pipelines.studies import load_study_config

    config = load_study_config(study_dir)
    labels = json.loads((adapter / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        config.model.name_or_path,
        num_labels=len(labels["id2label"]),
        id2label={int(i): n for i, n in labels["id2label"].items()},
        label2id=labels["label2id"],
    )
    base.config.pad_token_id = labels["pad_token_id"]
    return score(PeftModel.from_pretrained(base, str(adapter)).eval(), study_dir)


def test_export_refuses_unknown_trial(searched: dict, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", str(searched["study_dir"]), "--trial", "99", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "--trial: trial 99 is not in study 'tiny'" in result.output


def test_status_reads_storage(searched: dict) -> None:
    output = cli("status", str(searched["study_dir"]))
    assert output.startswith("trials ") and "| running 0 |" in output
    assert "best accuracy 0." in output and "elapsed " in output


def test_status_of_a_non_study(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 2 and "not a study folder" in result.output


def test_merge_loads_the_checkpoint_as_the_search_did(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A bfloat16 checkpoint: trials train on float32 weights, so the merge must load
    float32 too (transformers would load bfloat16 by default) and score the same."""
    import shutil

    import torch
    from transformers import BertModel

    half = tmp_path / "bf16-bert"
    shutil.copytree(tiny_model_dir, half)
    BertModel.from_pretrained(tiny_model_dir).to(torch.bfloat16).save_pretrained(half)
    config = tiny_config(half, tiny_data, tmp_path / "results")
    config["search"]["n_trials"] = 1
    config["space"] = {"methods": ["lora"], "lora": {"lr": {"low": 5e-3, "high": 2e-2}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    cli("run", str(path))
    study_dir = tmp_path / "results" / "tiny"
    (row,) = read_csv(study_dir / "trials.csv")
    assert row["status"] == "COMPLETE", row["error"]
    out = tmp_path / "merged"
    cli("export", str(study_dir), "--trial", row["trial"], "--out", str(out), "--merge")
    from safetensors import safe_open

    with safe_open(str(out / "merged" / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F32"}
    accuracy, macro_f1 = merged_metrics(study_dir, out / "merged")
    assert accuracy == float(row["accuracy"]) and macro_f1 == float(row["macro_f1"])


def test_register_in_the_embedded_registry(searched: dict, tmp_path: Path) -> None:
    client, _ = mlflow_runs(searched)
    study_dir: Path = searched["study_dir"]
    row = read_csv(study_dir / "pareto.csv")[0]
    for attempt in (1, 2):  # a second export is a second version of the same model
        out = tmp_path / f"export-{attempt}"
        cli(
            "export",
            str(study_dir),
            "--trial",
            row["trial"],
            "--out",
            str(out),
            "--register",
            "tiny-adapter",
        )
    versions = sorted(
        client.search_model_versions("name='tiny-adapter'"), key=lambda v: int(v.version)
    )
    assert [str(v.version) for v in versions] == ["1", "2"]
    assert (
        versions[0].tags["sha256.adapter_config.json"]
        == versions[1].tags["sha256.adapter_config.json"]
    )
    assert versions[0].tags["base_model_identity"].startswith("local:")


def test_export_check_says_whether_an_adapter_fits_a_deployment(searched: dict) -> None:
    """One line, exit 0 when it fits and 1 when not; nothing is written without --out."""
    study_dir: Path = searched["study_dir"]
    rows = [r for r in read_csv(study_dir / "trials.csv") if r["status"] == "COMPLETE"]
    lora = next(r for r in rows if r["method"] == "lora")
    fits = CliRunner().invoke(
        app, ["export", str(study_dir), "--trial", lora["trial"], "--check", "merge"]
    )
    assert fits.exit_code == 0 and f"Trial {lora['trial']} fits a merged model." in fits.output
    # a classifier's LoRA trains its new head as modules_to_save: vLLM cannot serve it
    refused = CliRunner().invoke(
        app, ["export", str(study_dir), "--trial", lora["trial"], "--check", "vllm"]
    )
    assert refused.exit_code == 1, refused.output
    assert "does not fit vllm (max_lora_rank 16): vLLM serves no modules_to_save" in (
        refused.output
    )
    unknown = CliRunner().invoke(
        app, ["export", str(study_dir), "--trial", lora["trial"], "--check", "tgi"]
    )
    assert unknown.exit_code == 2 and "--check" in unknown.output
    assert not list(study_dir.parent.glob("export*"))


def test_optuna_dashboard_reads_the_study_by_its_objective_names(searched: dict) -> None:
    """The real optuna-dashboard server, on 127.0.0.1 against the study's storage,
    serves the study, its objectives by name and each trial's settings."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    # the run's summary says how (the console may wrap a long path)
    command = f"optuna-dashboard sqlite:///{searched['out'] / 'results' / 'optuna.db'}"
    assert "".join(command.split()) in "".join(searched["output"].split())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executable = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert executable, "optuna-dashboard is a dependency: it must be installed"
    storage = f"sqlite:///{searched['out'] / 'results' / 'optuna.db'}"
    server = subprocess.Popen(
        [executable, storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return json.loads(reply.read())

    try:
        for _ in range(120):
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                time.sleep(0.5)
        else:
            raise AssertionError("optuna-dashboard did not answer within a minute")
        study = next(s for s in studies if s["study_name"] == "tiny")
        detail = get(f"/api/studies/{study['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert detail["objective_names"] == ["accuracy", "trainable_params", "cost"]
    assert detail["directions"] == ["maximize", "minimize", "minimize"]
    trials = read_csv(searched["study_dir"] / "trials.csv")
    assert len(detail["trials"]) >= len(trials)
    first = detail["trials"][0]
    attrs = {a["key"]: a["value"] for a in first["user_attrs"]}
    # what the trial trained, readable in the dashboard's table
    assert json.loads(attrs["peft_config"])["peft_type"]
    assert "lr" in json.loads(attrs["summary"])
