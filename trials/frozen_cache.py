"""Frozen-prefix activation cache: trials that adapt only the upper blocks skip the lower ones.

When every trainable parameter of a trial sits in blocks ``k`` and above, the hidden
states entering block ``k`` do not depend on the trial: they are a function of the base
model and the input alone. A worker keeps them per boundary ``k``, split and row, and
serves them to every trial with that boundary, for training and for every evaluation;
those trials run only the blocks from ``k`` up. A row's states are computed the first
time a batch needs them (in eval mode, below ``k`` only), so the cache fills as the
first trial with a boundary runs and holds only rows that trials read (a search's trials
share the data order, so they read the same rows). Nothing below ``k`` is touched, so the
adapter is a normal peft adapter and computes on the full model what it computed here.

By design: dropout inside the frozen blocks does not apply to cached states (they are
computed in eval mode). Prompt, prefix and p-tuning change the inputs and never use the
cache, nor does anything trainable before the blocks; causal-LM generation runs the full
model. A boundary is checked once per worker against the full model on one batch, and
left to the full model when they differ (an architecture whose forward depends on each
block's position in the list).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from peftsearch.trials.train import Feed, autocast

if TYPE_CHECKING:
    import datasets
    import torch
    from torch import nn

    from peftsearch.trials.data import PreparedData
    from peftsearch.trials.train import TrainSettings

__all__ = [
    "PROMPT_LEARNING",
    "CachedStates",
    "FrozenLayers",
    "PrefixCache",
    "PrefixServer",
    "frozen_boundary",
    "hidden_size",
]

log = logging.getLogger("peftsearch")

# peft types that change the model's inputs (virtual tokens, per-layer prefixes)
PROMPT_LEARNING = frozenset(
    {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"}
)


def frozen_boundary(model: nn.Module, peft_type: str) -> int:
    """The lowest block holding a trainable parameter, or 0 when nothing may be cached:
    a method that changes the inputs, or a trainable parameter on the input side of the
    blocks (the embeddings)."""
    from peftsearch.spaces import find_blocks

    if peft_type.upper() in PROMPT_LEARNING:
        return 0
    try:
        path, blocks = find_blocks(model)
    except ValueError:
        return 0
    prefix = f"{path}."
    input_side = [f"{p}." for p in _input_side(model, path)]
    lowest = len(blocks)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(prefix):
            lowest = min(lowest, int(name[len(prefix) :].split(".", 1)[0]))
        elif any(name.startswith(p) for p in input_side):
            return 0
    return 0 if lowest == len(blocks) else lowest


def _input_side(model: nn.Module, blocks_path: str) -> list[str]:
    """Paths of the modules that compute the blocks' input: the input embeddings and,
    when it is not the module holding the blocks, their parent (BERT's position and
    token-type embeddings and LayerNorm sit beside the word embeddings)."""
    try:
        embeddings = model.get_input_embeddings()  # type: ignore[operator]
    except (AttributeError, NotImplementedError):
        return []
    for name, module in model.named_modules():
        if module is embeddings:
            parent = name.rpartition(".")[0]
            holds_blocks = not parent or blocks_path.startswith(f"{parent}.")
            return [name] if holds_blocks else [name, parent]
    return []


class CachedStates:
    """One split's hidden states at one boundary: each row's real tokens, by row id."""

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}
        self.nbytes = 0

    def add(self, row_id: int, states: torch.Tensor) -> None:
        self.rows[row_id] = states
        self.nbytes += states.numel() * states.element_size()


class PrefixCache:
    """A worker's cached hidden states, by (split, boundary), within ``max_bytes``.

    A split whose rows a trial may read (``expected_bytes``) do not fit beside what is
    cached already is left to the full model, with one log line per split and boundary.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._states: dict[tuple[str, int], CachedStates] = {}
        self._reserved: dict[tuple[str, int], int] = {}
        self._refused: set[tuple[str, int]] = set()
        self._checked: dict[int, bool] = {}

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._states.values())

    def has(self, split: str, boundary: int) -> bool:
        return (split, boundary) in self._states

    def cached(self, split: str, boundary: int) -> CachedStates | None:
        """What is cached of the split at ``boundary`` so far (None: nothing), without
        reserving room as ``states`` does."""
        return self._states.get((split, boundary))

    def states(self, split: str, boundary: int, expected_bytes: int) -> CachedStates | None:
        """The split's states at ``boundary`` (empty when new, filled as rows are read),
        or None when what a trial may read does not fit in memory."""
        key = (split, boundary)
        if key in self._states:
            return self._states[key]
        if key in self._refused:
            return None
        reserved = sum(self._reserved.values())
        if reserved + expected_bytes > self.max_bytes:
            self._refused.add(key)
            log.warning(
                "frozen-layer cache: the %s split at block %d needs about %.0f MB and %.0f MB "
                "of the %.0f MB limit are free, so trials with that boundary run the full "
                "model (raise training.cache_max_mb to cache it)",
                split,
                boundary,
                expected_bytes / 2**20,
                (self.max_bytes - reserved) / 2**20,
                self.max_bytes / 2**20,
            )
            return None
        self._reserved[key] = expected_bytes
        self._states[key] = CachedStates()
        return self._states[key]

    def room_for(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit (estimates can be short; the limit is hard)."""
        return self.nbytes + nbytes <= self.max_bytes

    def checked(self, boundary: int) -> bool | None:
        """Whether serving ``boundary`` matched the full model on this worker (None: not
        checked yet)."""
        return self._checked.get(boundary)

    def record_check(self, boundary: int, matches: bool) -> None:
        self._checked[boundary] = matches
        if not matches:
            log.warning(
                "frozen-layer cache: serving block %d does not reproduce the full model "
                "on this architecture; trials with that boundary run the full model",
                boundary,
            )


def hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(model).__name__}: cannot tell its hidden size")


class _Captured(Exception):
    """Stops the forward pass at the boundary, carrying what entered it."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def _with_hidden(
    args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class PrefixServer:
    """While entered: the blocks below ``boundary`` are cut out of ``model``, and block
    ``boundary`` receives each batch's cached states (``feed``). Rows not cached yet are
    computed on the whole model first (eval mode, no gradients) and kept while
    ``cache`` has room.

    Leave it before saving the adapter: while entered, the blocks are renumbered.
    """

    def __init__(
        self,
        model: nn.Module,
        boundary: int,
        splits: dict[str, CachedStates],
        cache: PrefixCache,
        *,
        device: str,
        precision: str,
    ) -> None:
        from peftsearch.spaces import find_blocks

        self.model = model
        self.boundary = boundary
        self.splits = splits
        self.cache = cache
        self.device = device
        self.precision = precision
        self.seconds = 0.0  # spent computing rows that were not cached
        path, self._full = find_blocks(model)
        parent, _, self._name = path.rpartition(".")
        self._parent = model.get_submodule(parent) if parent else model
        self._current: torch.Tensor | None = None
        self._handle: Any = None
        self._warned = False

    def __enter__(self) -> PrefixServer:
        self._handle = self._full[self.boundary].register_forward_pre_hook(
            self._inject, with_kwargs=True
        )
        self._cut()
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
        self._handle.remove()
        self._current = None

    def _cut(self) -> None:
        from torch import nn

        setattr(self._parent, self._name, nn.ModuleList(list(self._full)[self.boundary :]))

    def _restore(self) -> None:
        setattr(self._parent, self._name, self._full)

    def feed(self, split: str) -> Feed | None:
        """What the training and evaluation loops call with each batch's row ids and
        inputs; None when ``split`` is not cached."""
        states = self.splits.get(split)
        if states is None:
            return None

        def set_batch(row_ids: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
            self._current = self._batch(states, row_ids.tolist(), batch)

        return set_batch

    def _batch(
        self, states: CachedStates, row_ids: list[int], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The batch's states, right-padded with zeros to its width like its tokens."""
        import torch

        missing = [j for j, i in enumerate(row_ids) if i not in states.rows]
        fresh = self._compute(missing, batch) if missing else {}
        width = int(batch["input_ids"].shape[1])
        rows = [fresh[j] if j in fresh else states.rows[i] for j, i in enumerate(row_ids)]
        out = torch.zeros(len(rows), width, rows[0].shape[-1], dtype=rows[0].dtype)
        for j, row in enumerate(rows):
            out[j, : len(row)] = row
        new = sum(t.numel() * t.element_size() for t in fresh.values())
        if fresh and self.cache.room_for(new):
            for j, row in fresh.items():
                states.add(row_ids[j], row)
        elif fresh and not self._warned:
            self._warned = True
            log.warning(
                "frozen-layer cache: its %.0f MB limit is reached; rows beyond it are "
                "computed each time (raise training.cache_max_mb)",
                self.cache.max_bytes / 2**20,
            )
        return out.to(self.device, non_blocking=True)

    def _compute(self, positions: list[int], batch: dict[str, torch.Tensor]) -> dict[int, Any]:
        """What enters the boundary block for the batch rows at ``positions``: the whole
        model, in eval mode, stopped at that block."""
        import torch

        began = time.perf_counter()
        inputs = {k: v[positions].to(self.device) for k, v in batch.items()}
        lengths = batch["attention_mask"][positions].sum(dim=1).tolist()

        def grab(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise _Captured(args[0] if args else kwargs["hidden_states"])

        training = self.model.training
        with self.full_model():
            handle = self._full[self.boundary].register_forward_pre_hook(grab, with_kwargs=True)
            self.model.eval()
            try:
                with torch.no_grad(), autocast(self.device, self.precision):
                    self.model(**inputs)
            except _Captured as captured:
                hidden = captured.hidden.detach().to("cpu")
            finally:
                handle.remove()
                self.model.train(training)
        self.seconds += time.perf_counter() - began
        return {j: hidden[n, : int(lengths[n])].clone() for n, j in enumerate(positions)}

    def _inject(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._current is None:
            raise RuntimeError("frozen-layer cache: a batch reached the blocks without its states")
        return _with_hidden(args, kwargs, self._current)

    @contextlib.contextmanager
    def full_model(self) -> Iterator[None]:
        """The whole model for a while (computing rows, and generation, which the cache
        cannot serve)."""
        self._restore()
        current, self._current = self._current, None
        self._handle.remove()
        try:
            yield
        finally:
            self._handle = self._full[self.boundary].register_forward_pre_hook(
                self._inject, with_kwargs=True
            )
            self._current = current
            self._cut()


class FrozenLayers:
    """A worker's frozen-layer cache and the rules for using it on a trial: which
    boundary a trial may be served from, whether the rows it reads fit, and a one-time
    check per boundary that serving it reproduces the full model.

    ``split`` gives the tables with a ``row_id`` column (the cache looks rows up by it).
    """

    def __init__(
        self, data: PreparedData, settings: TrainSettings, *, device: str, precision: str
    ) -> None:
        self.data = data
        self.settings = settings
        self.device = device
        self.precision = precision
        # one per base (model.quantization): a quantized base's states are its own
        self.caches: dict[str, PrefixCache] = {}
        self._tables: dict[str, datasets.Dataset] = {}
        self._tokens: dict[str, float] = {}

    @property
    def cache(self) -> PrefixCache:
        """The full-precision base's cache."""
        return self.cache_of("none")

    def cache_of(self, quantization: str) -> PrefixCache:
        if quantization not in self.caches:
            self.caches[quantization] = PrefixCache(self.settings.cache_max_mb * 2**20)
        return self.caches[quantization]

    @property
    def nbytes(self) -> int:
        """Host memory the cached states hold, every base's."""
        return sum(cache.nbytes for cache in self.caches.values())

    def split(self, name: str) -> datasets.Dataset:
        if name not in self._tables:
            table = self.data.train if name == "train" else self.data.eval
            self._tables[name] = table.add_column("row_id", list(range(len(table))))
        return self._tables[name]

    def server(
        self, model: nn.Module, peft_type: str, quantization: str = "none"
    ) -> PrefixServer | None:
        """A server for the blocks below the trial's lowest adapted block, or None: the
        method changes the inputs, nothing is frozen below, the rows a trial may read do
        not fit in memory, or serving that boundary did not reproduce the full model."""
        cache = self.cache_of(quantization)
        boundary = frozen_boundary(model, peft_type)
        if boundary == 0 or cache.checked(boundary) is False:
            return None
        row_bytes = hidden_size(model) * (4 if self.precision == "fp32" else 2)
        reads = {  # the rows a trial may read: its steps' batches, the whole eval split
            "train": self.settings.max_steps * self.settings.batch_size,
            "eval": len(self.data.eval),
        }
        splits = {}
        for split, rows in reads.items():
            expected = int(min(rows, len(self.split(split))) * self._mean_tokens(split))
            states = cache.states(split, boundary, expected * row_bytes)
            if states is None:
                return None
            splits[split] = states
        server = PrefixServer(
            model, boundary, splits, cache, device=self.device, precision=self.precision
        )
        if cache.checked(boundary) is None:
            cache.record_check(boundary, self._serves_like_full(model, server))
            if not cache.checked(boundary):
                return None
        return server

    def _mean_tokens(self, split: str) -> float:
        if split not in self._tokens:
            lengths = [len(ids) for ids in self.split(split)["input_ids"]]
            self._tokens[split] = sum(lengths) / max(1, len(lengths))
        return self._tokens[split]

    def _serves_like_full(self, model: nn.Module, server: PrefixServer) -> bool:
        """One evaluation batch through the full model and through the cache agree (at
        every real token; padding is masked either way)."""
        import torch

        from peftsearch.trials.train import collate, evaluation_mode, rows_of

        table = self.split("eval")
        batch = collate(rows_of(table[: min(8, len(table))]), self.data.pad_token_id)
        batch.pop("labels", None)
        row_ids = batch.pop("row_id")
        on_device = {k: v.to(self.device) for k, v in batch.items()}
        with (
            evaluation_mode(model),
            torch.no_grad(),
            autocast(self.device, self.precision),
        ):
            full = model(**on_device).logits.float()
            with server:
                feed = server.feed("eval")
                assert feed is not None
                feed(row_ids, batch)
                served = model(**on_device).logits.float()
        if full.shape != served.shape:
            return False
        if full.dim() == 3:  # per token: compare where there are tokens
            mask = on_device["attention_mask"].bool()
            full, served = full[mask], served[mask]
        tolerance = 1e-4 if self.precision == "fp32" else 5e-2
        scale = max(1.0, float(full.abs().max()))
        return bool((full - served).abs().max() <= tolerance * scale)
