"""A shared Optuna storage on a real PostgreSQL server (Debian's `postgresql`, installed
by `make test`): two drivers, one after the other, continue the same study."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="module")
def postgres_url() -> Any:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (make test installs Debian's postgresql as root)")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as its own user")
        as_user = ["runuser", "-u", "postgres", "--"]
    # /tmp, not $TMPDIR: the postgres user must reach it (a mktemp -d TMPDIR is root-only)
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp" if as_user else None))
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        options = f"-k {folder} -p {port} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            check=False,
        )
        time.sleep(0.5)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_drivers_continue_one_study_without_duplicates(
    postgres_url: str, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    import optuna

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "first")
    config["storage"] = postgres_url
    config["search"]["n_trials"] = 2
    config["tracking"] = {"enabled": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(path)])
    assert first.exit_code == 0, first.output
    # a second driver, elsewhere (its own output folder), continues the same study
    second = runner.invoke(
        app,
        [
            "run",
            str(path),
            "--set",
            "search.n_trials=4",
            "--set",
            f"output_dir={tmp_path / 'second'}",
        ],
    )
    assert second.exit_code == 0, second.output
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert numbers == [0, 1, 2, 3]
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)  # no config ran twice
