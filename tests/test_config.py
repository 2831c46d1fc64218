"""Config schema: defaults, overrides, and one-line errors that name the key or file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import tiny_config

from peftsearch.config import load_config, parse_config
from peftsearch.errors import UserError


@pytest.fixture
def base(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> dict:
    return tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")


def error_of(data: dict, overrides: list[str] | None = None) -> str:
    with pytest.raises(UserError) as caught:
        parse_config(data, source="job.yaml", overrides=overrides)
    return str(caught.value)


def test_defaults_and_paths(base: dict, tmp_path: Path) -> None:
    config = parse_config(base)
    assert config.storage_url == f"sqlite:///{tmp_path / 'out' / 'optuna.db'}"
    assert config.mlflow_uri == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    assert config.study_dir == tmp_path / "out" / "tiny"
    assert config.space.lora.rank == [4, 8, 16]
    assert set(config.method_options()) == {"lora", "ia3", "prompt_tuning"}


def test_nested_error_names_key_path(base: dict) -> None:
    base["space"]["lora"] = {"rank": ["big"]}
    assert error_of(base).startswith(
        "job.yaml: space.lora.rank[0]: Input should be a valid integer"
    )


def test_unknown_key_is_refused(base: dict) -> None:
    base["training"]["max_step"] = 5
    message = error_of(base)
    assert "training.max_step: unknown key" in message
    assert "\n" not in message


def test_unknown_method(base: dict) -> None:
    base["space"]["methods"] = ["lora", "qlora-magic"]
    assert (
        "space.methods: unknown method 'qlora-magic'; known methods: bottleneck_adapter, dora"
        in error_of(base)
    )


def test_missing_data_file(base: dict, tmp_path: Path) -> None:
    base["data"]["train"] = str(tmp_path / "nope.csv")
    assert f"data.train: data file not found: {tmp_path / 'nope.csv'}" in error_of(base)


def test_missing_model_folder(base: dict) -> None:
    base["model"]["name_or_path"] = "./no/such/model"
    assert "model.name_or_path: model folder not found" in error_of(base)


def test_missing_package_resource(base: dict) -> None:
    base["model"]["name_or_path"] = "pkg://not_an_installed_pkg/model"
    assert "package 'not_an_installed_pkg' is not installed" in error_of(base)


def test_learning_rate_range_must_be_ordered(base: dict) -> None:
    base["space"]["lora"] = {"lr": {"low": 0.1, "high": 0.01}}
    assert "space.lora.lr: low (0.1) must be below high (0.01)" in error_of(base)


def test_set_overrides(base: dict) -> None:
    config = parse_config(base, overrides=["search.n_trials=7", "space.lora.rank=[2, 4]"])
    assert config.search.n_trials == 7
    assert config.space.lora.rank == [2, 4]
    assert "search.n_trails: unknown key" in error_of(base, ["search.n_trails=3"])


def test_the_initial_design_is_on_with_tpe_and_off_for_the_baselines(base: dict) -> None:
    def uses(*overrides: str) -> bool:
        return parse_config(base, overrides=list(overrides)).search.uses_initial_design

    assert uses() and uses("search.sampler=tpe")
    assert not uses("search.sampler=random") and not uses("search.sampler=nsga2")
    assert not uses("search.initial_design=false")
    assert uses("search.sampler=random", "search.initial_design=true")


def test_bad_set_syntax(base: dict) -> None:
    assert "write it as key.path=value" in error_of(base, ["search.n_trials"])


def test_unreadable_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name_or_path: [unclosed\n")
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid YAML at line")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_starter_config_is_valid(tmp_path: Path) -> None:
    from importlib.resources import files

    data = yaml.safe_load(files("peftsearch.pipelines").joinpath("starter.yaml").read_text())
    config = parse_config(data)
    assert config.data.labels == ["rotten", "fresh"]
    assert Path(config.model.name_or_path, "config.json").is_file()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peftsearch.pipelines.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_errors_are_one_line_exit_2(base: dict, tmp_path: Path) -> None:
    base["space"]["methods"] = ["lora", "bogus"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(base))
    done = run_cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "space.methods: unknown method 'bogus'" in lines[0]


def test_cli_init_then_validate(tmp_path: Path) -> None:
    target = tmp_path / "job.yaml"
    assert run_cli("init", str(target), cwd=tmp_path).returncode == 0
    again = run_cli("init", str(target), cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    done = run_cli("validate", str(target), "--set", "search.n_trials=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "n_trials: 2" in done.stdout


def test_wrong_column_names_the_key_and_the_columns(base: dict) -> None:
    from peftsearch.pipelines.builders import build_data

    base["data"]["text_column"] = "review"
    with pytest.raises(UserError) as caught:
        build_data(parse_config(base))
    assert str(caught.value) == (
        "data.text_column: column 'review' is not in data.train (its columns: text, label)"
    )


def test_single_label_is_refused(base: dict, tmp_path: Path) -> None:
    from peftsearch.pipelines.builders import build_data

    one_label = tmp_path / "one.csv"
    one_label.write_text("text,label\n" + "".join(f"good film {i},pos\n" for i in range(8)))
    base["data"]["train"] = str(one_label)
    base["data"].pop("eval")
    with pytest.raises(UserError, match=r"data\.label_column: found 1 label value"):
        build_data(parse_config(base))
