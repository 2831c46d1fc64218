"""Python's cyclic garbage collector while a process builds what it keeps until it ends.

A search driver or a trial worker imports torch, transformers, peft, MLflow and Ray and
loads a model before its first trial: 500,000 to 750,000 objects that live as long as
the process. Every full collection on the way walks all of them and frees next to nothing.
In a traced ``benchmarks/overhead.py`` study the driver ran 9 such collections before its
first trial (1.8 s of CPU, freeing 10 to 87 objects each) and a worker 1 s of its 5.5 s
of imports, on a machine whose 2 cores the workers were already waiting for. So the
collector pauses while they are built, and what was built is then frozen out of later
collections (``gc.freeze``): the search's own garbage is collected as before.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

__all__ = ["CollectorState", "freeze_start_up", "pause_collection", "release_start_up"]


@dataclass(frozen=True)
class CollectorState:
    """What ``pause_collection`` found, to be put back."""

    enabled: bool
    frozen: int  # objects frozen before (a host process may freeze its own)


def pause_collection() -> CollectorState:
    """Pause cyclic collection: what is built next is kept for good."""
    state = CollectorState(gc.isenabled(), gc.get_freeze_count())
    gc.disable()
    return state


def freeze_start_up(state: CollectorState) -> None:
    """Everything built so far is left out of later collections; collection resumes
    as it was. Idempotent."""
    gc.freeze()
    if state.enabled:
        gc.enable()


def release_start_up(state: CollectorState) -> None:
    """The frozen objects are collectable again (a driver inside a longer-lived process:
    a notebook's second search must not keep the first one's garbage), unless the host
    process had frozen objects of its own; collection is as it was (off since
    ``pause_collection``, unless ``freeze_start_up`` turned it back on)."""
    if not state.frozen:
        gc.unfreeze()
    if state.enabled:
        gc.enable()
