"""What every task's data preparation shares: reading a table, holding out an evaluation
split, subsampling, and the tokenized splits a task hands to the trials.

Each task (trials/tasks/) turns the rows into its own columns and tokens; the split and
the subsample are the same for all, so a seed means the same rows in every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    import datasets
    import pandas as pd

__all__ = [
    "PreparedData",
    "hold_out",
    "load_table",
    "missing_column",
    "read_reference",
    "read_table",
    "stratified_split",
    "subsample",
]


@dataclass
class PreparedData:
    """Tokenized splits plus the label names; pickles cleanly for Ray's object store.

    ``task`` is the name of the task plug-in that prepared them. ``label_names`` are a
    classifier's classes, a tagger's tags, and empty for a causal LM. ``stats`` counts
    rows (``train_rows``, ``eval_rows``, ``test_rows``) and what the task dropped.
    """

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]
    pad_token_id: int
    task: str
    stats: dict[str, Any] = field(default_factory=dict)
    test: datasets.Dataset | None = None  # never used for selection (data.test)
    # evaluation.reference_data, tokenized: the text forgetting is measured on
    # (trials/forgetting.py); None: the base model's own text
    reference: list[list[int]] | None = None

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


def read_reference(path: Path, tokenizer: Any, max_length: int) -> list[list[int]]:
    """``evaluation.reference_data`` tokenized: a .txt file's non-empty lines, or a
    table's ``text`` column, each passage cut to ``max_length`` tokens."""
    key = "evaluation.reference_data"
    if path.suffix.lower() == ".txt":
        passages = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        frame = _read_file(str(path))
        if "text" not in frame.columns:
            raise UserError(
                f"no 'text' column in {path.name} (columns: {', '.join(map(str, frame.columns))})",
                where=key,
            )
        passages = [str(t) for t in frame["text"].dropna() if str(t).strip()]
    if not passages:
        raise UserError(f"{path.name} holds no text", where=key)
    return [
        list(tokenizer(p, truncation=True, max_length=max_length)["input_ids"]) for p in passages
    ]


def load_table(
    spec: str, *, key: str, dataset_config: str | None = None, revision: str | None = None
) -> pd.DataFrame:
    """A local file, or a hub dataset written ``name:split`` (``name`` alone means train)
    at ``revision``. Offline (``HF_HUB_OFFLINE=1``) a hub dataset is read from the files
    in the Hugging Face cache (a pre-filled cache, or an air-gapped mirror of one)."""
    from peftsearch.config import is_local_table

    if is_local_table(spec) or Path(spec).is_file():
        try:
            return _read_file(spec)
        except UserError:
            raise
        except Exception as error:  # pandas raises many types for malformed files
            raise UserError(f"cannot read {spec}: {error}", where=key) from None
    import datasets

    from peftsearch.trials.hub_cache import cached_snapshot, offline

    name, _, split = spec.partition(":")
    source = name
    if offline():  # datasets reads only its own arrow cache offline: use the hub cache's files
        source = str(
            cached_snapshot(
                name, "dataset", revision, key=key, revision_key="data.dataset_revision"
            )
        )
    try:
        table = datasets.load_dataset(
            source, dataset_config, split=split or "train", revision=None if offline() else revision
        )
    except Exception as error:
        raise UserError(
            f"cannot load hub dataset {name!r} (split {split or 'train'!r}): {error}",
            where=key,
            hint="offline? point it at a local CSV/JSONL/Parquet file",
        ) from None
    return table.to_pandas()


def read_table(data: Any, split: str) -> pd.DataFrame:
    """``data.<split>`` (train, eval or test) of a data section, read."""
    return load_table(
        getattr(data, split),
        key=f"data.{split}",
        dataset_config=data.dataset_config,
        revision=getattr(data, "dataset_revision", None),
    )


def missing_column(frame: pd.DataFrame, column: str, key: str, where: str) -> UserError | None:
    """The error for a column the file lacks, naming the key that asked for it."""
    if column in frame.columns:
        return None
    found = ", ".join(map(str, frame.columns))
    return UserError(f"column {column!r} is not in {key} (its columns: {found})", where=where)


def hold_out(
    train: datasets.Dataset,
    eval: datasets.Dataset | None,
    *,
    fraction: float,
    seed: int,
    max_train: int | None,
    max_eval: int | None,
    stratify: str | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The train and eval rows: ``eval`` as given, or ``fraction`` of ``train`` held out
    (stratified by the ``stratify`` column when every class has two rows), then each
    subsampled to its limit. The same seed gives the same rows in every task."""
    if eval is None:
        if stratify is not None:
            counts = train.to_pandas()[stratify].value_counts()
            stratify = stratify if counts.min() >= 2 else None
        if stratify is None:
            split = train.train_test_split(test_size=fraction, seed=seed)
            train, eval = split["train"], split["test"]
        else:
            train, eval = stratified_split(train, fraction, seed, stratify)
    return subsample(train, max_train, seed), subsample(eval, max_eval, seed)


def stratified_split(
    table: datasets.Dataset, fraction: float, seed: int, column: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """datasets' stratified ``train_test_split(test_size=fraction, seed=seed)``, the
    same rows in the same order, from datasets' own index generator: its method reads
    the label column row by row (1.5 s for 13k rows with datasets 5), this reads it in
    one batch."""
    import math

    import numpy as np
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    labels = np.asarray(table.select_columns([column]).with_format("numpy")[:][column])
    n_test = math.ceil(fraction * len(table))
    train, test = next(
        stratified_shuffle_split_generate_indices(
            labels, len(table) - n_test, n_test, rng=np.random.default_rng(seed)
        )
    )
    return table.select(train), table.select(test)


def subsample(table: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    if limit is None or len(table) <= limit:
        return table
    return table.shuffle(seed=seed).select(range(limit))
