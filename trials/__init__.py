"""One trial: train, evaluate and measure a peft adapter on a base model."""

from __future__ import annotations

from peftsearch.trials._run import TrialRunner, WorkerSetup
from peftsearch.trials.cost import detect_device, price_per_hour
from peftsearch.trials.data import PreparedData
from peftsearch.trials.jobs import BaselineJob, CalibrationJob, Job, TestScoringJob, TrialJob
from peftsearch.trials.model import (
    BaseModelSource,
    Checkpoint,
    count_trainable,
    inspect_base_model,
    load_tokenizer,
    meta_model,
)
from peftsearch.trials.result import TrialResult
from peftsearch.trials.train import TrainSettings, TrialDiverged

__all__ = [
    "BaseModelSource",
    "BaselineJob",
    "CalibrationJob",
    "Checkpoint",
    "Job",
    "PreparedData",
    "TestScoringJob",
    "TrainSettings",
    "TrialDiverged",
    "TrialJob",
    "TrialResult",
    "TrialRunner",
    "WorkerSetup",
    "count_trainable",
    "detect_device",
    "inspect_base_model",
    "load_tokenizer",
    "meta_model",
    "price_per_hour",
]
