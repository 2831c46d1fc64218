"""Builders: turn the config into the flat arguments each component takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from peftsearch.config import Config, load_config
from peftsearch.errors import UserError
from peftsearch.results import CONFIG_FILE, LABELS_FILE

if TYPE_CHECKING:
    from peftsearch.spaces import ModelInfo
    from peftsearch.trials import BaseModelSource, PreparedData, TrainSettings

__all__ = [
    "build_data",
    "build_model_info",
    "build_model_source",
    "build_settings",
    "load_study_config",
    "write_study_files",
]


def build_settings(config: Config) -> TrainSettings:
    from peftsearch.trials import TrainSettings

    t = config.training
    return TrainSettings(
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        seed=config.search.seed,
    )


def build_data(config: Config) -> PreparedData:
    from peftsearch.trials import load_tokenizer, prepare_data

    m = config.model
    tokenizer = load_tokenizer(
        m.name_or_path,
        revision=m.revision,
        gguf_file=m.gguf_file,
        trust_remote_code=m.trust_remote_code,
    )
    return prepare_data(**config.data.model_dump(), seed=config.search.seed, tokenizer=tokenizer)


def build_model_info(config: Config, num_labels: int) -> ModelInfo:
    """Model structure, after checking every listed method can run on it."""
    from peftsearch.spaces import get_method
    from peftsearch.trials import inspect_base_model

    m = config.model
    info = inspect_base_model(
        m.name_or_path,
        num_labels=num_labels,
        revision=m.revision,
        gguf_file=m.gguf_file,
        trust_remote_code=m.trust_remote_code,
    )
    for name in config.space.methods:
        reason = get_method(name).supports(info)
        if reason:
            raise UserError(
                f"{name} cannot run on this model: {reason}",
                where="space.methods",
                hint=f"remove {name}",
            )
    return info


def build_model_source(config: Config, data: PreparedData) -> BaseModelSource:
    from peftsearch.trials import BaseModelSource

    m = config.model
    return BaseModelSource(
        m.name_or_path,
        num_labels=data.num_labels,
        label_names=data.label_names,
        pad_token_id=data.pad_token_id,
        revision=m.revision,
        gguf_file=m.gguf_file,
        trust_remote_code=m.trust_remote_code,
        seed=config.search.seed,
    )


def write_study_files(config: Config, data: PreparedData) -> None:
    from peftsearch.results import atomic_write

    study_dir = config.study_dir
    atomic_write(study_dir / CONFIG_FILE, config.to_yaml())
    labels = {
        "id2label": dict(enumerate(data.label_names)),
        "label2id": {name: i for i, name in enumerate(data.label_names)},
        "pad_token_id": data.pad_token_id,
        "data": data.stats,
    }
    atomic_write(study_dir / LABELS_FILE, json.dumps(labels, indent=2) + "\n")


def load_study_config(study_dir: Path, overrides: list[str] | None = None) -> Config:
    """The resolved config a run left in its study folder; the folder may have moved."""
    path = study_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"not a study folder (no {CONFIG_FILE})",
            where=str(study_dir),
            hint="pass <output_dir>/<study_name> of a `peftsearch run`",
        )
    return load_config(
        path, overrides=[f"output_dir={study_dir.resolve().parent}", *(overrides or [])]
    )
