"""An exported adapter scored on new labelled data, as the search scored it.

The export's record (``results/export.py``) says how the search read the data (the
``data`` section: columns, prompt template, max length), which task and metric scored
it, the evaluation's batch size, precision and generated tokens, and which base it
trained on. ``score_export`` reads ``data_file`` through the task's own ``prepare``
with those settings, maps its labels onto the adapter's (a label the adapter never saw
is one error naming it), loads the base and the adapter with ``PeftModel`` and scores
it with the task's own ``evaluate``; then the same base with the adapter disabled (for
a classifier built on a bare encoder, its new head untrained: what the adapter added).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError
from peftsearch.trials.result import score_error

if TYPE_CHECKING:
    import datasets

    from peftsearch.trials.data import PreparedData

__all__ = ["AdapterScores", "score_export"]

Progress = Callable[[int, int], None]  # (rows scored so far, rows in all)


@dataclass
class AdapterScores:
    """The adapter's and the bare base's scores on the data: the searched metric
    (``score``), its standard error, and every metric the task reported."""

    rows: int
    score: float
    score_se: float | None
    metrics: dict[str, Any]
    base_score: float
    base_se: float | None
    device: str


def score_export(
    folder: Path,
    record: dict[str, Any],
    labels: dict[str, Any],
    data_file: Path,
    *,
    device: str = "auto",
    progress: Progress | None = None,
) -> AdapterScores:
    """Score the adapter in ``folder`` (its record and ``labels.json`` read already) on
    ``data_file``; ``progress`` hears the rows scored as the model runs."""
    import torch
    from peft import PeftModel

    from peftsearch.trials import BaseModelSource, Checkpoint, load_tokenizer
    from peftsearch.trials.model import quiet_transformers
    from peftsearch.trials.tasks import EvalContext, get_task

    if not data_file.is_file():
        raise UserError("no such data file", where=str(data_file))
    task = get_task(str(record["task"]))
    names = [labels["id2label"][k] for k in sorted(labels["id2label"], key=int)]
    base = record["base"]
    checkpoint = Checkpoint(
        str(base["name_or_path"]),
        revision=base.get("revision"),
        gguf_file=base.get("gguf_file"),
        trust_remote_code=bool(base.get("trust_remote_code")),
    )
    tokenizer = load_tokenizer(checkpoint)
    with quiet_transformers():
        prepared = _prepare(task, record, data_file, tokenizer, names)
    table = _onto_adapter_labels(prepared, names, data_file)
    device = _device(device)
    settings = record.get("evaluation") or {}
    source = BaseModelSource(
        checkpoint,
        num_labels=len(names),
        label_names=names,
        pad_token_id=int(labels["pad_token_id"]),
        seed=int(settings.get("seed") or 0),
        task=task.name,
    )
    source.device = device
    with quiet_transformers():
        model = PeftModel.from_pretrained(
            source.fresh_copy(str(base.get("quantization") or "none")), str(folder)
        )
    model.to(device)
    metric = str(record.get("metric") or task.metrics[0].name)
    context = EvalContext(
        batch_size=int(settings.get("eval_batch_size") or 64),
        pad_token_id=int(labels["pad_token_id"]),
        device=device,
        precision=str(settings.get("precision") or "auto"),
        label_names=names,
        max_new_tokens=int(settings.get("max_new_tokens") or 32),
        tokenizer=lambda: tokenizer,
    )
    passes = 2 * _passes(task.name, metric, context.max_new_tokens)  # adapter, then none
    counted = _RowCounter(len(table) * passes, progress)
    # the transformers model itself: its forward runs for scoring and each generated token
    inner = model.get_base_model()
    handle = inner.register_forward_pre_hook(counted.hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            scored = task.evaluate(model, table, context, metric=metric)
            with model.disable_adapter():
                bare = task.evaluate(model, table, context, metric=metric)
    finally:
        handle.remove()
    counted.finish()
    score, base_score = float(scored.pop("score")), float(bare.pop("score"))
    return AdapterScores(
        rows=len(table),
        score=score,
        score_se=score_error(score, len(table), scored.get("score_error")),
        metrics={k: v for k, v in scored.items() if k != "generation_seconds"},
        base_score=base_score,
        base_se=score_error(base_score, len(table), bare.get("score_error")),
        device=device,
    )


def _prepare(
    task: Any, record: dict[str, Any], data_file: Path, tokenizer: Any, names: list[str]
) -> PreparedData:
    """The file as the search's eval split: every row, read with the study's data
    settings (its prompt template, columns, max length). A classifier's labels are the
    adapter's, in its order (the file may hold only some of them)."""
    from peftsearch.config import data_config_class

    section = dict(record.get("data") or {})
    section.update(
        train=str(data_file),
        eval=str(data_file),
        test=None,
        max_train_samples=2,  # prepare wants a train split; none is used
        max_eval_samples=None,
    )
    if "labels" in task.data_options.model_fields:
        section["labels"] = names or None
    for key in ("dataset_config", "dataset_revision"):
        section.pop(key, None)
    try:
        data = data_config_class().model_validate(section)
    except Exception as error:  # pydantic's: the export's data section against today's
        raise UserError(
            f"the export's data settings do not read as data options here: {error}",
            where="peftsearch_export.json: data",
        ) from None
    if "label_column" in task.data_options.model_fields and names:  # a classifier's
        _check_labels(data, data.label_column, names, data_file)
    return task.prepare(data, seed=int((record.get("evaluation") or {}).get("seed") or 0),
                        tokenizer=tokenizer)  # fmt: skip


def _unseen(found: list[str], names: list[str], data_file: Path) -> None:
    unseen = [name for name in found if name not in names]
    if unseen:
        listed = ", ".join(repr(n) for n in unseen[:5])
        raise UserError(
            f"label {listed} is not one the adapter was trained on (its labels: "
            f"{', '.join(repr(n) for n in names)})",
            where=str(data_file),
            hint="drop those rows, or search again with them in the training data",
        )


def _check_labels(data: Any, column: str, names: list[str], data_file: Path) -> None:
    """A classifier's file: every label must be one the adapter's head knows."""
    from peftsearch.trials.data import read_table

    frame = read_table(data, "eval")
    if column not in frame.columns:
        raise UserError(
            f"no column {column!r} (the search's data.label_column) in the file",
            where=str(data_file),
        )
    values = frame[column].dropna().map(str)
    _unseen(list(dict.fromkeys(values)), names, data_file)


def _onto_adapter_labels(
    prepared: PreparedData, names: list[str], data_file: Path
) -> datasets.Dataset:
    """The eval rows with label ids as the adapter's head numbers them; a label it never
    saw is a UserError naming it (the head cannot score it)."""
    table = prepared.eval
    found = list(prepared.label_names)
    _unseen(found, names, data_file)
    if found == names[: len(found)]:
        return table
    to_adapter = {i: names.index(name) for i, name in enumerate(found)}

    def remap(value: Any) -> Any:
        if isinstance(value, list):
            return [to_adapter.get(v, v) if v >= 0 else v for v in value]
        return to_adapter[int(value)]

    import datasets

    column = "labels" if "labels" in table.column_names else "label"
    if column not in table.column_names:
        return table
    if isinstance(table.features[column], datasets.ClassLabel):  # its names are the file's
        table = table.cast_column(column, datasets.Value("int64"))
    return table.map(lambda row: {column: remap(row[column])})


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{device} was asked for, but torch sees no GPU", where="--device")
    return device


def _passes(task: str, metric: str, max_new_tokens: int) -> int:
    """Forward calls per row in one evaluation: one, or for exact match the
    teacher-forced pass, the prompt and each generated token."""
    return 1 + max_new_tokens if task == "causal-lm" and metric == "exact_match" else 1


class _RowCounter:
    """Counts the rows each forward call carries (a forward pre-hook), for progress."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids: Any = kwargs.get("input_ids")
        if ids is None:  # prompt tuning feeds embeddings
            ids = kwargs.get("inputs_embeds", args[0] if args else None)
        shape = getattr(ids, "shape", None)
        if self.progress is not None and shape is not None:
            self.done = min(self.total, self.done + int(shape[0]))
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)
