"""Per-job peak memory, measured on the device the job ran on.

A worker runs many jobs in one process, so lifetime figures (``ru_maxrss``, CUDA's peak
since start-up) say nothing about one trial. ``PeakMemory`` resets the peak before a job
and reads it after, as the memory the job needed above what the worker already held:
- CUDA: ``reset_peak_memory_stats``, then ``max_memory_allocated`` (tensors) and
  ``max_memory_reserved`` (what the caching allocator took from the device, which is
  what runs out), each above its level at the start;
- CPU on Linux: writing ``5`` to ``/proc/self/clear_refs`` resets the process's peak
  resident set (VmHWM) to its current size; VmHWM after the job, less VmRSS before it.
  Freed heap is handed back first (``malloc_trim``), so memory an earlier trial freed but
  the allocator kept does not hide this trial's need.
Elsewhere (macOS, a kernel without clear_refs) there is no per-job figure: None.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PeakMemory", "device_memory_mb", "eval_rows", "release_memory"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Return the C heap's free pages to the OS (glibc only; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def release_memory(device: str, *, thorough: bool = True) -> None:
    """Free what dropped objects still hold: Python's cycles, the C heap, and on a GPU
    the caching allocator's blocks (after an out-of-memory error the next trial must
    not inherit a full, fragmented cache). ``thorough=False`` collects only the young
    generations: a full collection takes about 0.3 s in a process that has imported
    torch, transformers and peft, too much to pay before every job."""
    gc.collect() if thorough else gc.collect(1)
    _trim_heap()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def device_memory_mb(device: str) -> float | None:
    """All the memory of this worker's device: the GPU's, or the node's RAM on CPU (None
    when this process sees no such device: a driver without the workers' GPUs)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**20
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return None


@dataclass
class PeakMemory:
    """``start()`` before a job, ``peak_mb()`` (and on CUDA ``allocated_mb()``) after."""

    device: str
    _before: float = 0.0
    _allocated_before: float = 0.0
    _resettable: bool = False

    def start(self) -> None:
        release_memory(self.device, thorough=False)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self._allocated_before = torch.cuda.memory_allocated() / 2**20
            self._before = torch.cuda.memory_reserved() / 2**20
            torch.cuda.reset_peak_memory_stats()
            self._resettable = True
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            self._resettable = False
            return
        rss = _status_mb("VmRSS")
        self._resettable = rss is not None
        self._before = rss or 0.0

    def peak_mb(self) -> float | None:
        """The job's peak above the worker's memory at ``start`` (CUDA: reserved)."""
        if not self._resettable:
            return None
        if self.device.startswith("cuda"):
            import torch

            return max(0.0, torch.cuda.max_memory_reserved() / 2**20 - self._before)
        peak = _status_mb("VmHWM")
        return None if peak is None else max(0.0, peak - self._before)

    def allocated_mb(self) -> float | None:
        """CUDA only: the peak of live tensors above the start (reserved less the
        allocator's slack)."""
        if not (self._resettable and self.device.startswith("cuda")):
            return None
        import torch

        return max(0.0, torch.cuda.max_memory_allocated() / 2**20 - self._allocated_before)


def eval_rows(eval_batch_size: int, micro_batch_size: int | None, batch_size: int) -> int:
    """An evaluation batch under the micro-batch lever: shrunk by the same factor (the
    scores do not depend on it), so evaluation does not stay the peak."""
    if not micro_batch_size or micro_batch_size >= batch_size:
        return eval_batch_size
    return max(1, eval_batch_size * micro_batch_size // batch_size)
