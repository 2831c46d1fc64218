"""Export one trial's adapter in standard PEFT format, with a model card and labels."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from peftsearch.errors import UserError
from peftsearch.results.files import LABELS_FILE, TRIAL_ADAPTERS

__all__ = ["export_adapter", "model_card"]

MERGEABLE = {"LORA", "IA3", "LOHA", "LOKR"}


def model_card(
    *,
    base_model: str,
    row: dict[str, Any],
    data: dict[str, Any],
    labels: list[str],
    study_name: str,
    peft_type: str,
) -> str:
    acc = row.get("accuracy")
    f1 = row.get("macro_f1")
    return f"""---
library_name: peft
base_model: {base_model}
tags: [peft, {peft_type.lower()}, peftsearch]
---
# {row["method"]} adapter from peftsearch study `{study_name}` (trial {row["trial"]})

**Base model:** `{base_model}`
**Method:** {row["method"]} ({peft_type}); settings: {row["params"]}; learning rate {row["lr"]:.3g}
**Task:** sequence classification into {len(labels)} labels: {", ".join(labels)}

## Results on the evaluation set

| metric | value |
|---|---|
| accuracy | {acc:.4f} |
| macro-F1 | {f1:.4f} |
| trainable parameters | {row["trainable_params"]:,} ({row["trainable_pct"]:.3f}% of the model) |
| training cost | ${row["cost_usd"]:.4f} ({row["device_seconds"]:.0f} device-seconds) |

## Data

- train: `{data.get("train")}`
- eval: `{data.get("eval") or f"{data.get('eval_fraction')} of train, held out"}`
- text column `{data.get("text_column")}`, label column `{data.get("label_column")}`
- at most {data.get("max_length")} tokens per text

## Load it

```python
import json
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

labels = json.load(open("{LABELS_FILE}"))
base = AutoModelForSequenceClassification.from_pretrained(
    "{base_model}",
    num_labels=len(labels["id2label"]),
    id2label={{int(i): name for i, name in labels["id2label"].items()}},
    label2id=labels["label2id"],
)
base.config.pad_token_id = labels["pad_token_id"]
model = PeftModel.from_pretrained(base, "path/to/this/folder").eval()
tokenizer = AutoTokenizer.from_pretrained("{base_model}")
```
"""


def export_adapter(
    *,
    study_dir: Path,
    row: dict[str, Any],
    config: Any,
    out: Path,
    merge: bool = False,
    force: bool = False,
) -> Path:
    """Write the adapter, ``labels.json`` and ``README.md`` to ``out``, all or nothing."""
    number = row["trial"]
    source = study_dir / TRIAL_ADAPTERS / str(number)
    if row["status"] != "COMPLETE" or not (source / "adapter_config.json").is_file():
        raise UserError(
            f"trial {number} has no saved adapter (status {row['status']})", where="--trial"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(
            "the folder is not empty", where=str(out), hint="pass --force to replace it"
        )
    labels_path = study_dir / LABELS_FILE
    meta = json.loads(labels_path.read_text())
    adapter_config = json.loads((source / "adapter_config.json").read_text())
    peft_type = str(adapter_config.get("peft_type", "")).upper()
    if merge and peft_type not in MERGEABLE:
        raise UserError(
            f"{row['method']} adapters cannot be merged into the weights",
            where="--merge",
            hint="export without --merge",
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / LABELS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        card = model_card(
            base_model=config.model.name_or_path,
            row=row,
            data=config.data.model_dump(),
            labels=list(meta["id2label"].values()),
            study_name=config.search.study_name,
            peft_type=peft_type,
        )
        (staging / "README.md").write_text(card)
        if merge:
            _merge(staging, config, meta)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _merge(folder: Path, config: Any, meta: dict[str, Any]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftsearch.trials import load_tokenizer

    kwargs = {"gguf_file": config.model.gguf_file} if config.model.gguf_file else {}
    base = AutoModelForSequenceClassification.from_pretrained(
        config.model.name_or_path,
        num_labels=len(meta["id2label"]),
        id2label={int(k): v for k, v in meta["id2label"].items()},
        label2id=meta["label2id"],
        **kwargs,
    )
    base.config.pad_token_id = meta["pad_token_id"]
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    merged.save_pretrained(folder / "merged")
    load_tokenizer(config.model.name_or_path, gguf_file=config.model.gguf_file).save_pretrained(
        folder / "merged"
    )
