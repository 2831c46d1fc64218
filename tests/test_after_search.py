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
