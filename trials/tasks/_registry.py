"""Registry of tasks: one plug-in per task (what a trial trains and how it is scored).

A task owns everything specific to it: its ``data.*`` keys, how rows become tokenized
splits, the model head and peft ``task_type``, the metrics and which one the search and
the rungs read, the no-adapter baselines, and what the model card says. The rest of
peftsearch asks the task; nothing outside a task's own file compares task names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import datasets
    from torch import nn

    from peftsearch.trials.data import PreparedData
    from peftsearch.trials.train import Feed

__all__ = [
    "CardFacts",
    "DataOptions",
    "EvalContext",
    "Metric",
    "Task",
    "TaskBase",
    "check_task_config",
    "default_task",
    "get_task",
    "head_loading_code",
    "metric_label",
    "register_task",
    "task_names",
    "unregister_task",
]


@dataclass(frozen=True)
class Metric:
    """A score a task reports. ``label`` names it for people (``exact match``).
    ``share``: a share of evaluation units (rows, tokens, entities) in [0, 1], so its
    standard error is binomial (results/noise.py); 1/perplexity is not one."""

    name: str
    label: str
    description: str
    share: bool = True


class DataOptions(BaseModel):
    """Base of a task's own ``data.*`` keys; they join the shared ones in one ``data``
    section (a key another task owns is refused when this task is chosen)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


@dataclass
class EvalContext:
    """What scoring needs besides the model and the rows, as flat values."""

    batch_size: int
    pad_token_id: int
    device: str
    precision: str
    label_names: list[str]
    max_new_tokens: int = 32
    tokenizer: Callable[[], Any] | None = None
    feed: Feed | None = None
    # generation cannot be served from the frozen-layer cache: it runs inside this
    full_model: Callable[[], AbstractContextManager[Any]] | None = None


@dataclass(frozen=True)
class CardFacts:
    """What a model card says about one exported trial."""

    base_model: str
    load_arguments: str  # from_pretrained's keyword arguments, as Python source
    plugin_import: str  # "import peftsearch ..." line when peft needs it, else ""
    row: dict[str, Any]
    data: dict[str, Any]  # the study's data section
    labels: list[str]
    max_new_tokens: int
    results: str  # the card's metric table rows, one per line, already formatted
    labels_file: str
    extra: dict[str, Any] = field(default_factory=dict)


def head_loading_code(facts: CardFacts, auto_class: str) -> str:
    """The card's code for a model with a new head over labels (a classifier, a tagger):
    the base with the labels the search used, then the adapter."""
    return f"""```python
import json
{facts.plugin_import}from peft import PeftModel
from transformers import {auto_class}, AutoTokenizer

labels = json.load(open("{facts.labels_file}"))
base = {auto_class}.from_pretrained(
    "{facts.base_model}",{facts.load_arguments}
    num_labels=len(labels["id2label"]),
    id2label={{int(i): name for i, name in labels["id2label"].items()}},
    label2id=labels["label2id"],
)
base.config.pad_token_id = labels["pad_token_id"]
model = PeftModel.from_pretrained(base, "path/to/this/folder").eval()
tokenizer = AutoTokenizer.from_pretrained("{facts.base_model}",{facts.load_arguments})
```
"""


class Task(Protocol):
    """Contract of a task plug-in.

    ``name`` is what users write in ``model.task``; ``display_name`` how reports say it;
    ``pipeline_tag`` the hub's word for it (model cards); ``unit`` what one evaluation
    row is, in words (``prompts``). ``file_suffixes`` are data
    files only this task reads (CoNLL text), beside the tables every task reads.
    ``peft_task_type`` is the peft ``task_type`` its adapters carry. ``metrics`` are the
    choices of ``evaluation.metric``; the first is the default. ``columns`` are the
    metrics every trial row shows (the searched one included). ``data_options`` is the
    pydantic model of its ``data.*`` keys; ``check`` validates across sections (raise
    ValueError naming the key). ``prepare`` reads, splits, subsamples and tokenizes;
    its tables must carry ``input_ids`` (and what ``collate`` pads) so training,
    the frozen-layer cache and the cost model work for every task. ``model_class`` is
    the transformers auto class and ``head_kwargs`` what ``from_pretrained`` needs for
    the head. ``evaluate`` returns every metric of ``metric`` on ``table`` plus
    ``"score"``, the value the search maximises (with ``rung``, the cheaper signal
    early-stopping rungs compare). ``baselines`` scores what answering without a model
    gives (the majority class, tagging everything ``O``); ``base_model_baseline`` names
    the base model scored as it is. ``describe_data`` is the run's one data line;
    ``model_card`` the export's README. ``method_defaults`` are the task's own defaults
    for methods' ``space`` options (``{"lora": {"lr": {"low": ..., "high": ...}}}``), for
    what its models want other than the plug-ins' defaults (chosen on encoder tables); a
    config's own values win. ``design_most_blocks`` names the methods whose initial-design
    trials span the most blocks their ``layers`` allow, not the fewest (where the task's
    table shows small adapters on few blocks staying at chance). Nothing may import torch
    at module import time.
    """

    name: str
    display_name: str
    pipeline_tag: str
    unit: str
    peft_task_type: str
    metrics: tuple[Metric, ...]
    columns: tuple[str, ...]
    data_options: type[DataOptions]
    file_suffixes: tuple[str, ...]
    base_model_baseline: str
    method_defaults: Mapping[str, Mapping[str, Any]]
    design_most_blocks: frozenset[str]

    def check(self, config: Any) -> None: ...

    def prepare(self, data: Any, *, seed: int, tokenizer: Any) -> PreparedData: ...

    def model_class(self) -> Any: ...

    def head_kwargs(self, label_names: list[str]) -> dict[str, Any]: ...

    def evaluate(
        self,
        model: nn.Module,
        table: datasets.Dataset,
        context: EvalContext,
        *,
        metric: str,
        rung: bool = False,
    ) -> dict[str, Any]: ...

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]: ...

    def describe_data(self, data: PreparedData, metric: str) -> str: ...

    def model_card(self, facts: CardFacts) -> str: ...


class TaskBase:
    """Defaults for a task plug-in: no cross-section checks, no model-free baseline,
    the head of a classifier-like model."""

    name: str
    display_name: str
    peft_task_type: str
    metrics: tuple[Metric, ...]
    pipeline_tag: str
    default: bool = False  # the task of a config that names none (one task only)
    unit: str = "rows"
    columns: tuple[str, ...] = ()
    data_options: type[DataOptions] = DataOptions
    file_suffixes: tuple[str, ...] = ()
    base_model_baseline = "no adapter: the base model as it is"
    method_defaults: Mapping[str, Mapping[str, Any]] = {}
    design_most_blocks: frozenset[str] = frozenset()

    def check(self, config: Any) -> None:
        return None

    def head_kwargs(self, label_names: list[str]) -> dict[str, Any]:
        return {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }

    def baselines(self, data: PreparedData, metric: str) -> dict[str, dict[str, Any]]:
        return {}

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task by its name; ``model.task`` accepts it from then on."""
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        known = ", ".join(sorted(_TASKS))
        raise KeyError(f"unknown task {name!r}; known tasks: {known}") from None


def task_names() -> list[str]:
    return sorted(_TASKS)


def default_task() -> str:
    """What ``model.task`` is when a config leaves it out: the task that says it is the
    default (text classification)."""
    defaults = [name for name, task in _TASKS.items() if getattr(task, "default", False)]
    if len(defaults) != 1:
        raise RuntimeError(f"exactly one task must be the default; found {defaults}")
    return defaults[0]


def unregister_task(name: str) -> None:
    """Remove a task (tests that register a throwaway task clean up with this)."""
    _TASKS.pop(name, None)


def check_task_config(config: Any, table_suffixes: tuple[str, ...]) -> None:
    """The config as the chosen task reads it, or a ValueError naming the key: another
    task's ``data`` key set to other than its default (it would be ignored), a data file
    only another task reads, an ``evaluation.metric`` the task does not report."""
    from pathlib import Path

    task = get_task(config.model.task)
    data = config.data
    own = set(task.data_options.model_fields)
    for name in task_names():
        fields = get_task(name).data_options.model_fields
        for key in sorted(set(fields) & data.model_fields_set - own):
            if getattr(data, key) != fields[key].default:
                reads = ", ".join(f"data.{k}" for k in sorted(own)) or "none"
                raise ValueError(
                    f"data.{key}: read by model.task {name} only, not by {task.name} "
                    f"(it reads {reads})"
                )
    for key in ("train", "eval", "test"):
        value = (getattr(data, key) or "").lower()
        owners = [n for n in task_names() if value.endswith(get_task(n).file_suffixes or ())]
        if owners and task.name not in owners:
            raise ValueError(
                f"data.{key}: {Path(value).name} is a file model.task {owners[0]} reads; "
                f"{task.name} reads {', '.join(table_suffixes)} files"
            )
    choices = [m.name for m in task.metrics]
    for key, metric in (
        ("evaluation.metric", config.evaluation.metric),
        ("search.early_stopping.rung_metric", config.search.early_stopping.rung_metric),
    ):
        if metric is not None and metric not in choices:
            raise ValueError(
                f"{key}: {metric!r} is not a metric of {task.name}; choose one of "
                f"{', '.join(choices)}"
            )


def metric_label(name: str | None) -> str:
    """A metric's name for people, from the task that reports it (``exact match``)."""
    if not name:
        return "accuracy"
    for task in _TASKS.values():
        for metric in task.metrics:
            if metric.name == name:
                return metric.label
    return name.replace("_", " ")
