"""Labelled text in, tokenized train/eval sets out. Tokenized once per study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    import datasets
    import pandas as pd

__all__ = ["PreparedData", "load_table", "prepare_data"]

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class PreparedData:
    """Tokenized splits plus the label mapping; pickles cleanly for Ray's object store."""

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]
    pad_token_id: int
    stats: dict[str, Any] = field(default_factory=dict)
    test: datasets.Dataset | None = None  # never used for selection (data.test)
    task: str = "sequence-classification"  # or "causal-lm" (trials/lm_data.py)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _read_file(path: str) -> pd.DataFrame:
    import pandas as pd

    name = Path(path).name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        name = name.removesuffix(suffix)
    if name.endswith(".csv"):
        return pd.read_csv(path)
    if name.endswith(".tsv"):
        return pd.read_csv(path, sep="\t")
    if name.endswith(".jsonl"):
        return pd.read_json(path, lines=True)
    if name.endswith(".json"):
        try:
            return pd.read_json(path)
        except ValueError:
            return pd.read_json(path, lines=True)
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    raise UserError(f"unsupported file type {Path(path).name!r}", where=path)


def load_table(spec: str, *, key: str, dataset_config: str | None = None) -> pd.DataFrame:
    """A local file, or a hub dataset written ``name:split`` (``name`` alone means train)."""
    from peftsearch.config import is_local_table

    if is_local_table(spec) or Path(spec).is_file():
        try:
            return _read_file(spec)
        except UserError:
            raise
        except Exception as error:  # pandas raises many types for malformed files
            raise UserError(f"cannot read {spec}: {error}", where=key) from None
    import datasets

    name, _, split = spec.partition(":")
    try:
        table = datasets.load_dataset(name, dataset_config, split=split or "train")
    except Exception as error:
        raise UserError(
            f"cannot load hub dataset {name!r} (split {split or 'train'!r}): {error}",
            where=key,
            hint="offline? point it at a local CSV/JSONL/Parquet file",
        ) from None
    return table.to_pandas()


def _clean(
    frame: pd.DataFrame, text_column: str, label_column: str, key: str
) -> tuple[pd.DataFrame, int]:
    for column, name in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise UserError(f"column {column!r} is not in {key} (its columns: {found})", where=name)
    before = len(frame)
    frame = frame[[text_column, label_column]].dropna()
    frame = frame[frame[text_column].astype(str).str.strip() != ""]
    return frame.reset_index(drop=True), before - len(frame)


def _label_names(
    frames: list[pd.DataFrame], label_column: str, wanted: list[Any] | None
) -> list[str]:
    if wanted is not None:
        return [str(v) for v in wanted]
    values = {v for f in frames for v in f[label_column].tolist()}
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = sorted(values, key=str)
    return [str(v) for v in ordered]


def prepare_data(
    *,
    train: str,
    eval: str | None,
    test: str | None = None,
    text_column: str,
    label_column: str,
    labels: list[Any] | None,
    max_length: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    eval_fraction: float,
    seed: int,
    tokenizer: Any,
    dataset_config: str | None = None,
) -> PreparedData:
    """Load, clean, map labels, split, subsample and tokenize."""
    import datasets

    train_frame, dropped = _clean(
        load_table(train, key="data.train", dataset_config=dataset_config),
        text_column,
        label_column,
        "data.train",
    )
    frames = [train_frame]
    if eval is not None:
        eval_frame, dropped_eval = _clean(
            load_table(eval, key="data.eval", dataset_config=dataset_config),
            text_column,
            label_column,
            "data.eval",
        )
        dropped += dropped_eval
        frames.append(eval_frame)

    names = _label_names(frames, label_column, labels)
    label_ids = {name: i for i, name in enumerate(names)}
    kept = []
    for frame in frames:
        keys = frame[label_column].map(str)
        kept.append(frame.assign(label=keys.map(label_ids))[keys.isin(label_ids)])
    if len(names) < 2:
        raise UserError(
            f"found {len(names)} label value(s); classification needs at least 2",
            where="data.label_column",
        )

    def to_dataset(frame: pd.DataFrame) -> datasets.Dataset:
        table = datasets.Dataset.from_dict(
            {
                "text": frame[text_column].astype(str).tolist(),
                "label": frame["label"].astype(int).tolist(),
            }
        )
        return table.cast_column("label", datasets.ClassLabel(names=names))

    train_set = to_dataset(kept[0])
    if len(train_set) < 2:
        raise UserError("fewer than 2 usable rows after dropping empty ones", where="data.train")
    if eval is None:
        counts = train_set.to_pandas()["label"].value_counts()
        stratify = "label" if counts.min() >= 2 else None
        split = train_set.train_test_split(
            test_size=eval_fraction, seed=seed, stratify_by_column=stratify
        )
        train_set, eval_set = split["train"], split["test"]
    else:
        eval_set = to_dataset(kept[1])
    train_set = _subsample(train_set, max_train_samples, seed)
    eval_set = _subsample(eval_set, max_eval_samples, seed)
    if len(eval_set) == 0:
        raise UserError(
            "no usable evaluation rows", where="data.eval" if eval else "data.eval_fraction"
        )

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    columns = ["text"]
    train_tok = train_set.map(tokenize, batched=True, remove_columns=columns)
    eval_tok = eval_set.map(tokenize, batched=True, remove_columns=columns)
    keep = [c for c in (*TOKEN_COLUMNS, "label") if c in train_tok.column_names]
    stats = {"train_rows": len(train_tok), "eval_rows": len(eval_tok), "dropped_rows": dropped}
    test_tok = None
    if test is not None:
        test_frame, _ = _clean(
            load_table(test, key="data.test", dataset_config=dataset_config),
            text_column,
            label_column,
            "data.test",
        )
        keys = test_frame[label_column].map(str)
        known = test_frame.assign(label=keys.map(label_ids))[keys.isin(label_ids)]
        if known.empty:
            raise UserError("no test row has a label seen in training", where="data.test")
        test_tok = to_dataset(known).map(tokenize, batched=True, remove_columns=columns)
        test_tok = test_tok.select_columns(keep)
        stats["test_rows"] = len(test_tok)
    return PreparedData(
        train=train_tok.select_columns(keep),
        eval=eval_tok.select_columns(keep),
        label_names=names,
        pad_token_id=int(tokenizer.pad_token_id),
        stats=stats,
        test=test_tok,
    )


def _subsample(table: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    if limit is None or len(table) <= limit:
        return table
    return table.shuffle(seed=seed).select(range(limit))
