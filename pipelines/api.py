"""The Python API: what notebooks and scripts call, and what the CLI is a thin layer over.

import peftsearch

result = peftsearch.run("search.yaml", overrides=["search.n_trials=10"])
result.trials                       # every trial, a pandas DataFrame
result.front                        # the Pareto front
print(result.recommend(max_params="1%").text)
result.export("my-adapter", pick="recommended")

result = peftsearch.load("peftsearch-out/my-study")   # a finished study, later
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from peftsearch.config import Config
    from peftsearch.results import Recommendation
    from peftsearch.results.verify import Verification

__all__ = ["StudyResult", "evaluate", "load", "resume", "run", "verify"]


@dataclass
class StudyResult:
    """A study's trials and front, read from its folder and storage.

    ``rows`` holds one dict per trial (the columns of ``trials.csv``); ``front_numbers``
    the trial numbers on the Pareto front; ``extra`` the last run's summary, budget and
    stop reason.
    """

    study_dir: Path
    config: Config
    rows: list[dict[str, Any]]
    front_numbers: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial, one row each, indexed by trial number."""
        import pandas as pd

        from peftsearch.results import columns

        return pd.DataFrame(self.rows, columns=list(columns(self.rows))).set_index(
            "trial", drop=False
        )

    @property
    def front(self) -> pd.DataFrame:
        """The Pareto front of accuracy, trainable params and cost, most accurate first."""
        table = self.trials
        front = table[table["trial"].isin(self.front_numbers)]
        return front.sort_values("accuracy", ascending=False)

    @property
    def stop_reason(self) -> str | None:
        return self.extra.get("stop_reason")

    def recommend(
        self,
        *,
        max_params: int | str | None = None,
        max_cost: float | str | None = None,
        min_accuracy: float | None = None,
        prefer: str = "accuracy",
        max_memory: float | str | None = None,
    ) -> Recommendation:
        """The trial to take under these limits, with what it trades away, in words.

        ``max_params`` is a count (``200_000``, ``"200k"``) or a share (``"1%"``);
        ``max_cost`` dollars per run; ``max_memory`` the measured peak (``"12gb"``,
        ``"500mb"``); ``prefer`` is accuracy, params or cost. With ``max_memory`` the
        choice is from the front that counts peak memory as an objective too.
        """
        from peftsearch.results import front_of, recommend
        from peftsearch.search.objectives import objectives_of

        front = self.front_numbers
        baseline = self.extra.get("summary", {}).get("baseline")
        limits = constraints(max_params, max_cost, min_accuracy, prefer, max_memory)
        if limits.max_memory_mb is not None:
            names = list(self.extra.get("objectives") or ("accuracy", "trainable_params", "cost"))
            front = front_of(self.rows, objectives_of((*names, "peak_memory")), baseline)
        return recommend(self.rows, front, limits, baseline=baseline)

    def export(
        self,
        out: str | Path,
        *,
        trial: int | None = None,
        pick: str | None = None,
        merge: bool = False,
        force: bool = False,
        register: str | None = None,
        **limits: Any,
    ) -> Path:
        """Write one trial's adapter in PEFT format to ``out``: ``trial=N``, or
        ``pick="recommended"`` with ``recommend``'s keyword limits. ``register``: also
        register it under that name in the MLflow Model Registry of the study's
        tracking store (``register_adapter``)."""
        from peftsearch.pipelines.builders import build_checkpoint
        from peftsearch.results import export_adapter

        number = self.pick_trial(trial=trial, pick=pick, **limits)
        row = next(r for r in self.rows if r["trial"] == number)
        written = export_adapter(
            study_dir=self.study_dir,
            row=row,
            base=build_checkpoint(self.config),
            data=self.config.data.model_dump(),
            study_name=self.config.search.study_name,
            out=Path(out),
            merge=merge,
            force=force,
            max_new_tokens=self.config.evaluation.max_new_tokens,
            evaluation={
                "metric": self.config.metric,
                "eval_batch_size": self.config.training.eval_batch_size,
                "batch_size": self.config.training.batch_size,
                "precision": self.config.training.precision,
                "seed": self.config.search.seed,  # the new head's init (no-adapter score)
            },
            tracking_uri=self.config.mlflow_uri if self.config.tracking.enabled else None,
        )
        if register:
            self.register_adapter(register, written, row)
        return written

    def register_adapter(self, name: str, folder: Path, row: dict[str, Any]) -> str:
        """A new version of registered model ``name``: the exported adapter, with the
        trial's metrics, the base model's identity and the adapter files' sha256."""
        from peftsearch.errors import UserError
        from peftsearch.pipelines.builders import build_checkpoint, build_tracker
        from peftsearch.results.export import adapter_digests, base_identity
        from peftsearch.results.front import metric_columns
        from peftsearch.search.tracking import Tracker

        tracker = build_tracker(self.config)
        if not isinstance(tracker, Tracker):
            raise UserError(
                "tracking is off for this study, so there is no MLflow registry to use",
                where="--register",
                hint="set tracking.enabled: true (and tracking.mlflow_uri for a server)",
            )
        metrics = {
            k: float(row[k])
            for k in (
                "accuracy",
                "trainable_params",
                "cost_usd",
                "test_accuracy",
                *metric_columns(),
            )
            if isinstance(row.get(k), int | float)
        }
        checkpoint = build_checkpoint(self.config)
        tags = {
            "base_model": checkpoint.name_or_path,
            "base_model_identity": base_identity(checkpoint),
            "peft_method": str(row["method"]),
            "metric": str(row.get("metric") or "accuracy"),
            **{f"sha256.{n}": d for n, d in adapter_digests(folder).items()},
        }
        return tracker.register_adapter(
            name,
            folder,
            study_name=self.config.search.study_name,
            trial=int(row["trial"]),
            metrics=metrics,
            tags=tags,
        )

    def pick_trial(
        self, *, trial: int | None = None, pick: str | None = None, **limits: Any
    ) -> int:
        """The trial an export means: ``trial=N``, or ``pick="recommended"`` under limits."""
        if (trial is None) == (pick is None):
            raise UserError("name one trial: --trial N or --pick recommended", where="export")
        if pick is not None:
            if pick != "recommended":
                raise UserError(
                    f"unknown pick {pick!r}; the only one is 'recommended'", where="--pick"
                )
            advice = self.recommend(**limits)
            if advice.trial is None:
                raise UserError(advice.text, where="--pick")
            trial = advice.trial
        if trial not in {r["trial"] for r in self.rows}:
            raise UserError(
                f"trial {trial} is not in study {self.config.search.study_name!r} "
                f"(it has {len(self.rows)})",
                where="--trial",
            )
        assert trial is not None
        return trial

    def check_deployment(
        self, trial: int, target: str, max_lora_rank: int | None = None
    ) -> str | None:
        """None when trial ``trial``'s saved adapter fits deployment profile ``target``
        (spaces/_deployment.py: vllm, merge), else why not. ``max_lora_rank``: vLLM's
        limit; default the study's ``deployment.max_lora_rank``, else vLLM's default."""
        import json

        from peftsearch.results import StudyFolder
        from peftsearch.spaces._deployment import PROFILES, check_adapter

        if target not in PROFILES:
            raise UserError(
                f"unknown deployment target {target!r}",
                where="--check",
                hint=f"use one of: {', '.join(PROFILES)}",
            )
        folder = StudyFolder(self.study_dir)
        row = next(r for r in self.rows if r["trial"] == trial)
        if not folder.has_adapter(trial):
            raise UserError(
                f"trial {trial} has no saved adapter (status {row['status']})", where="--trial"
            )
        config = json.loads((folder.trial_adapter(trial) / "adapter_config.json").read_text())
        rank = max_lora_rank or self.config.deployment.max_lora_rank
        return check_adapter(target, config, row["method"], rank)

    def report(self, out: str | Path | None = None) -> Path:
        """(Re)write the self-contained HTML report; returns its path."""
        from peftsearch.results import StudyFolder, report_page

        page = report_page(self.config.search.study_name, self.rows, self.front_numbers, self.extra)
        return StudyFolder(self.study_dir).write_report(
            page, out=Path(out) if out is not None else None
        )


def constraints(
    max_params: int | str | None,
    max_cost: float | str | None,
    min_accuracy: float | None,
    prefer: str,
    max_memory: float | str | None = None,
) -> Any:
    """``Constraints`` from what a person writes (``1%``, ``200k``, ``5usd``, ``12gb``)."""
    from peftsearch.results.recommend import Constraints, parse_cost, parse_memory, parse_params

    if prefer not in ("accuracy", "params", "cost"):
        raise UserError(
            f"unknown preference {prefer!r}; use accuracy, params or cost", where="--prefer"
        )
    count, pct = parse_params(None if max_params is None else str(max_params))
    cost = parse_cost(None if max_cost is None else str(max_cost))
    memory = parse_memory(None if max_memory is None else str(max_memory))
    return Constraints(count, pct, cost, min_accuracy, prefer, memory)


def _console(quiet: bool) -> Console:
    from rich.console import Console

    return Console(quiet=quiet, highlight=False)


def _config(config: Config | dict[str, Any] | str | Path, overrides: list[str] | None) -> Config:
    from peftsearch.config import Config, load_config, parse_config

    if isinstance(config, Config):
        if not overrides:
            return config
        return parse_config(config.model_dump(mode="json"), overrides=overrides)
    if isinstance(config, dict):
        return parse_config(config, overrides=overrides)
    return load_config(config, overrides)


def run(
    config: Config | dict[str, Any] | str | Path,
    overrides: list[str] | None = None,
    *,
    console: Console | None = None,
    quiet: bool = False,
) -> StudyResult:
    """Run the search a config describes (a YAML path, a dict or a ``Config``); running
    a study name again continues it. ``overrides`` are ``key.path=value`` strings."""
    from peftsearch.pipelines.run import run_search

    return run_search(_config(config, overrides), console or _console(quiet), resume=False)


def resume(
    study_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    console: Console | None = None,
    quiet: bool = False,
) -> StudyResult:
    """Continue a study whose driver was killed: interrupted trials are re-queued."""
    from peftsearch.pipelines.run import run_search
    from peftsearch.pipelines.studies import load_study_config

    resolved = load_study_config(Path(study_dir), overrides)
    return run_search(resolved, console or _console(quiet), resume=True)


def load(study_dir: str | Path) -> StudyResult:
    """A study as it stands in its folder and storage (finished, or still running)."""
    from peftsearch.pipelines.studies import load_results

    folder = Path(study_dir)
    config, rows, front, extra = load_results(folder)
    return StudyResult(folder, config, rows, front, extra)


def verify(
    folder: str | Path,
    *,
    registry: str | None = None,
    revision: str | None = None,
    tracking_uri: str | None = None,
) -> Verification:
    """Check an exported adapter folder: its files against the sha256 its export
    recorded (or, with ``registry="NAME[/VERSION]"``, the registered version's), its
    config against the recorded base, and the base itself where it is on this machine.
    ``revision``: the base revision it is to be deployed on. ``.ok``, ``.line()``."""
    from peftsearch.results.verify import read_record, registry_record, verify_export

    path = Path(folder)
    record = read_record(path)
    if registry is not None:
        record = registry_record(registry, tracking_uri or record.get("tracking_uri"), record)
    return verify_export(path, record, revision=revision)


def evaluate(
    folder: str | Path,
    data: str | Path,
    *,
    device: str = "auto",
    registry: str | None = None,
    tracking_uri: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score an exported adapter on new labelled data, as the search scored it (its
    task, metric, columns and preprocessing, from the export), beside its recorded
    scores and the base model without it; ``["verdict"]`` says whether it moved beyond
    noise. ``registry="NAME[/VERSION]"``: also log the review to MLflow against that
    model version. ``progress(done, total)`` hears the rows scored."""
    import json

    from peftsearch.results.review import review
    from peftsearch.results.study_folder import LABELS_FILE
    from peftsearch.results.verify import read_record
    from peftsearch.trials.adapter_eval import score_export

    path = Path(folder)
    record = read_record(path)
    try:
        labels = json.loads((path / LABELS_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"no {LABELS_FILE} in the adapter folder", where=str(path)) from None
    scores = score_export(path, record, labels, Path(data), device=device, progress=progress)
    result = review(record, scores, str(data))
    if registry is not None:
        from peftsearch.search.tracking import log_review

        model, _, version = registry.partition("/")
        result["logged"] = log_review(
            model, version or None, tracking_uri or record.get("tracking_uri"), result
        )
    return result
