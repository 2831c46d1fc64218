"""What one job produced (trials/jobs.py): objectives, measurements and its fate."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["MEASUREMENTS", "TrialResult", "TrialStatus", "score_error"]

TrialStatus = Literal["COMPLETE", "FAIL", "PRUNED"]

# The numbers a trial reports, in the order tables show them.
MEASUREMENTS = (
    "accuracy",
    "trainable_params",
    "trainable_pct",
    "adapter_bytes",
    "cost_usd",
    "spent_usd",
    "device_seconds",
    "wall_seconds",
    "peak_memory_mb",
    "predicted_memory_mb",
)


def score_error(score: Any, rows: Any, measured: Any = None) -> float | None:
    """A score's standard error: the task's own measure where it has one (``measured``,
    e.g. a tagger's bootstrap), else binomial over the ``rows`` it was scored on; None
    without either. One formula for the noise rule, the export record and re-evaluation."""
    import math

    if isinstance(measured, int | float):
        return float(measured)
    if not isinstance(score, int | float) or not rows:
        return None
    return math.sqrt(max(float(score) * (1 - float(score)), 0.0) / int(rows))


@dataclass
class TrialResult:
    """Plain data, so it crosses process boundaries and lands in Optuna user attrs."""

    number: int | None  # the study's trial (None: a calibration or the baseline)
    method: str
    status: TrialStatus
    job: str = ""  # the job's key (trials/jobs.py): "trial 3", "baseline", ...
    task: str | None = None  # the task plug-in that scored it (trials/tasks/)
    # the searched metric of the task (evaluation.metric): the accuracy objective
    accuracy: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_pct: float | None = None
    adapter_bytes: int | None = None  # the saved adapter's files, in bytes
    # causal LMs: the rise of the model's mean loss per token on reference text over the
    # base model's (trials/forgetting.py), and its standard error
    forgetting: float | None = None
    forgetting_se: float | None = None
    forgetting_seconds: float = 0.0  # of device_seconds: scoring the reference text
    # of device_seconds: deriving the reference and the base's losses on it (once per
    # worker: overhead, not the config's cost)
    reference_seconds: float = 0.0
    device: str = "cpu"
    # every device-second the trial held: what the budget is charged
    device_seconds: float = 0.0
    # the cost objective: what training this config costs (setup, its steps, one
    # evaluation), without the search's own overhead (rung evaluations, lost attempts,
    # computing the frozen-layer cache that later trials share, loading the base model
    # on a worker's first trial)
    cost_usd: float = 0.0
    spent_usd: float = 0.0  # device_seconds at the device's price: what the search paid
    rung_seconds: float = 0.0  # of device_seconds, spent evaluating at early-stopping rungs
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    # the job's peak memory above what its worker held before it (trials/memory.py):
    # CUDA's reserved memory, or the resident set on a CPU; None where not measurable
    peak_memory_mb: float | None = None
    peak_allocated_mb: float | None = None  # CUDA: live tensors at the peak
    predicted_memory_mb: float | None = None  # the memory model's, before launch
    device_memory_mb: float | None = None  # all of the device's memory (GPU, or node RAM)
    quantization: str = "none"
    micro_batch_size: int | None = None  # when smaller than the batch (accumulating)
    train_tokens: int | None = None  # the widest batch it trained on, tokens per row
    # a real out-of-memory error ended it (after the one retry with the memory levers)
    out_of_memory: bool = False
    # not trained, or did not fit: over space.max_trainable_pct or the memory limit
    infeasible: bool = False
    memory_note: str | None = None  # the levers it was given, and why, in words
    lost_seconds: float = 0.0  # of device_seconds: an attempt lost to an out-of-memory error
    steps: int = 0
    train_seconds: float = 0.0
    # the relative spread of its step times (sd / mean, the first step left out): the
    # timing noise of the machine it ran on, for the cost tie rule (results/noise.py)
    step_jitter: float | None = None
    eval_seconds: float = 0.0
    # of eval_seconds and rung_seconds, generating (a causal LM's exact match)
    generation_seconds: float = 0.0
    evaluations: int = 0
    eval_rows: int | None = None
    rungs: list[list[float]] = field(default_factory=list)
    # every number the task reported at each rung (``rungs``' scores are one of them)
    rung_metrics: list[dict[str, float]] = field(default_factory=list)
    estimated_seconds: float | None = None
    attempts: int = 1
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    losses: list[float] = field(default_factory=list)
    adapter_dir: str | None = None  # where the driver wrote the adapter
    # the saved adapter's files, on their way from the worker to the driver (never stored)
    adapter_files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    # every metric of the last evaluation, as the task reports them (trials/tasks/):
    # ``metric`` names the searched one, ``score_error`` its standard error where the
    # task measures it; a causal LM adds an example generation
    metrics: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # fp32, bf16 or fp16, as resolved on the worker
    gradient_checkpointing: bool = False
    # blocks below this one were served from the worker's frozen-layer cache (0: none)
    cached_layers: int = 0
    cache_seconds: float = 0.0  # of device_seconds: computing cached states (once per worker)
    load_seconds: float = 0.0  # of device_seconds: loading the base model (once per worker)

    def reset_training(self) -> None:
        """Forget a lost attempt's training and scores (its time stays spent)."""
        fresh = TrialResult(self.number, self.method, self.status)
        for name in (
            "accuracy", "steps", "train_seconds", "eval_seconds", "evaluations", "rungs",
            "rung_metrics", "losses", "metrics", "rung_seconds", "cached_layers",
            "cache_seconds", "generation_seconds",
        ):  # fmt: skip
            setattr(self, name, getattr(fresh, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(**data)
