"""An adapter as bytes: what a worker ships back instead of writing to a driver path.

On a cluster a worker's disk is not the driver's; the adapter (safetensors and config,
usually a few MB) travels in the trial's result through Ray's object store, and the
driver writes it into the study folder. The other way, test scoring ships a saved
adapter to the worker the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.trials.result import TrialResult

__all__ = ["deliver_adapter", "read_adapter", "saved_adapter", "write_adapter"]


def read_adapter(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder``, by path relative to it."""
    root = Path(folder)
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def saved_adapter(model: Any) -> dict[str, bytes]:
    """``model.save_pretrained`` into a private temporary folder, read back as bytes."""
    with tempfile.TemporaryDirectory(prefix="peftsearch-adapter-") as folder:
        model.save_pretrained(folder)
        return read_adapter(folder)


def write_adapter(files: dict[str, bytes], folder: str | Path) -> Path:
    """Write ``files`` to ``folder``, all or nothing (a sibling temp folder, renamed)."""
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for name, data in files.items():
            path = staging / name
            if (
                path.resolve().parent != staging.resolve()
                and staging.resolve() not in path.resolve().parents
            ):
                raise ValueError(f"adapter file {name!r} points outside its folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def deliver_adapter(result: TrialResult, folder: str | None) -> None:
    """Driver side: write a result's shipped adapter into ``folder`` and point the
    result at it; the bytes are dropped (they never reach the study storage)."""
    if result.adapter_files and folder:
        write_adapter(result.adapter_files, folder)
        result.adapter_dir = str(folder)
    result.adapter_files = {}
