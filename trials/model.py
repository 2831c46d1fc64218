"""Loading the base model and tokenizer: once per process, a clean copy per trial."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from peftsearch.spaces import ModelInfo

__all__ = [
    "BaseModelSource",
    "Checkpoint",
    "count_trainable",
    "inspect_base_model",
    "load_tokenizer",
    "meta_model",
    "quiet_transformers",
]

HEAD_MODULES = ("classifier", "score")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers/datasets/peft chatter for one call, then restore the caller's
    settings: deprecation notices from inside those libraries say nothing a user can act
    on, and library code must not change process-wide logging or warning filters."""
    import datasets
    import transformers

    hf_logging = transformers.utils.logging
    saved = (
        hf_logging.get_verbosity(),
        hf_logging.is_progress_bar_enabled(),
        datasets.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
    )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        hf_logging.set_verbosity(saved[0])
        if saved[1]:
            hf_logging.enable_progress_bar()
        datasets.logging.set_verbosity(saved[2])
        if saved[3]:
            datasets.enable_progress_bars()


@dataclass(frozen=True)
class Checkpoint:
    """Exactly which pretrained model: trials load it, and an export names and merges
    into it. ``from_pretrained`` gets these as keyword arguments."""

    name_or_path: str
    revision: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False

    def hub_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.revision:
            kwargs["revision"] = self.revision
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def load_tokenizer(checkpoint: Checkpoint) -> Any:
    """The tokenizer, with a pad token: decoders such as LLaMA ship without one."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(
                checkpoint.name_or_path, **checkpoint.hub_kwargs()
            )
    except Exception as error:
        raise UserError(
            f"cannot load the tokenizer of {checkpoint.name_or_path!r}: {error}",
            where="model.name_or_path",
            hint="offline? use a local model folder",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


class BaseModelSource:
    """Loads the pretrained model once and hands out fresh deep copies.

    ``task`` (a task plug-in's name) says which head: a classifier or a tagger gets a new
    one over ``label_names``, a causal LM keeps its LM head.

    A new head is initialised under a fixed seed, so every trial, in
    every worker process, starts from the same weights. Weights the checkpoint lacks
    (beyond the head, which peft saves itself) are reported in ``extra_modules`` so the
    adapter saves them too and an exported adapter reproduces its scores.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        num_labels: int,
        label_names: list[str],
        pad_token_id: int,
        seed: int = 0,
        task: str,
    ) -> None:
        self.checkpoint = checkpoint
        self.task = task
        self._tokenizer: Any = None
        self.num_labels = num_labels
        self.label_names = label_names
        self.pad_token_id = pad_token_id
        self.seed = seed
        self._model: nn.Module | None = None
        self.extra_modules: list[str] = []

    def _load(self) -> nn.Module:
        import torch

        from peftsearch.trials.tasks import get_task

        torch.manual_seed(self.seed)
        task = get_task(self.task)
        head = task.head_kwargs(self.label_names)
        try:
            with quiet_transformers():
                model, info = task.model_class().from_pretrained(
                    self.checkpoint.name_or_path,
                    **head,
                    output_loading_info=True,
                    dtype=torch.float32,
                    **self.checkpoint.hub_kwargs(),
                )
        except Exception as error:
            raise UserError(
                f"cannot load model {self.checkpoint.name_or_path!r}: {error}",
                where="model.name_or_path",
            ) from None
        model.config.pad_token_id = self.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = self.pad_token_id
        missing = {key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())}
        self.extra_modules = sorted(
            m for m in missing if not any(m == h or m.endswith("." + h) for h in HEAD_MODULES)
        )
        model.eval()
        return model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the weights now (once); ``fresh_copy`` copies them."""
        if self._model is None:
            self._model = self._load()

    def fresh_copy(self) -> nn.Module:
        self.load()
        assert self._model is not None
        return copy.deepcopy(self._model)

    def tokenizer(self) -> Any:
        """The checkpoint's tokenizer, loaded once (causal-LM evaluation decodes)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.checkpoint)
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        # travels to workers without the loaded weights or tokenizer: each loads its own
        return {**self.__dict__, "_model": None, "_tokenizer": None}


def meta_model(checkpoint: Checkpoint, *, label_names: list[str], task: str) -> nn.Module:
    """The model built from its config on the meta device: structure, no weights."""
    import torch
    from transformers import AutoConfig

    from peftsearch.trials.tasks import get_task

    plugin = get_task(task)
    head = plugin.head_kwargs(label_names)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(
                checkpoint.name_or_path, **head, **checkpoint.hub_kwargs()
            )
    except Exception as error:
        raise UserError(
            f"cannot read the config of {checkpoint.name_or_path!r}: {error}",
            where="model.name_or_path",
            hint="offline? use a local model folder",
        ) from None
    with torch.device("meta"), quiet_transformers():
        return plugin.model_class().from_config(
            config, trust_remote_code=checkpoint.trust_remote_code
        )


def inspect_base_model(model: nn.Module, task: str) -> ModelInfo:
    from peftsearch.spaces import inspect_model
    from peftsearch.trials.tasks import get_task

    return inspect_model(model, task_type=get_task(task).peft_task_type)


def count_trainable(model: nn.Module, peft_config: dict[str, Any]) -> tuple[int, int]:
    """(trainable, total) parameters of a peft config, without weights or training."""
    from peft import get_peft_config, get_peft_model

    with quiet_transformers():
        peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(dict(peft_config)))
    trainable, total = peft_model.get_nb_trainable_parameters()
    return int(trainable), int(total)
