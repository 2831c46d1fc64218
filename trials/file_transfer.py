"""Files as bytes, for a cluster whose nodes share no filesystem.

A worker's disk is not the driver's. A trial's adapter (safetensors and config, usually
a few MB) travels back in its result through Ray's object store and the driver writes it
into the study folder; test scoring ships a saved adapter to the worker the same way;
and a base model in a local folder that only the driver has is shipped once per study
(``ship_model``) and written once per node (``local_checkpoint``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftsearch.trials.model import Checkpoint
    from peftsearch.trials.result import TrialResult

__all__ = [
    "ShippedModel",
    "deliver_adapter",
    "initial_adapter",
    "local_checkpoint",
    "read_folder",
    "saved_adapter",
    "ship_model",
    "write_folder",
]


def read_folder(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder``, by path relative to it."""
    root = Path(folder)
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def saved_adapter(model: Any, initial: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """``model.save_pretrained`` into a private temporary folder, read back as bytes.

    ``initial``: the adapter as it was before training (``initial_adapter``) of an
    initialisation that changed the base weights (PiSSA, OLoRA). peft then saves the
    difference as a plain LoRA of twice the rank, for the unchanged base model.
    """
    with tempfile.TemporaryDirectory(prefix="peftsearch-adapter-") as folder:
        model.save_pretrained(folder)
        if initial is None:
            return read_folder(folder)
        start = write_folder(initial, Path(folder) / "initial" / "initial_adapter")
        converted = Path(folder) / "converted"
        with warnings.catch_warnings():  # "consider converting": this is that conversion
            warnings.filterwarnings("ignore", message=".*changes the base weights.*")
            model.save_pretrained(
                str(converted), path_initial_model_for_weight_conversion=str(start)
            )
        _keep_trained_modules(Path(folder), converted)
        return read_folder(converted)


def _keep_trained_modules(trained: Path, converted: Path) -> None:
    """peft's conversion (``subtract_mutated_init``, peft 0.21) keeps only the LoRA
    matrices; the fully trained modules (``modules_to_save``: a classifier's new head)
    are not touched by PiSSA/OLoRA, so they are copied over as trained."""
    from safetensors.torch import load_file, save_file

    name = "adapter_model.safetensors"
    if not (trained / name).is_file() or not (converted / name).is_file():
        return
    kept = load_file(str(converted / name))
    missing = {
        key: value
        for key, value in load_file(str(trained / name)).items()
        if "lora_" not in key and key not in kept
    }
    if missing:
        save_file({**kept, **missing}, str(converted / name), metadata={"format": "pt"})


def initial_adapter(model: Any) -> dict[str, bytes]:
    """The untrained adapter of a base-changing initialisation, saved as peft's weight
    conversion wants it: with ``init_lora_weights`` true, so loading it back does not
    decompose the (already changed) base a second time."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        return saved_adapter(model)
    finally:
        config.init_lora_weights = init


def write_folder(
    files: dict[str, bytes], folder: str | Path, *, replace_existing: bool = True
) -> Path:
    """Write ``files`` to ``folder``, all or nothing (a sibling temp folder, renamed).
    Without ``replace_existing``, an existing ``folder`` raises FileExistsError."""
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
            if not replace_existing:
                raise FileExistsError(target)
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError as error:  # a concurrent writer's folder is there now
            raise FileExistsError(target) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def deliver_adapter(result: TrialResult, folder: str | None) -> None:
    """Driver side: write a result's shipped adapter into ``folder`` and point the
    result at it; the bytes are dropped (they never reach the study storage)."""
    if result.adapter_files and folder:
        write_folder(result.adapter_files, folder)
        result.adapter_dir = str(folder)
    result.adapter_files = {}


@dataclass(frozen=True)
class ShippedModel:
    """A local model folder as bytes, with a digest naming it on other nodes."""

    digest: str
    files: dict[str, bytes]


def _manifest(files: dict[str, int]) -> str:
    import hashlib

    text = "\n".join(f"{name}\t{size}" for name, size in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


MAX_SHIPPED_BYTES = 4 * 2**30  # larger local folders must sit at the same path on every node


def ship_model(checkpoint: Checkpoint) -> ShippedModel | None:
    """The checkpoint's folder as bytes when it is a local folder of at most
    ``MAX_SHIPPED_BYTES`` (None for a hub id, which every node downloads itself, and for
    a larger folder, which every node must have at the same path)."""
    folder = Path(checkpoint.name_or_path)
    if not folder.is_dir():
        return None
    if sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) > MAX_SHIPPED_BYTES:
        return None
    files = read_folder(folder)
    return ShippedModel(_manifest({n: len(b) for n, b in files.items()}), files)


def local_checkpoint(checkpoint: Checkpoint, shipped: ShippedModel | None) -> Checkpoint:
    """Worker side: the checkpoint as this node can load it. The driver's folder when
    this node has it (same file names and sizes), else the shipped copy, written once
    per node under the temp folder and shared by the node's workers."""
    folder = Path(checkpoint.name_or_path)
    if shipped is None:
        if folder.is_absolute() and not folder.exists():
            import socket

            raise FileNotFoundError(
                f"model folder {folder} is not on node {socket.gethostname()}: a folder over "
                f"{MAX_SHIPPED_BYTES // 2**30} GiB is not shipped; put it at that path on "
                "every node, or use a hub id"
            )
        return checkpoint
    if folder.is_dir():
        sizes = {
            str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()
        }
        if _manifest(sizes) == shipped.digest:
            return checkpoint
    target = Path(tempfile.gettempdir()) / "peftsearch-models" / shipped.digest
    if not target.is_dir():
        with contextlib.suppress(FileExistsError):  # another worker here wrote it first
            write_folder(shipped.files, target, replace_existing=False)
    return replace(checkpoint, name_or_path=str(target))
