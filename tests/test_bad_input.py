"""Every value that cannot work fails at `peftsearch validate`: exit 2, one line, the key.

Table-driven: each case is a ``--set`` override (or a raw YAML text) on a valid config,
and the key path the one error line must name. Plug-in options are held to the same rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import tiny_config
from typer.testing import CliRunner

from peftsearch.config import parse_config
from peftsearch.pipelines.cli import app

# (override, the key path the error names)
OVERRIDES = [
    ("cost.usd_per_device_hour={cpu: -1}", "cost.usd_per_device_hour.cpu"),
    ("cost.usd_per_device_hour={cpu: 0}", "cost.usd_per_device_hour.cpu"),
    ("storage=not a url", "storage"),
    ("storage=nosuchdb://host/db", "storage"),
    ("tracking.mlflow_uri=./mlruns", "tracking.mlflow_uri"),
    ("tracking.mlflow_uri=file:///tmp/mlruns", "tracking.mlflow_uri"),
    ("tracking.experiment_name=''", "tracking.experiment_name"),
    ("space.lora.rank=[0]", "space.lora.rank[0]"),
    ("space.lora.rank=[-4]", "space.lora.rank[0]"),
    ("space.lora.rank=[]", "space.lora.rank"),
    ("space.lora.alpha_ratio=[0]", "space.lora.alpha_ratio[0]"),
    ("space.lora.dropout=[1.5]", "space.lora.dropout[0]"),
    ("space.lora.dropout=[-0.1]", "space.lora.dropout[0]"),
    ("space.lora.lr={low: 0, high: 0.1}", "space.lora.lr.low"),
    ("space.lora.lr={low: 0.1, high: 5}", "space.lora.lr.high"),
    ("space.lora.lr={low: .nan, high: 0.1}", "space.lora.lr.low"),
    ("space.lora.targets=[everything]", "space.lora.targets[0]"),
    ("space.lora.layers=[middle]", "space.lora.layers[0]"),
    ("space.lora.unknown=1", "space.lora.unknown"),
    ("space.ia3.targets=[qv]", "space.ia3.targets[0]"),
    ("space.prompt_tuning.num_virtual_tokens=[0]", "space.prompt_tuning.num_virtual_tokens[0]"),
    ("space.prompt_tuning.init=[zeros]", "space.prompt_tuning.init[0]"),
    ("space.loha.module_dropout=[1.0]", "space.loha.module_dropout[0]"),
    ("space.prefix_tuning.num_virtual_tokens=[-1]", "space.prefix_tuning.num_virtual_tokens[0]"),
    ("space.max_trainable_pct=0", "space.max_trainable_pct"),
    ("space.methods=[]", "space.methods"),
    ("space.methods=[lora, lora]", "space.methods"),
    ("budget.max_cost_usd=-1", "budget.max_cost_usd"),
    ("budget.max_cost_usd=.inf", "budget.max_cost_usd"),
    ("budget.max_device_hours=0", "budget.max_device_hours"),
    ("budget.max_wall_time=-5m", "budget.max_wall_time"),
    ("budget.max_wall_time=soon", "budget.max_wall_time"),
    ("budget.max_trials=0", "budget.max_trials"),
    ("search.n_trials=0", "search.n_trials"),
    ("search.sampler=cmaes", "search.sampler"),
    ("search.study_name='bad name!'", "search.study_name"),
    ("search.seed=abc", "search.seed"),
    ("search.early_stopping.eta=1", "search.early_stopping.eta"),
    ("search.confirm={top: -1}", "search.confirm.top"),
    ("search.confirm={seeds: 11}", "search.confirm.seeds"),
    ("search.confirm={every: 2}", "search.confirm.every"),
    ("search.objectives=[accuracy, forgetting]", "search.objectives"),  # a classifier
    ("evaluation.reference_data=/no/such/file.txt", "evaluation.reference_data"),
    ("search.warm_start=[/no/such/study]", "search.warm_start"),
    ("training.max_steps=0", "training.max_steps"),
    ("training.batch_size=0", "training.batch_size"),
    ("training.warmup_ratio=1.5", "training.warmup_ratio"),
    ("training.device=tpu", "training.device"),
    ("training.max_grad_norm=0", "training.max_grad_norm"),
    ("training.num_threads=0", "training.num_threads"),
    ("resources.cpus_per_trial=0", "resources.cpus_per_trial"),
    ("resources.gpus_per_trial=-1", "resources.gpus_per_trial"),
    ("resources.ray_address=http://head", "resources.ray_address"),
    ("data.text_column=label", "data"),
    ("data.labels=[pos]", "data.labels"),
    ("data.labels=[pos, pos]", "data.labels"),
    ("data.eval_fraction=1.5", "data.eval_fraction"),
    ("data.test=/no/such/test.csv", "data.test"),
    ("data.max_length=4", "data.max_length"),
    ("data.max_train_samples=1", "data.max_train_samples"),
    ("model.gguf_file=missing.gguf", "model"),
    ("model.name_or_path=''", "model.name_or_path"),
    ("model.task=ner", "model.task"),
    # a key another task reads (the classifier's own are text_column, label_column, labels)
    ("data.prompt_template='{text}'", "data.prompt_template"),
    ("data.tags_column=ner", "data.tags_column"),
    ("evaluation.metric=exact_match", "evaluation.metric"),
    ("search.objectives=[accuracy, speed]", "search.objectives"),
    ("search.objectives=[cost, trainable_params]", "search.objectives"),
    ("model.quantization=q4", "model.quantization"),
    ("model.quantization=[nf4, nf4]", "model.quantization"),
    ("resources.memory_per_trial_gb=0", "resources.memory_per_trial_gb"),
]


def test_a_method_without_a_quantized_layer_is_refused_naming_both_keys(job: Path) -> None:
    code, lines = validate(
        str(job), "--set", "model.quantization=nf4", "--set", "space.methods=[lora, loha]"
    )
    assert_one_error_naming(code, lines, "space.methods")
    assert "loha cannot train on a quantized base (model.quantization: nf4)" in lines[0]


@pytest.fixture
def job(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")))
    return path


def validate(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["validate", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def assert_one_error_naming(code: int, lines: list[str], key: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    assert f": {key}:" in lines[0] or f": {key} " in lines[0], lines[0]


@pytest.mark.parametrize("override, key", OVERRIDES, ids=[o for o, _ in OVERRIDES])
def test_bad_value_fails_at_validate(job: Path, override: str, key: str) -> None:
    code, lines = validate(str(job), "--set", override)
    assert_one_error_naming(code, lines, key)


def test_output_dir_that_is_a_file(job: Path, tmp_path: Path) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder")
    code, lines = validate(str(job), "--set", f"output_dir={taken}")
    assert_one_error_naming(code, lines, "output_dir")
    assert "is a file, not a folder" in lines[0]


def test_study_folder_that_is_a_file(job: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tiny").write_text("not a folder")
    code, lines = validate(str(job))
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0], lines


@pytest.mark.parametrize(
    "text, where",
    [
        ("search: {n_trials: 3}\nsearch: {n_trials: 5}\n", "key 'search' appears twice"),
        ("training:\n  max_steps: 3\n  max_steps: 5\n", "key 'max_steps' appears twice"),
    ],
)
def test_duplicate_yaml_keys(job: Path, text: str, where: str) -> None:
    config = yaml.safe_load(job.read_text())
    del config["search"], config["training"]
    job.write_text(yaml.safe_dump(config) + text)
    code, lines = validate(str(job))
    assert code == 2 and len(lines) == 1, lines
    assert str(job) in lines[0] and where in lines[0]


def test_set_does_not_change_the_callers_dict(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    data = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    before = yaml.safe_dump(data)
    config = parse_config(data, overrides=["search.n_trials=9", "space.lora.rank=[2]"])
    assert config.search.n_trials == 9
    assert yaml.safe_dump(data) == before


def test_a_file_only_another_task_reads_is_refused(job: Path, tmp_path: Path) -> None:
    conll = tmp_path / "train.conll"
    conll.write_text("good B-POS\nfilm O\n")
    code, lines = validate(str(job), "--set", f"data.train={conll}")
    assert_one_error_naming(code, lines, "data.train")
    assert "train.conll is a file model.task token-classification reads" in lines[0]


def test_a_causal_lm_needs_two_columns(job: Path) -> None:
    code, lines = validate(
        str(job), "--set", "model.task=causal-lm", "--set", "data.response_column=prompt"
    )
    assert_one_error_naming(code, lines, "data.response_column")
