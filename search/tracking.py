"""MLflow tracking: one experiment per study, a parent run per search, a child per trial.

Only the driver talks to MLflow (through an explicit ``MlflowClient``, not the global
active-run state), so workers never contend for the tracking store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from peftsearch.trials.result import MEASUREMENTS

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from peftsearch.trials import TrialResult

__all__ = ["NullTracker", "Tracker", "TrialTracker", "flatten", "log_review", "model_version"]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to ``a.b`` keys with string values, as MLflow params want."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            flat[name] = text[:6000]
    return flat


class TrialTracker(Protocol):
    """What the search needs from tracking: a parent run per search, a child per trial.

    Run ids are strings; the null tracker hands out empty ones and records nothing.
    ``close_child`` ends a child that never trained (``status`` is its peftsearch status
    tag, ``run_status`` MLflow's: FINISHED, FAILED or KILLED).
    """

    def start_parent(self, study_name: str, params: dict[str, Any]) -> str: ...

    def start_child(
        self, parent_id: str, study_name: str, number: int, method: str, params: dict[str, Any]
    ) -> str: ...

    def finish_child(self, run_id: str, result: TrialResult) -> None: ...

    def close_child(self, run_id: str, status: str, run_status: str) -> None: ...

    def finish_parent(
        self, run_id: str, metrics: dict[str, float], tags: dict[str, str], files: list[Path]
    ) -> None: ...

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None: ...

    def end(self, run_id: str, status: str = "FINISHED") -> None: ...

    def runs(self, study_name: str, kind: str, status: str | None = None) -> list[Any]: ...


class NullTracker:
    """Tracking turned off (``tracking.enabled: false``): every call does nothing."""

    def start_parent(self, study_name: str, params: dict[str, Any]) -> str:
        return ""

    def start_child(
        self, parent_id: str, study_name: str, number: int, method: str, params: dict[str, Any]
    ) -> str:
        return ""

    def finish_child(self, run_id: str, result: TrialResult) -> None:
        return None

    def close_child(self, run_id: str, status: str, run_status: str) -> None:
        return None

    def finish_parent(
        self, run_id: str, metrics: dict[str, float], tags: dict[str, str], files: list[Path]
    ) -> None:
        return None

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        return None

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        return None

    def runs(self, study_name: str, kind: str, status: str | None = None) -> list[Any]:
        return []


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO lines (store migrations...) are noise here; silence them for the
    call only, leaving the caller's logging as it was."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_version(name: str, version: str | None, tracking_uri: str | None) -> Any:
    """Version ``version`` (default: the latest) of registered model ``name`` in the
    MLflow store at ``tracking_uri``, or a UserError naming what is not there."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from peftsearch.errors import UserError

    if not tracking_uri:
        raise UserError(
            "the export does not say which MLflow store holds its registry",
            where="--registry",
            hint="pass --tracking-uri (the study's tracking.mlflow_uri)",
        )
    with _quiet_mlflow():
        client = MlflowClient(tracking_uri=tracking_uri)
        try:
            if version is None:
                found = client.search_model_versions(f"name = '{name}'")
                if not found:
                    raise MlflowException(f"no versions of {name}")
                return max(found, key=lambda v: int(v.version))
            return client.get_model_version(name, version)
        except MlflowException:
            raise UserError(
                f"no registered model {name!r}"
                + (f" version {version}" if version else "")
                + f" in {tracking_uri}",
                where="--registry",
                hint="the name (and version) `peftsearch export --register` gave it",
            ) from None


def log_review(
    name: str, version: str | None, tracking_uri: str | None, result: dict[str, Any]
) -> dict[str, str]:
    """A review (``peftsearch evaluate``) as a run in the experiment of the registered
    version's own run, tagged with the model and version, its scores as metrics; the
    version's ``peftsearch.last_review`` tag points at it. Reviews of one version so
    build a history: search runs by ``tags.`peftsearch.model_version```."""
    from mlflow.entities import Metric, RunTag

    found = model_version(name, version, tracking_uri)
    with _quiet_mlflow():
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_run(found.run_id).info.experiment_id
        run = client.create_run(
            experiment,
            run_name=f"review of {name} v{found.version}",
            tags={
                "peftsearch.kind": "review",
                "peftsearch.model": name,
                "peftsearch.model_version": str(found.version),
            },
        )
        now = int(time.time() * 1000)
        numbers = {
            "score": result["score"],
            "score_se": result["score_se"],
            "no_adapter_score": result["no_adapter"]["score"],
            "change": result["change"],
            "rows": result["rows"],
        }
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in numbers.items() if v is not None],
            tags=[
                RunTag("verdict", result["verdict"]),
                RunTag("data", str(result["data"])),
                RunTag("beyond_noise", str(result["beyond_noise"]).lower()),
            ],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        client.set_model_version_tag(name, found.version, "peftsearch.last_review", run.info.run_id)
    return {"run_id": run.info.run_id, "model": name, "version": str(found.version)}


class Tracker:
    """``TrialTracker`` on MLflow, through an explicit client (no global active run)."""

    def __init__(self, uri: str, experiment_name: str, artifact_root: Path) -> None:
        from mlflow import MlflowClient  # sets up mlflow's logger: before quieting it

        with _quiet_mlflow():
            self._client: MlflowClient = MlflowClient(tracking_uri=uri)
            found = self._client.get_experiment_by_name(experiment_name)
            if found is None and uri.lower().startswith(("http://", "https://", "databricks")):
                # a tracking server stores artifacts where it is configured to, for everyone
                self.experiment_id = self._client.create_experiment(experiment_name)
            elif found is None:
                # a database store would put them in ./mlruns: keep them in the output folder
                artifact_root.mkdir(parents=True, exist_ok=True)
                self.experiment_id = self._client.create_experiment(
                    experiment_name, artifact_location=artifact_root.resolve().as_uri()
                )
            else:
                self.experiment_id = found.experiment_id

    def start_parent(self, study_name: str, params: dict[str, Any]) -> str:
        run = self._client.create_run(
            self.experiment_id,
            run_name=f"{study_name}-search",
            tags={"peftsearch.study": study_name, "peftsearch.kind": "search"},
        )
        self._log_params(run.info.run_id, flatten(params))
        return str(run.info.run_id)

    def start_child(
        self, parent_id: str, study_name: str, number: int, method: str, params: dict[str, Any]
    ) -> str:
        run = self._client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}-{method}",
            tags={
                "mlflow.parentRunId": parent_id,
                "peftsearch.study": study_name,
                "peftsearch.trial": str(number),
                "peftsearch.kind": "trial",
                "method": method,
            },
        )
        self._log_params(run.info.run_id, flatten(params))
        return str(run.info.run_id)

    def finish_child(self, run_id: str, result: TrialResult) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric("train_loss", loss, now, step) for step, loss in enumerate(result.losses, 1)
        ]
        extra = ("setup_seconds", "attempts", "rung_seconds", "forgetting", "forgetting_se")
        for name in (*MEASUREMENTS, *extra):
            value = getattr(result, name)
            if value is not None:
                metrics.append(Metric(name, float(value), now, 0))
        for name, value in (result.metrics or {}).items():  # a causal LM's other metrics
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.append(Metric(name, float(value), now, 0))
        if result.estimated_seconds:
            metrics.append(Metric("estimated_seconds", result.estimated_seconds, now, 0))
            error = result.device_seconds / result.estimated_seconds - 1
            metrics.append(Metric("estimate_error", error, now, 0))
        for start in range(0, len(metrics), 1000):
            self._client.log_batch(run_id, metrics=metrics[start : start + 1000])
        self._client.set_tag(run_id, "status", result.status)
        # they change cost, and sometimes accuracy
        self._client.set_tag(run_id, "precision", str(result.precision))
        self._client.set_tag(run_id, "gradient_checkpointing", str(result.gradient_checkpointing))
        self._client.set_tag(run_id, "cached_layers", str(result.cached_layers))
        # the base it trained on, and the memory levers it was given
        self._client.set_tag(run_id, "quantization", result.quantization)
        if result.memory_note:
            self._client.set_tag(run_id, "memory", result.memory_note)
        if result.error:
            self._client.set_tag(run_id, "error", result.error[:5000])
        self._client.set_terminated(run_id, "FINISHED" if result.status == "COMPLETE" else "FAILED")

    def close_child(self, run_id: str, status: str, run_status: str) -> None:
        self._client.set_tag(run_id, "status", status)
        self._client.set_terminated(run_id, run_status)

    def finish_parent(
        self, run_id: str, metrics: dict[str, float], tags: dict[str, str], files: list[Path]
    ) -> None:
        """The search's totals, why it stopped, and its result files; then FINISHED."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v[:5000]) for k, v in tags.items()],
        )
        for path in files:
            if path.is_file():
                self._client.log_artifact(run_id, str(path))
        self._client.set_terminated(run_id, "FINISHED")

    def register_adapter(
        self,
        name: str,
        folder: Path,
        *,
        study_name: str,
        trial: int,
        metrics: dict[str, float],
        tags: dict[str, str],
    ) -> str:
        """Log an exported adapter folder as a run of this experiment and register it as
        a new version of model ``name``; returns the version. The version carries the
        trial's metrics and ``tags`` (base model identity, adapter sha256s)."""
        from mlflow.entities import Metric, RunTag
        from mlflow.exceptions import MlflowException

        with _quiet_mlflow():
            run = self._client.create_run(
                self.experiment_id,
                run_name=f"{study_name}-trial-{trial}-export",
                tags={"peftsearch.study": study_name, "peftsearch.kind": "export"},
            )
            run_id = run.info.run_id
            now = int(time.time() * 1000)
            self._client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            self._client.log_artifacts(run_id, str(folder), "adapter")
            self._client.set_terminated(run_id, "FINISHED")
            try:
                self._client.create_registered_model(name)
            except MlflowException as error:
                if (
                    "already exists" not in str(error).lower()
                    and getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS"
                ):
                    raise
            version = self._client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/adapter",
                run_id=run_id,
                tags={**tags, **{f"metric.{k}": str(v) for k, v in metrics.items()}},
                description=f"peftsearch study {study_name}, trial {trial}",
            )
        return str(version.version)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self._client.log_artifacts(run_id, str(folder), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self._client.set_terminated(run_id, status)

    def runs(self, study_name: str, kind: str, status: str | None = None) -> list[Any]:
        """This study's runs of one kind (``search`` or ``trial``), optionally by status."""
        query = f"tags.`peftsearch.study` = '{study_name}' and tags.`peftsearch.kind` = '{kind}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return list(
            self._client.search_runs([self.experiment_id], filter_string=query, max_results=50000)
        )

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(run_id, params=items[start : start + 100])
