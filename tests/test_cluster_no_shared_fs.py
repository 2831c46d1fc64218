"""A real two-node Ray cluster started with `ray start`, whose worker node cannot see
the driver's folders: it runs in its own mount namespace (`unshare --mount`) with empty
tmpfs mounts over the driver's output folder and the local model folder. Every Pareto
adapter must still reach the driver, and export must work."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """`ray start --block` stops its node's processes when it is signalled; the head's
    took 30 s here once its worker node was gone, so after 5 s the whole process group
    (the node's daemons and workers) is killed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def hidden_cluster(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to give the worker node its own mount namespace")
    ray_cli = str(Path(sys.executable).parent / "ray")
    root = Path(tempfile.mkdtemp(prefix="rayfs-", dir="/tmp"))  # short: Unix socket paths
    out, model = root / "out", root / "model"
    out.mkdir()
    shutil.copytree(tiny_model_dir, model)
    port = _port()
    # the cluster's token, shared by its nodes and this driver (never written to ~/.ray)
    import secrets

    from peftsearch.search.ray_session import _reload_auth_settings

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    _reload_auth_settings()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--temp-dir={root / 'ray'}",
            *common,
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    hide = f"mount -t tmpfs tmpfs {out} && mount -t tmpfs tmpfs {model}"
    worker = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{hide} && exec {ray_cli} start --address=127.0.0.1:{port} --num-cpus=2 "
            + " ".join(common),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import ray

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                ray.init(address=f"127.0.0.1:{port}", logging_level="ERROR", log_to_driver=False)
                if ray.cluster_resources().get("CPU", 0) >= 2:
                    break
                ray.shutdown()
            except Exception:
                pass
            time.sleep(2)
        else:
            pytest.fail("the two-node cluster did not come up in 120 s")
        ray.shutdown()
        yield f"127.0.0.1:{port}", out, model
    finally:
        _stop(worker)
        _stop(head)
        shutil.rmtree(root, ignore_errors=True)
        monkeypatch.undo()
        _reload_auth_settings()


def test_adapters_reach_a_driver_whose_folders_workers_cannot_see(
    hidden_cluster: Any, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    address, out, model = hidden_cluster
    config = tiny_config(model, tiny_data, out)
    config["resources"] = {"ray_address": address, "cpus_per_trial": 1}
    config["search"]["early_stopping"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    study = out / "tiny"
    import json

    front = [r["trial"] for r in json.loads((study / "pareto.json").read_text())["pareto"]]
    assert front
    for number in front:
        assert (study / "adapters" / str(number) / "adapter_model.safetensors").is_file()
    exported = runner.invoke(
        app, ["export", str(study), "--trial", str(front[0]), "--out", str(tmp_path / "export")]
    )
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "export" / "adapter_config.json").is_file()
