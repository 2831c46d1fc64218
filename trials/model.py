"""Loading the base model and tokenizer: once per process, a clean copy per trial."""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    from torch import nn

    from peftsearch.spaces import ModelInfo

__all__ = [
    "QUANTIZATIONS",
    "BaseModelSource",
    "Checkpoint",
    "count_trainable",
    "dequantized",
    "inspect_base_model",
    "load_tokenizer",
    "meta_model",
    "quiet_transformers",
    "redraw_new_head",
]

HEAD_MODULES = ("classifier", "score")
# How a base's linear layers may be stored (model.quantization), bitsandbytes' kinds.
QUANTIZATIONS = ("none", "nf4", "fp4", "int8")
# Linear layers a quantized base keeps in full precision: the heads (they train, and
# peft saves them whole) and a causal LM's output layer
UNQUANTIZED_MODULES = (*HEAD_MODULES, "lm_head")


def quantization_config(quantization: str, device: str = "cpu") -> Any:
    """bitsandbytes' config for ``quantization`` (None for "none"). The heads stay in full
    precision: they train (peft saves them whole), and a 4-bit weight cannot. 4-bit
    layers compute in bf16 on a GPU that has it, in fp32 elsewhere."""
    if quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    skip = list(UNQUANTIZED_MODULES)
    bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    compute = torch.bfloat16 if bf16 else torch.float32
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )


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
    # bitsandbytes logs a line per int8 matmul ("inputs will be cast ... to float16") and
    # one about optional CPU kernels: nothing a user acts on
    bnb = logging.getLogger("bitsandbytes")
    bnb_level = bnb.level
    bnb.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        bnb.setLevel(bnb_level)
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


def _converted(checkpoint: Checkpoint) -> Checkpoint:
    """Where to read a GGUF checkpoint's tokenizer and config from: its conversion on
    this machine once a load made one (trials/gguf_cache.py), else the file."""
    from peftsearch.trials.gguf_cache import converted_folder, local_checkpoint

    folder = converted_folder(checkpoint)
    return checkpoint if folder is None else local_checkpoint(checkpoint, folder)


def load_tokenizer(checkpoint: Checkpoint) -> Any:
    """The tokenizer, with a pad token: decoders such as LLaMA ship without one."""
    from transformers import AutoTokenizer

    from peftsearch.trials.hub_cache import check_cached_model

    check_cached_model(checkpoint.name_or_path, checkpoint.revision)
    source = _converted(checkpoint)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source.name_or_path, **source.hub_kwargs())
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
        self._models: dict[str, nn.Module] = {}
        self.extra_modules: list[str] = []
        self.head_modules: list[str] = []  # the new head's (the checkpoint lacked them)
        self.device = "cpu"  # where a quantized base loads (the runner sets its device)

    def _load(self, quantization: str) -> nn.Module:
        import torch

        from peftsearch.trials.tasks import get_task

        torch.manual_seed(self.seed)
        task = get_task(self.task)
        head = task.head_kwargs(self.label_names)
        try:
            with quiet_transformers():
                model, info = load_pretrained(
                    task.model_class(),
                    self.checkpoint,
                    quantization,
                    device=self.device,
                    **head,
                    output_loading_info=True,
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

        def in_head(module: str) -> bool:
            return any(h in module.split(".") for h in HEAD_MODULES)

        self.extra_modules = sorted(m for m in missing if not in_head(m))
        self.head_modules = sorted(m for m in missing if in_head(m))
        model.eval()
        return model

    def loaded(self, quantization: str = "none") -> bool:
        return quantization in self._models

    def load(self, quantization: str = "none") -> None:
        """Load the weights now (once per quantization); ``fresh_copy`` copies them."""
        if quantization not in self._models:
            self._models[quantization] = self._load(quantization)

    def fresh_copy(self, quantization: str = "none") -> nn.Module:
        """A copy to train: on the CPU, or already on ``device`` for a quantized base
        (bitsandbytes places its weights when it loads them and cannot move them)."""
        self.load(quantization)
        return copy.deepcopy(self._models[quantization])

    def tokenizer(self) -> Any:
        """The checkpoint's tokenizer, loaded once (causal-LM evaluation decodes)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.checkpoint)
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        # travels to workers without the loaded weights or tokenizer: each loads its own
        return {**self.__dict__, "_models": {}, "_tokenizer": None}


def redraw_new_head(model: nn.Module, head_modules: list[str]) -> None:
    """Draw the new head's linear weights again from the global torch generator, as
    transformers initialises a new head (normal, ``initializer_range``; bias 0): a
    training seed other than the source's gives another head, as a fresh run would."""
    import torch

    std = float(getattr(model.config, "initializer_range", 0.02))
    for name in head_modules:
        module = model.get_submodule(name)
        for layer in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
            with torch.no_grad():
                layer.weight.normal_(0.0, std)
                if layer.bias is not None:
                    layer.bias.zero_()


def quantization_source(quantization: str) -> str:
    """``quantization_config(quantization)`` as Python source, for model cards (4-bit
    layers computing in float32, as the search did on CPUs; bf16 is the GPU choice)."""
    skip = list(UNQUANTIZED_MODULES)
    if quantization == "int8":
        return f"BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules={skip!r})"
    return (
        f"BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type={quantization!r}, "
        f"bnb_4bit_compute_dtype='float32', llm_int8_skip_modules={skip!r})"
    )


def dequantized(model: nn.Module) -> nn.Module:
    """``model`` with every bitsandbytes layer replaced by a float32 ``nn.Linear`` that
    computes what the quantized layer computes: its weight is read off the layer itself
    (the layer applied to the identity matrix), not unpacked from bitsandbytes' storage,
    whose layout its CPU kernels change (``dequantize_4bit`` then returns other numbers,
    and so does transformers' ``dequantize()``). Merging an adapter trained on the
    quantized base into these weights gives what the adapter was scored on."""
    import torch

    for name, module in list(model.named_modules()):
        if type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        bias = module.bias.detach().float().clone() if module.bias is not None else None
        with torch.no_grad():
            eye = torch.eye(module.in_features, device=module.weight.device)
            weight = module(eye).float().T.contiguous()
            if bias is not None:
                weight -= bias[:, None]
        linear = torch.nn.Linear(module.in_features, module.out_features, bias=bias is not None)
        linear.weight = torch.nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = torch.nn.Parameter(bias, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    # transformers' own marks of a quantized model, so it saves as a plain one
    setattr(model, "hf_quantizer", None)  # noqa: B010
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def load_pretrained(
    model_class: Any,
    checkpoint: Checkpoint,
    quantization: str = "none",
    *,
    device: str = "cpu",
    **kwargs: Any,
) -> Any:
    """``model_class.from_pretrained`` in float32, or with its linear layers quantized by
    bitsandbytes (``quantization``: nf4, fp4, int8) on ``device``.

    A GGUF checkpoint loads from its conversion to a plain folder on this machine
    (trials/gguf_cache.py: de-quantized once per machine, not once per load), which is
    also what bitsandbytes quantizes: transformers will not quantize while reading GGUF.
    """
    import torch

    from peftsearch.trials.gguf_cache import gguf_folder, local_checkpoint

    if checkpoint.gguf_file:
        with contextlib.ExitStack() as stack:
            try:
                path = stack.enter_context(gguf_folder(checkpoint))
            except Exception:  # no causal-LM class for it: read the file itself
                path = None
            if path is not None:
                plain = local_checkpoint(checkpoint, path)
                return load_pretrained(model_class, plain, quantization, device=device, **kwargs)
    hub = checkpoint.hub_kwargs()
    quantized = quantization_config(quantization, device)
    if quantized is None:
        return model_class.from_pretrained(
            checkpoint.name_or_path, dtype=torch.float32, **hub, **kwargs
        )
    if checkpoint.gguf_file:
        raise ValueError(
            f"{checkpoint.gguf_file} could not be converted to a plain checkpoint, and "
            "transformers will not quantize while reading a GGUF file"
        )
    placed = {"quantization_config": quantized, "device_map": {"": device}}
    return model_class.from_pretrained(
        checkpoint.name_or_path, dtype=torch.float32, **hub, **placed, **kwargs
    )


def meta_model(checkpoint: Checkpoint, *, label_names: list[str], task: str) -> nn.Module:
    """The model built from its config on the meta device: structure, no weights."""
    import torch
    from transformers import AutoConfig

    from peftsearch.trials.tasks import get_task

    plugin = get_task(task)
    head = plugin.head_kwargs(label_names)
    source = _converted(checkpoint)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source.name_or_path, **head, **source.hub_kwargs())
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
    """(trainable, total) parameters of a peft config, without weights or training.
    An initialisation that reads weights or data (PiSSA, OLoRA, EVA) changes values, not
    shapes: the count uses peft's plain one, which a weightless model can run."""
    from peft import get_peft_config, get_peft_model

    config = dict(peft_config)
    if "init_lora_weights" in config:
        config["init_lora_weights"] = True
    with quiet_transformers():
        peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(config))
    trainable, total = peft_model.get_nb_trainable_parameters()
    return int(trainable), int(total)
