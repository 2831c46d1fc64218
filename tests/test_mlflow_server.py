"""A shared MLflow tracking server: `mlflow server` on 127.0.0.1, a search logging to it
over HTTP, and everything a team needs found on the server (runs, curves, artifacts)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("mlflow server did not come up in 120 s")
    yield url, folder
    server.terminate()
    server.wait(timeout=30)


def test_a_search_logs_everything_to_a_tracking_server(
    mlflow_server: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    url, server_folder = mlflow_server
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["tracking"] = {"mlflow_uri": url, "experiment_name": "team-search"}
    config["search"]["early_stopping"] = False  # every trial logs its whole loss curve
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "mlruns").exists()

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("team-search")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("peftsearch.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("peftsearch.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {"report.html", "pareto.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    with_adapter = 0
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"accuracy", "cost_usd", "trainable_params"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) == 6
        names = {a.path for a in client.list_artifacts(child.info.run_id, "adapter")}
        with_adapter += "adapter/adapter_config.json" in names
    assert with_adapter >= 1  # the Pareto trials' adapters live on the server
    assert any((server_folder / "artifacts").rglob("adapter_model.safetensors"))

    # a team keeps the exported adapter in the server's Model Registry
    out = tmp_path / "export"
    exported = CliRunner().invoke(
        app,
        [
            "export",
            str(tmp_path / "out" / "tiny"),
            "--pick",
            "recommended",
            "--out",
            str(out),
            "--register",
            "sentiment-adapter",
        ],
    )
    assert exported.exit_code == 0, exported.output
    (version,) = client.search_model_versions("name='sentiment-adapter'")
    card = (out / "README.md").read_text()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest = version.tags[f"sha256.{name}"]
        assert len(digest) == 64 and digest in card  # the card lists the same sha256
    assert version.tags["base_model_identity"].startswith("local:")
    assert float(version.tags["metric.accuracy"]) >= 0
    run = client.get_run(version.run_id)
    assert {"accuracy", "trainable_params"} <= set(run.data.metrics)
