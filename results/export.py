"""Export one trial's adapter in standard PEFT format, with a model card and labels."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError
from peftsearch.results.study_folder import LABELS_FILE, StudyFolder
from peftsearch.trials.result import score_error

if TYPE_CHECKING:
    from peftsearch.trials import Checkpoint
    from peftsearch.trials.tasks import Task

__all__ = [
    "EXPORT_RECORD",
    "adapter_digests",
    "base_identity",
    "cached_commit",
    "export_adapter",
    "export_record",
    "model_card",
]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
# what the export pins, for ``peftsearch verify`` and ``peftsearch evaluate`` to read back
EXPORT_RECORD = "peftsearch_export.json"
RECORD_FORMAT = 1


def adapter_digests(folder: Path) -> dict[str, str]:
    """sha256 of each adapter file: what a registry entry and the model card pin."""
    import hashlib

    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ADAPTER_FILES
        if (folder / name).is_file()
    }


def base_identity(base: Checkpoint) -> str:
    """Which base model exactly: ``hub id@revision``, or for a local folder the sha256
    of its files (names and contents), so an adapter traces back to its weights."""
    import hashlib

    folder = Path(base.name_or_path)
    if not folder.is_dir():
        return f"{base.name_or_path}@{base.revision or 'main'}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if base.gguf_file and path.suffix == ".gguf" and path.name != base.gguf_file:
            continue  # other quantisations in the folder are not this model
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"local:{folder.name}:sha256:{digest.hexdigest()}"


def cached_commit(base: Checkpoint) -> str | None:
    """The commit a hub base's revision resolves to in the local Hugging Face cache
    (what the trials loaded), or None: a local folder, or not cached."""
    if Path(base.name_or_path).exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(base.name_or_path, revision=base.revision, local_files_only=True)
    except Exception:  # not cached, or not a hub id: nothing to pin
        return None
    return Path(folder).name


def export_record(
    *,
    row: dict[str, Any],
    base: Checkpoint,
    quantization: str,
    data: dict[str, Any],
    evaluation: dict[str, Any],
    study_name: str,
    task: str,
    digests: dict[str, str],
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """The export's record: its files' sha256, exactly which base (``identity``: hub
    id@revision and the commit the cache resolved it to, or the sha256 of a local
    folder's files), how the search read and scored the data (the data section and the
    evaluation settings), and the adapter's own scores with their standard errors:
    ``eval`` is the trial's measurement (not a mean over confirmation seeds), ``test``
    the held-out test score when the study had one."""
    eval_value = row.get("search_accuracy")
    if not isinstance(eval_value, int | float):
        eval_value = row.get("accuracy")
    eval_se = score_error(eval_value, row.get("eval_rows"), row.get("accuracy_se"))
    test = row.get("test_accuracy")
    return {
        "format": RECORD_FORMAT,
        "study": study_name,
        "trial": int(row["trial"]),
        "method": row["method"],
        "task": task,
        "metric": row.get("metric") or "accuracy",
        "files": digests,
        "base": {
            "name_or_path": base.name_or_path,
            "revision": base.revision,
            "gguf_file": base.gguf_file,
            "trust_remote_code": base.trust_remote_code,
            "quantization": quantization,
            "identity": base_identity(base),
            "commit": cached_commit(base),
        },
        "data": data,
        "evaluation": evaluation,
        "scores": {
            "eval": {"value": eval_value, "se": eval_se, "rows": row.get("eval_rows")},
            "test": (
                {
                    "value": test,
                    "se": score_error(test, row.get("test_rows")),
                    "rows": row.get("test_rows"),
                }
                if isinstance(test, int | float)
                else None
            ),
        },
        "tracking_uri": tracking_uri,
    }


def _files_section(digests: dict[str, str]) -> str:
    rows = "".join(f"| `{name}` | `{digest}` |\n" for name, digest in digests.items())
    return f"\n## Files\n\n| file | sha256 |\n|---|---|\n{rows}"


def _load_arguments(base: Checkpoint, quantization: str = "none") -> str:
    """``from_pretrained``'s keyword arguments for this checkpoint, as Python source."""
    from peftsearch.trials.model import quantization_source

    source = "".join(f"\n    {key}={value!r}," for key, value in base.hub_kwargs().items() if value)
    if quantization != "none" and not base.gguf_file:  # the base as the trials had it
        source += f"\n    quantization_config={quantization_source(quantization)},"
        source += '\n    device_map="auto",'
    return source


def _results(row: dict[str, Any], task: Task) -> str:
    """The card's metric table: the searched metric, the task's others, the held-out test
    figure, size and cost."""
    from peftsearch.trials.tasks import metric_label

    lines = [
        f"| {metric_label(row.get('metric'))} on {row.get('eval_rows')} eval {task.unit} | "
        f"{_num(row['accuracy'])} |"
    ]
    if (row.get("seeds") or 1) > 1:  # confirmation re-ran it (search.confirm)
        lines[0] = (
            f"| {metric_label(row.get('metric'))} on {row.get('eval_rows')} eval {task.unit}, "
            f"mean of {row['seeds']} training seeds | {_num(row['accuracy'])} "
            f"(sd {_num(row.get('accuracy_sd'))}; this adapter, the search's seed: "
            f"{_num(row.get('search_accuracy'))}) |"
        )
    for column in task.columns:
        if isinstance(row.get(column), int | float) and column != row.get("metric"):
            lines.append(f"| {metric_label(column)} | {_num(row[column])} |")
    if row.get("test_accuracy") is not None:
        lines.append(
            f"| {metric_label(row.get('metric'))} on the held-out test set "
            f"({row['test_rows']} rows) | {row['test_accuracy']:.4f} |"
        )
    if row.get("forgetting") is not None:
        lines.append(
            "| forgetting: rise of the loss on reference text over the base model's "
            f"(nats per token) | {_num(row['forgetting'])} ± {_num(row.get('forgetting_se'))} |"
        )
    lines.append(
        f"| trainable parameters | {row['trainable_params']:,} ({row['trainable_pct']:.3f}% of "
        "the model) |"
    )
    if row.get("adapter_bytes"):
        lines.append(f"| adapter files | {row['adapter_bytes']:,} bytes |")
    lines.append(
        f"| training cost | ${row['cost_usd']:.4f} ({row['device_seconds']:.0f} device-seconds) |"
    )
    return "\n".join(lines)


def _prompt_learning(peft_type: str) -> bool:
    """Whether peft counts the method as prompt learning (virtual tokens: prompt, prefix,
    p-tuning), by its config class."""
    from peft import PeftType, PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if peft_type not in PeftType.__members__:
        return False  # a type registered by a plug-in (bottleneck adapters): not prompts
    config = PEFT_TYPE_TO_CONFIG_MAPPING.get(PeftType[peft_type])
    return config is not None and issubclass(config, PromptLearningConfig)


def _plugin_import(peft_type: str, quantization: str = "none", gguf: bool = False) -> str:
    """A peft method of peftsearch's own (the bottleneck adapter) is registered with peft
    by ``import peftsearch``; peft's own methods need nothing. A quantized base needs
    bitsandbytes' config."""
    from peftsearch.trials.peft_methods import OWN_PEFT_TYPES

    lines = ""
    if peft_type.upper() in OWN_PEFT_TYPES:
        lines += "import peftsearch  # registers this adapter type with peft\n"
    if quantization != "none" and gguf:
        lines += (
            "# transformers cannot quantize while reading GGUF, so this loads the base in\n"
            "# float32; peftsearch.trials.model.load_pretrained(AutoModelForCausalLM,\n"
            f"# Checkpoint(...), {quantization!r}) loads it {quantization} as the search did\n"
        )
    elif quantization != "none":
        lines += "from transformers import BitsAndBytesConfig  # pip install bitsandbytes\n"
    return lines


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def model_card(
    *,
    base: Checkpoint,
    row: dict[str, Any],
    data: dict[str, Any],
    labels: list[str],
    study_name: str,
    peft_type: str,
    task: str,
    max_new_tokens: int = 32,
    quantization: str = "none",
) -> str:
    """The export's README: what every card says, then the task's own part (its
    results, data and the code that loads the adapter). A base that trained quantized
    is loaded quantized the same way."""
    from peftsearch.trials.tasks import CardFacts, get_task

    plugin = get_task(task)
    revision = f" at revision `{base.revision}`" if base.revision else ""
    facts = CardFacts(
        base_model=base.name_or_path,
        load_arguments=_load_arguments(base, quantization),
        plugin_import=_plugin_import(peft_type, quantization, bool(base.gguf_file)),
        row=row,
        data=data,
        labels=labels,
        max_new_tokens=max_new_tokens,
        results=_results(row, plugin),
        labels_file=LABELS_FILE,
        extra={"prompt_learning": _prompt_learning(peft_type)},
    )
    return f"""---
library_name: peft
base_model: {base.name_or_path}
pipeline_tag: {plugin.pipeline_tag}
tags: [peft, {peft_type.lower()}, peftsearch]
---
# {row["method"]} adapter from peftsearch study `{study_name}` (trial {row["trial"]})

**Base model:** `{base.name_or_path}`{revision}
**Settings in words:** {row.get("description") or row["method"]}
**Method:** {row["method"]} ({peft_type}); settings: {row["params"]}; learning rate {row["lr"]:.3g}
{_conversion_note(row)}{plugin.model_card(facts)}"""


def _conversion_note(row: dict[str, Any]) -> str:
    """PiSSA and OLoRA trained on a changed base; the export is peft's conversion."""
    params = str(row.get("params") or "")
    if "pissa" not in params and "olora" not in params:
        return ""
    return (
        "**Initialisation:** it trained from a PiSSA/OLoRA start, which moves part of the "
        "base weights into the adapter; these files are peft's conversion of it "
        "(`path_initial_model_for_weight_conversion`) into a plain LoRA of twice the rank "
        "for the unchanged base model, so it loads on the base as published.\n"
    )


def export_adapter(
    *,
    study_dir: Path,
    row: dict[str, Any],
    base: Checkpoint,
    data: dict[str, Any],
    study_name: str,
    out: Path,
    merge: bool = False,
    force: bool = False,
    max_new_tokens: int = 32,
    evaluation: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> Path:
    """Write the adapter, ``labels.json``, ``README.md`` and the record
    (``EXPORT_RECORD``, ``export_record``) to ``out``, all or nothing.

    ``data`` is the study's data section (for the card and the record). With
    ``merge``, the adapter is also merged into ``base`` (same revision, remote code and
    float32 weights as the search) and written to ``out/merged``. ``max_new_tokens``: a
    causal-LM card generates as the evaluation did (``evaluation.max_new_tokens``).
    ``evaluation``: how the search scored (metric, batch size, precision, generated
    tokens), for ``peftsearch evaluate``; ``tracking_uri``: the study's MLflow store.
    """

    number = row["trial"]
    folder = StudyFolder(study_dir)
    source = folder.trial_adapter(number)
    if row["status"] != "COMPLETE" or not folder.has_adapter(number):
        raise UserError(
            f"trial {number} has no saved adapter (status {row['status']})", where="--trial"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(
            "the folder is not empty", where=str(out), hint="pass --force to replace it"
        )
    meta = folder.read_labels()
    adapter_config = json.loads((source / "adapter_config.json").read_text())
    peft_type = str(adapter_config.get("peft_type", "")).upper()
    quantization = row.get("quantization") or "none"
    if merge and not _mergeable(row["method"]):
        raise UserError(
            f"{row['method']} adapters cannot be merged into the weights: they are not a "
            "linear change of them (a bottleneck adapter has a non-linearity inside; prompt "
            "and prefix tuning add tokens)",
            where="--merge",
            hint="export without --merge and load it with PeftModel.from_pretrained",
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / LABELS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        card = model_card(
            base=base,
            row=row,
            data=data,
            labels=list(meta["id2label"].values()),
            study_name=study_name,
            peft_type=peft_type,
            task=meta["task"],
            max_new_tokens=max_new_tokens,
            quantization=quantization,
        )
        digests = adapter_digests(staging)
        (staging / "README.md").write_text(card + _files_section(digests))
        record = export_record(
            row=row,
            base=base,
            quantization=quantization,
            data=data,
            evaluation={"max_new_tokens": max_new_tokens, **(evaluation or {})},
            study_name=study_name,
            task=meta["task"],
            digests=digests,
            tracking_uri=tracking_uri,
        )
        (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if merge:
            _merge(staging, base, meta, quantization)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _mergeable(method: str) -> bool:
    from peftsearch.spaces import get_method

    try:
        return get_method(method).mergeable
    except KeyError:
        return False


def _merge(folder: Path, base: Checkpoint, meta: dict[str, Any], quantization: str) -> None:
    """Merge into the very checkpoint the trials trained on, loaded the way they loaded
    it. A quantized base is de-quantized first (``trials.model.dequantized``): the merged
    float32 weights compute what the adapter on the quantized base was scored on (the
    card says so); they are not the checkpoint's original weights."""
    from peft import PeftModel

    from peftsearch.trials import BaseModelSource, load_tokenizer
    from peftsearch.trials.model import dequantized

    labels = [meta["id2label"][k] for k in sorted(meta["id2label"], key=int)]
    source = BaseModelSource(
        base,
        num_labels=len(labels),
        label_names=labels,
        pad_token_id=meta["pad_token_id"],
        task=meta["task"],
    )
    model = source.fresh_copy(quantization)
    if quantization != "none":
        model = dequantized(model)
    merged = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    merged.save_pretrained(folder / "merged")
    if quantization != "none":
        (folder / "merged" / "QUANTIZATION.md").write_text(
            f"These float32 weights are the {quantization}-quantized base, de-quantized, with "
            "the adapter merged in: what the adapter computed in the search, not the "
            "checkpoint's original weights plus the adapter.\n"
        )
    load_tokenizer(base).save_pretrained(folder / "merged")
