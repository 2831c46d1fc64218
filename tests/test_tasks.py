"""The task contract (trials/tasks/_registry.py ``Task``), checked on every registered task:
what the config, the tables and the card rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftsearch.config import DataConfig
from peftsearch.trials.tasks import default_task, get_task, metric_label, task_names


@pytest.mark.parametrize("name", task_names())
def test_a_task_keeps_the_contract(name: str) -> None:
    from peft import TaskType

    task = get_task(name)
    assert task.name == name and task.display_name and task.pipeline_tag and task.unit
    assert task.peft_task_type in TaskType.__members__
    assert task.model_class().__name__.startswith("AutoModelFor")
    metrics = [m.name for m in task.metrics]
    assert metrics and len(set(metrics)) == len(metrics)
    assert all(metric_label(m.name) == m.label for m in task.metrics)
    # its own data keys never shadow the shared ones, nor another task's
    own = set(task.data_options.model_fields)
    assert not own & set(DataConfig.model_fields)
    for other in task_names():
        if other != name:
            assert not own & set(get_task(other).data_options.model_fields), other
    assert "accuracy" not in task.columns  # the searched score has its own column
    assert all(s.startswith(".") for s in task.file_suffixes)


def test_one_task_is_the_default() -> None:
    assert default_task() == "sequence-classification"
    assert sum(bool(getattr(get_task(n), "default", False)) for n in task_names()) == 1


@pytest.mark.parametrize(("fraction", "seed"), [(0.2, 0), (0.15, 7), (0.5, 3)])
def test_the_stratified_hold_out_takes_the_rows_datasets_would(fraction: float, seed: int) -> None:
    """``stratified_split`` reads the labels in one batch but must keep datasets' own
    split: the same rows, in the same order, as ``train_test_split`` gives."""
    import datasets

    from peftsearch.trials.data import stratified_split

    labels = [i % 3 if i % 7 else 0 for i in range(301)]
    table = datasets.Dataset.from_dict(
        {"text": [f"row {i}" for i in range(301)], "label": labels},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(num_classes=3)}
        ),
    ).select(range(300, -1, -1))  # an indices mapping, as after a filter or shuffle
    expected = table.train_test_split(test_size=fraction, seed=seed, stratify_by_column="label")
    train, held = stratified_split(table, fraction, seed, "label")
    assert train["text"] == expected["train"]["text"]
    assert held["text"] == expected["test"]["text"]


def test_a_task_sets_its_own_method_defaults_under_what_the_config_writes(
    monkeypatch: pytest.MonkeyPatch,
    tiny_llama_dir: Path,
    tiny_lm_data: dict[str, Path],
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
) -> None:
    """``method_defaults`` (a task's own defaults, chosen on its own table) fill what the
    config leaves out, key by key; another task's config does not see them."""
    from helpers import tiny_config

    from peftsearch.config import parse_config

    task = get_task("causal-lm")
    ours = {
        "lora": {"lr": {"low": 1e-3, "high": 2e-2}, "rank": [8]},
        "ia3": {"lr": {"low": 0.2, "high": 0.4}},
    }
    monkeypatch.setattr(task, "method_defaults", ours)
    raw = tiny_config(tiny_llama_dir, tiny_lm_data, tmp_path / "out")
    raw["model"]["task"] = "causal-lm"
    raw["space"] = {"methods": ["lora", "ia3"], "lora": {"rank": [4]}}
    parsed = parse_config(raw)
    assert (parsed.space.lora.lr.low, parsed.space.lora.lr.high) == (1e-3, 2e-2)
    assert parsed.space.lora.rank == [4]  # written: the config's
    assert parsed.space.ia3.lr.low == 0.2
    classifier = parse_config(tiny_config(tiny_model_dir, tiny_data, tmp_path / "other"))
    assert classifier.space.ia3.lr.low != 0.2


def test_tokenizing_names_its_inputs_instead_of_hashing_the_tokenizer(
    tiny_model_dir: Path, tiny_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasets fingerprints a map by hashing its function with dill, tokenizer and all
    (about 1 s of the driver's start-up); the classification task names what the result
    depends on instead, so another max_length or tokenizer still gets another name."""
    from datasets.fingerprint import Hasher
    from helpers import prepare

    from peftsearch.trials.model import Checkpoint, load_tokenizer

    hashed: list[str] = []
    plain_update = Hasher.update

    def spy(self: Hasher, value: object) -> None:
        hashed.append(type(value).__name__)
        plain_update(self, value)

    monkeypatch.setattr(Hasher, "update", spy)
    tokenizer = load_tokenizer(Checkpoint(str(tiny_model_dir)))
    kwargs = {"train": tiny_data["train"], "eval": tiny_data["eval"], "tokenizer": tokenizer}
    first = prepare(tiny_model_dir, "sequence-classification", max_length=32, **kwargs)
    assert hashed and "function" not in hashed  # the map's function held the tokenizer
    again = prepare(tiny_model_dir, "sequence-classification", max_length=32, **kwargs)
    shorter = prepare(tiny_model_dir, "sequence-classification", max_length=4, **kwargs)
    assert first.train._fingerprint == again.train._fingerprint
    assert first.train._fingerprint != shorter.train._fingerprint
    tokens = [list(data.train["input_ids"]) for data in (first, again, shorter)]
    assert tokens[0] == tokens[1] != tokens[2]
