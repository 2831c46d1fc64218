"""peft's LoRA variants as searched knobs: rsLoRA, LoRA+, and the initialisations; PiSSA
and OLoRA exports converted for the unchanged base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import LORA, task_scores, tiny_config, tiny_runner

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data
from peftsearch.spaces import get_method
from peftsearch.spaces.lora import LoraOptions, changes_base_weights
from peftsearch.trials import TrialJob, TrialRunner
from peftsearch.trials.file_transfer import write_folder


@pytest.fixture(scope="module")
def setup(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrialRunner, Any]:
    return tiny_runner(tiny_model_dir, tiny_data, tmp_path_factory.mktemp("out"))


def trained(runner: TrialRunner, tmp_path: Path, **changes: Any) -> Any:
    ratio = changes.pop("loraplus_lr_ratio", None)
    config = {**LORA, **changes}
    job = TrialJob(0, "lora", config, 3e-2, str(tmp_path / "a"), loraplus_lr_ratio=ratio)
    result = runner.run(job)
    assert result.status == "COMPLETE", result.error
    return result


@pytest.mark.parametrize(
    "changes",
    [
        {"use_rslora": True},
        {"init_lora_weights": "gaussian"},
        {"init_lora_weights": "eva"},
        {"loraplus_lr_ratio": 16.0},
    ],
    ids=["rslora", "gaussian", "eva", "loraplus"],
)
def test_each_variant_trains_and_differs_from_plain_lora(
    setup: tuple[TrialRunner, Any], tmp_path: Path, changes: dict[str, Any]
) -> None:
    runner, _ = setup
    plain = trained(runner, tmp_path)
    variant = trained(runner, tmp_path, **changes)
    assert variant.losses != plain.losses  # the knob reached training
    assert variant.trainable_params and variant.adapter_files


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_base_changing_init_exports_an_adapter_for_the_unchanged_base(
    setup: tuple[TrialRunner, Any], tmp_path: Path, init: str
) -> None:
    """The export loads with ``PeftModel.from_pretrained`` on a fresh base and scores
    what the trial scored, on every eval row."""
    from peft import PeftModel

    runner, data = setup
    result = trained(runner, tmp_path, init_lora_weights=init)
    folder = write_folder(result.adapter_files, tmp_path / "export")
    import json

    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["init_lora_weights"] is True and saved["r"] == 2 * LORA["r"]
    model = PeftModel.from_pretrained(runner.source.fresh_copy(), str(folder))
    scores = task_scores(model, data, "accuracy")
    assert scores["score"] == pytest.approx(result.accuracy, abs=1e-9)


def test_variants_are_searched_only_when_offered() -> None:
    from peftsearch.spaces._model_info import ModelInfo

    info = ModelInfo(
        model_type="bert",
        layers_pattern="layer",
        num_layers=2,
        block_linears=("attention.self.query", "attention.self.value"),
        attention=("attention.self.query", "attention.self.value"),
        mlp=(),
        query_value=("attention.self.query", "attention.self.value"),
        key_value=(),
        total_params=1000,
        decoder_only=False,
    )
    space = get_method("lora")
    plain = optuna.trial.FixedTrial(
        {
            "lora.rank": 4,
            "lora.alpha_ratio": 2.0,
            "lora.dropout": 0.0,
            "lora.lr": 1e-3,
            "lora.targets": "qv",
            "lora.layers": "all",
        }
    )
    choice = space.suggest(plain, LoraOptions(), info)
    assert "use_rslora" not in choice.peft_config and choice.loraplus_lr_ratio is None
    options = LoraOptions(
        use_rslora=[False, True], init_lora_weights=[True, "pissa"], loraplus_lr_ratio=[1, 16]
    )
    study = optuna.create_study()
    trial = study.ask()
    choice = space.suggest(trial, options, info)
    assert {"lora.use_rslora", "lora.init_lora_weights", "lora.loraplus_lr_ratio"} <= set(
        trial.params
    )
    assert changes_base_weights({"init_lora_weights": "pissa_niter_4"})
    assert not changes_base_weights({"init_lora_weights": "eva"})


@pytest.mark.parametrize(
    "config",
    [
        {"peft_type": "VERA", "r": 16, "save_projection": True},
        {"peft_type": "HRA", "r": 4},
    ],
    ids=["vera", "hra"],
)
def test_newer_methods_train_and_their_exports_reload(
    setup: tuple[TrialRunner, Any], tmp_path: Path, config: dict[str, Any]
) -> None:
    from peft import PeftModel

    runner, data = setup
    full = {"task_type": "SEQ_CLS", "target_modules": ["query", "value"], **config}
    result = runner.run(TrialJob(0, config["peft_type"].lower(), full, 2e-2, str(tmp_path / "a")))
    assert result.status == "COMPLETE", result.error
    assert 0 < result.trainable_params < LORA_PARAMS_BOUND
    folder = write_folder(result.adapter_files, tmp_path / "export")
    model = PeftModel.from_pretrained(runner.source.fresh_copy(), str(folder))
    assert task_scores(model, data, "accuracy")["score"] == pytest.approx(result.accuracy)


LORA_PARAMS_BOUND = 100_000  # the tiny BERT's adapters (and head) stay far below it


def test_a_pissa_search_exports_an_adapter_that_scores_as_its_trial_did(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Through the product: search with PiSSA, ``peftsearch export``, then the user's
    own loading code (the card's) on the base as published reproduces the trial."""
    import csv

    import yaml
    from helpers import run_card_code
    from typer.testing import CliRunner

    from peftsearch.pipelines.cli import app

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["space"] = {
        "methods": ["lora"],
        "lora": {"init_lora_weights": ["pissa"], "lr": {"low": 2e-2, "high": 6e-2}},
    }
    config["search"].update(n_trials=2, early_stopping=False)
    config["tracking"] = {"enabled": False}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    study = tmp_path / "out" / "tiny"
    row = next(r for r in csv.DictReader((study / "trials.csv").open()) if r["accuracy"])
    assert "PiSSA init" in row["description"]
    out = tmp_path / "export"
    exported = runner.invoke(
        app, ["export", str(study), "--trial", row["trial"], "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    assert "**Initialisation:**" in (out / "README.md").read_text()
    loaded = run_card_code(out)["model"]
    data = build_data(parse_config({**config, "output_dir": str(tmp_path / "other")}))
    assert task_scores(loaded, data, "accuracy")["score"] == pytest.approx(float(row["accuracy"]))


def test_dora_refuses_an_initialisation_that_changes_the_base(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from peftsearch.errors import UserError

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path)
    config["space"] = {"methods": ["dora"], "dora": {"init_lora_weights": [True, "olora"]}}
    with pytest.raises(UserError) as error:
        parse_config(config)
    assert "space.dora" in str(error.value) and "'olora'" in str(error.value)
    config["space"]["dora"]["init_lora_weights"] = [True, "eva"]  # EVA keeps the base
    assert parse_config(config).method_options()["dora"].init_lora_weights == [True, "eva"]
