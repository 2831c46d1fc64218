"""A GGUF checkpoint, converted once per machine to a plain transformers folder.

transformers de-quantizes a GGUF file on every load (SmolLM2-135M: about 15 s here, its
tokenizer 4 s more) and will not quantize while reading one. Every process of a search
loads the base (each worker, each export and re-evaluation), so the first to load it
converts it: its float32 weights as safetensors, its config and its tokenizer, in a
folder under this machine's cache, and every load reads that folder. The weights are
the numbers transformers de-quantized, saved in float32: the same either way. Nothing
is shared between machines; each converts its own.

The folder is keyed by the GGUF file's real path, size and modification time and by the
transformers version (which does the de-quantizing); it is written beside its final
place and renamed into it, under a file lock, so that concurrent workers convert once
and never read half a folder. Without room on the disk for it (twice the float32
weights), a load converts into a temporary folder, as before the cache. Set
``PEFTSEARCH_CACHE`` to move the cache (default ``$XDG_CACHE_HOME/peftsearch``, else
``~/.cache/peftsearch``); its ``gguf/`` folders can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peftsearch.trials.model import Checkpoint

__all__ = ["cache_root", "converted_folder", "gguf_folder", "local_checkpoint"]

_DONE = "peftsearch_gguf.json"  # written last: a folder without it is not finished


def cache_root() -> Path:
    """This machine's peftsearch cache folder."""
    if os.environ.get("PEFTSEARCH_CACHE"):
        return Path(os.environ["PEFTSEARCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "peftsearch"


def _gguf_path(checkpoint: Checkpoint) -> Path:
    """The GGUF file on this machine: in the local folder, or in the HF cache (fetched
    there when online, as ``from_pretrained`` would)."""
    from transformers.utils import cached_file

    assert checkpoint.gguf_file
    path = cached_file(checkpoint.name_or_path, checkpoint.gguf_file, revision=checkpoint.revision)
    if path is None:
        raise FileNotFoundError(checkpoint.gguf_file)
    return Path(path).resolve()


def _key(gguf: Path) -> str:
    import transformers

    stat = gguf.stat()
    identity = f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}"
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def converted_folder(checkpoint: Checkpoint) -> Path | None:
    """The finished conversion of ``checkpoint``'s GGUF file on this machine, or None
    (not a GGUF checkpoint, not converted yet, or its file not here)."""
    if not checkpoint.gguf_file:
        return None
    try:
        folder = cache_root() / "gguf" / _key(_gguf_path(checkpoint))
    except Exception:
        return None
    return folder if (folder / _DONE).is_file() else None


def _convert(checkpoint: Checkpoint, folder: Path) -> None:
    """De-quantize the GGUF file into ``folder``: float32 causal LM, config, tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftsearch.trials.model import quiet_transformers

    kwargs = checkpoint.hub_kwargs()
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint.name_or_path, dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(checkpoint.name_or_path, **kwargs)
        # plain float32 tensors now: save them as such
        setattr(model, "hf_quantizer", None)  # noqa: B010
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    done = {"gguf_file": checkpoint.gguf_file, "name_or_path": checkpoint.name_or_path}
    (folder / _DONE).write_text(json.dumps({**done, "revision": checkpoint.revision}))


def _room_for(checkpoint: Checkpoint, root: Path) -> bool:
    """Room for the float32 weights twice over (a GGUF file holds 2 to 8 bits a weight:
    float32 is at most 16 times its size)."""
    try:
        size = _gguf_path(checkpoint).stat().st_size
        root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(root).free > 2 * 16 * size
    except OSError:
        return False


@contextlib.contextmanager
def gguf_folder(checkpoint: Checkpoint) -> Iterator[Path]:
    """A transformers folder holding ``checkpoint``'s GGUF file converted: the machine's
    cached one (converted now if it is the first load), or a temporary one for this
    load when the cache has no room or cannot be written."""
    cached = converted_folder(checkpoint)
    if cached is not None:
        yield cached
        return
    root = cache_root() / "gguf"
    folder = None
    if _room_for(checkpoint, root):
        with contextlib.suppress(OSError):  # a cache that cannot be written: as without room
            folder = _convert_cached(checkpoint, root)
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="peftsearch-gguf-") as temp:
        _convert(checkpoint, Path(temp))
        yield Path(temp)


def _convert_cached(checkpoint: Checkpoint, root: Path) -> Path:
    from filelock import FileLock

    key = _key(_gguf_path(checkpoint))
    final = root / key
    with FileLock(str(root / f"{key}.lock")):
        if (final / _DONE).is_file():  # another process converted it while we waited
            return final
        shutil.rmtree(final, ignore_errors=True)  # an unfinished folder of a killed load
        work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
        try:
            _convert(checkpoint, work)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final


def local_checkpoint(checkpoint: Checkpoint, folder: Path) -> Checkpoint:
    """``checkpoint`` as read from its converted ``folder``."""
    from dataclasses import replace

    return replace(checkpoint, name_or_path=str(folder), revision=None, gguf_file=None)
