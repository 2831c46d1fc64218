"""Trials on Ray: two 1-CPU nodes on this machine, a killed worker, a killed driver."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from executor_contract import ExecutorContract, drain
from helpers import LORA, ray_test_cluster, tiny_config

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.search import read_records
from peftsearch.search.early_stopping import RungBoard
from peftsearch.search.ray_executor import RayExecutor
from peftsearch.trials import TrialJob, WorkerSetup


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One Ray for the module: a head and a second node, 1 CPU each.

    Everything Ray writes stays in one short temp folder: ``Cluster`` writes its address
    file under ``$RAY_TMPDIR/ray`` (a fresh machine has no ``/tmp/ray``), and Unix
    socket paths must stay under 108 bytes, which pytest's deep tmp_path breaks.
    """
    import ray

    for cluster, temp in ray_test_cluster(num_cpus=1):
        cluster.add_node(num_cpus=1, temp_dir=temp)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield cluster


def executor_for(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    out: Path,
    steps: int,
    board: RungBoard | None = None,
) -> RayExecutor:
    config = parse_config(
        tiny_config(
            tiny_model_dir,
            tiny_data,
            out,
            training={"max_steps": steps, "batch_size": 8, "device": "cpu"},
        )
    )
    data = build_data(config)
    setup = WorkerSetup(
        source=build_model_source(config, data), settings=build_settings(config), device="cpu"
    )
    return RayExecutor(setup, data, cpus_per_trial=1, gpus_per_trial=0, board=board)


def request(number: int, out: Path | None = None) -> TrialJob:
    return TrialJob(number, "lora", LORA, 1e-3, str(out / str(number)) if out else None)


def test_trials_run_at_once_on_both_nodes(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=300)
    try:
        assert executor.slots == 2
        assert len({node for _, node in executor.identities.values()}) == 2
        executor.submit(request(0, tmp_path))
        executor.submit(request(1, tmp_path))
        results = sorted(drain(executor), key=lambda r: r.number)
    finally:
        executor.close()
    assert [r.status for r in results] == ["COMPLETE", "COMPLETE"], [r.error for r in results]
    assert len({r.worker for r in results}) == 2
    # The two trials overlap in time: each starts before the other ends.
    assert max(r.started_at for r in results) < min(r.finished_at for r in results)
    assert all((tmp_path / str(r.number) / "adapter_config.json").is_file() for r in results)


def test_workers_judge_rungs_on_one_board(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A trial's rung result reaches the search's one board actor, where a later trial
    on any node is judged against it."""
    import ray

    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=6, board=RungBoard())
    try:
        executor.submit(dataclasses.replace(request(0), rungs=(2,)))
        [result] = drain(executor)
        assert result.status == "COMPLETE", result.error
        assert [rung[0] for rung in result.rungs] == [2]
        # The board holds trial 0's report: with it a third report at the rung is judged
        # (min_trials 3) and one far behind is stopped; with two, anything goes on.
        board = executor.board
        assert ray.get(board.report.remote(1, 2, 1.0, 1, 0.0))
        assert not ray.get(board.report.remote(2, 2, -1.0, 10**12, 1e9))
    finally:
        executor.close()


def busy_worker_pid(
    executor: RayExecutor,
    not_pid: int | None = None,
    results: list | None = None,
    among: set[int] | None = None,
) -> int:
    """This executor's worker process (of ``among``, if given) that runs a trial: Ray
    titles it ``ray::TrialWorker.run`` (other searches on the machine have workers of
    their own)."""
    import psutil

    executor.identities  # noqa: B018  (waits for the workers' start-up: not the trial's)
    deadline = time.time() + 90
    titles: dict[int, str] = {}
    while time.time() < deadline:
        titles = {}
        pids = among or {pid for pid, _ in dict(executor.identities).values()}
        for pid in pids - {not_pid}:
            try:
                titles[pid] = " ".join(psutil.Process(pid).cmdline()).strip()
            except psutil.Error:
                titles[pid] = "gone"
                continue
            if titles[pid] == "ray::TrialWorker.run":
                return pid
        time.sleep(0.2)
    came_back = [(r.status, r.error) for r in results or []]
    raise AssertionError(
        f"no worker started the trial; the workers were {titles}, results so far {came_back}"
    )


def run_and_kill(
    executor: RayExecutor, kills: int, max_seconds: float | None = None, min_seconds: float = 0.0
) -> tuple[list, list[int]]:
    """Drain in a thread (wait() blocks through retries) while this thread kills workers."""
    import threading

    results: list = []
    executor.submit(
        dataclasses.replace(request(0), max_seconds=max_seconds, min_seconds=min_seconds)
    )
    thread = threading.Thread(target=lambda: results.extend(drain(executor)))
    thread.start()
    killed: list[int] = []
    for _ in range(kills):
        pid = busy_worker_pid(executor, killed[-1] if killed else None, results)
        time.sleep(1.0)  # well inside training
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    thread.join(timeout=180)
    assert not thread.is_alive()
    return results, killed


def test_killed_worker_retries_once_on_another(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    # long enough to be killed mid-training: a worker that preloaded its model trains 600
    # steps of the tiny model in about a second, inside the test's wait before the kill
    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=3000)
    try:
        results, killed = run_and_kill(executor, kills=1)
    finally:
        executor.close()
    assert len(results) == 1
    result = results[0]
    assert result.status == "COMPLETE", result.error
    assert result.attempts == 2
    assert not result.worker.endswith(f":{killed[0]}")
    assert result.device_seconds > result.wall_seconds  # the lost attempt is paid for


def test_retry_gets_only_what_is_left_of_the_allowance(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The budget promise holds through a worker death: the lost attempt and the retry
    together stay inside the one allowance the trial reserved."""
    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=100_000)
    try:
        # min_seconds: what the cost model's floor would say a run needs here (setup with
        # a model load on a fresh worker, a step, an evaluation), with headroom.
        results, _ = run_and_kill(executor, kills=1, max_seconds=20.0, min_seconds=3.0)
    finally:
        executor.close()
    (result,) = results
    # The retry ran on what was left until the budget stopped it or, on a machine so
    # loaded that the lost attempt used nearly everything, there was too little left to
    # start one. Either way the trial stayed inside its one allowance.
    if result.status == "PRUNED":
        assert result.attempts == 2
        assert result.error.startswith("stopped by the budget"), result.error
    else:
        assert result.status == "FAIL" and result.attempts == 1
        assert result.error.endswith("its allowance is used up"), result.error
    assert result.device_seconds <= 20.0, result.device_seconds


class TestRayExecutor(ExecutorContract):
    @pytest.fixture
    def executor(
        self, cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
    ) -> Any:
        executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=6)
        yield executor
        executor.close()


def test_worker_killed_twice_fails_and_search_goes_on(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    # killed twice before it could finish (see test_killed_worker_retries_once_on_another)
    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=3000)
    try:
        results, _ = run_and_kill(executor, kills=2)
        executor.submit(request(1))
        after = drain(executor)
    finally:
        executor.close()
    assert [r.status for r in results] == ["FAIL"]
    assert results[0].error.startswith("worker process died in 2 attempts")
    assert [r.status for r in after] == ["COMPLETE"]


def optuna_states(db: Path) -> list[str]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as connection:
            return [row[0] for row in connection.execute("select state from trials")]
    except sqlite3.OperationalError:  # tables not created yet
        return []


def test_driver_killed_then_resumed(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    import optuna
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from peftsearch.pipelines.cli import app

    out = tmp_path / "out"
    config = tiny_config(
        tiny_model_dir,
        tiny_data,
        out,
        resources={"use_ray": True, "ray_address": cluster.address},
        training={"max_steps": 500, "batch_size": 8, "device": "cpu"},
        search={"study_name": "tiny", "n_trials": 4, "seed": 0},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    driver = subprocess.Popen(
        [sys.executable, "-m", "peftsearch.pipelines.cli", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        states = optuna_states(out / "optuna.db")
        if "COMPLETE" in states and "RUNNING" in states:
            break
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.2)
    else:
        raise AssertionError("no moment with a finished and a running trial")
    driver.send_signal(signal.SIGKILL)
    driver.wait()

    storage = f"sqlite:///{out / 'optuna.db'}"
    before = {t.number: t for t in optuna.load_study(study_name="tiny", storage=storage).trials}
    done_before = {n: t for n, t in before.items() if t.state.name == "COMPLETE"}
    stale = sorted(n for n, t in before.items() if t.state.name == "RUNNING")
    assert done_before and stale

    result = CliRunner().invoke(app, ["resume", str(out / "tiny")])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert f"{len(stale)} interrupted trial(s) re-queued" in result.output

    resumed = optuna.load_study(study_name="tiny", storage=storage)
    after = resumed.trials
    records = read_records(resumed)
    by_number = {t.number: t for t in after}
    for number, trial in done_before.items():  # finished trials kept exactly once, untouched
        assert by_number[number].values == trial.values
        assert by_number[number].datetime_complete == trial.datetime_complete
    for number in stale:
        assert by_number[number].state.name == "FAIL"
        reruns = [r for r in records if r.requeued_from == number]
        # The re-run keeps every param the stale trial had sampled (a driver killed while
        # sampling leaves some unsampled; the re-run samples those afresh).
        assert len(reruns) == 1
        assert before[number].params.items() <= reruns[0].params.items()
        assert reruns[0].finished and records[number].interrupted
    counted = [
        t for t in after if t.state.name in {"COMPLETE", "FAIL", "PRUNED"} and t.number not in stale
    ]
    assert len(counted) == 4

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = sorted(
        (r for r in runs if r.data.tags["peftsearch.kind"] == "search"),
        key=lambda r: r.info.start_time,
    )
    assert [p.info.status for p in parents] == ["KILLED", "FINISHED"]
    children = [
        int(r.data.tags["peftsearch.trial"])
        for r in runs
        if r.data.tags["peftsearch.kind"] == "trial"
    ]
    assert sorted(children) == sorted(t.number for t in after)  # one child run per trial


def test_private_local_ray_leaves_nothing_behind(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:

    home = Path(tempfile.mkdtemp(prefix="ps-home-", dir="/tmp"))
    temp = Path(tempfile.mkdtemp(prefix="ps-tmp-", dir="/tmp"))  # short: Ray's socket paths
    config = tiny_config(
        tiny_model_dir,
        tiny_data,
        tmp_path / "out",
        resources={"use_ray": True, "max_concurrent_trials": 1},
        search={"study_name": "tiny", "n_trials": 2, "seed": 0},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), TMPDIR=str(temp))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "peftsearch.pipelines.cli", "run", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Ray: 1 worker(s)" in done.stdout
        assert (tmp_path / "out" / "tiny" / "pareto.csv").is_file()
        assert not (home / ".ray").exists()
        assert list(temp.iterdir()) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_model_folder_only_the_driver_has_reaches_the_workers(
    cluster: Any,
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver ships its local model folder once; here the folder is gone before any
    worker starts, as on a node that cannot see the driver's disk."""
    import peftsearch.search.ray_executor as ray_executor
    from peftsearch.trials.file_transfer import ship_model

    driver_only = tmp_path / "driver-only-model"
    shutil.copytree(tiny_model_dir, driver_only)

    def ship_then_hide(checkpoint: Any) -> Any:
        shipped = ship_model(checkpoint)
        shutil.rmtree(driver_only)
        return shipped

    monkeypatch.setattr(ray_executor, "ship_model", ship_then_hide)
    executor = executor_for(driver_only, tiny_data, tmp_path / "out", steps=4)
    try:
        assert not driver_only.exists()
        executor.submit(request(0, tmp_path / "out"))
        (result,) = drain(executor)
    finally:
        executor.close()
    assert result.status == "COMPLETE", result.error
    assert (tmp_path / "out" / "0" / "adapter_config.json").is_file()


def test_a_lost_node_costs_one_retry_and_the_search_finishes(
    cluster: Any, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """A third node joins, takes a trial, and is removed mid-trial: that trial is retried
    on a surviving node within what is left of its allowance; the others are untouched."""
    import ray

    extra = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    # mid-trial at the removal: the removal waits until the doomed worker trains, and
    # 1500 steps of three workers on two cores take several seconds (a worker alone
    # trains about 600 a second: test_killed_worker_retries_once_on_another)
    executor = executor_for(tiny_model_dir, tiny_data, tmp_path, steps=1500)
    try:
        assert executor.slots == 3
        identities = executor.identities
        for number in range(3):
            executor.submit(dataclasses.replace(request(number, tmp_path), max_seconds=600.0))
        doomed, pid = next(
            (a.job.number, identities[a.worker][0])
            for a in executor._inflight.values()
            if identities[a.worker][1] == extra.node_id
        )
        busy_worker_pid(executor, among={pid})
        time.sleep(0.5)  # mid-trial
        cluster.remove_node(extra)
        results = {r.number: r for r in drain(executor)}
    finally:
        executor.close()
    assert sorted(results) == [0, 1, 2]
    assert all(r.status == "COMPLETE" for r in results.values()), [
        r.error for r in results.values()
    ]
    assert results[doomed].attempts == 2
    assert results[doomed].device_seconds <= 600.0
    assert all(results[n].attempts == 1 for n in results if n != doomed)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2


RAY_DOWN_SCRIPT = """
import gc

import ray

from peftsearch.search.ray_session import RaySession, ray_session


@ray.remote(num_cpus=0)
class Echo:
    def ping(self):
        return 1


session = RaySession().start()
with ray_session(session=session):
    handle = Echo.remote()
    reference = handle.ping.remote()
    assert ray.get(reference) == 1
assert not ray.is_initialized(), "Ray is still up after its block"
del handle, reference
gc.collect()
session.close()
print("survived")
"""


def test_ray_is_down_when_its_block_ends(tmp_path: Path) -> None:
    """The driver drops actor handles and object references after the block; Ray ends the
    process (exit status 1) if one is dropped while ``ray.shutdown`` runs in another
    thread, so the block shuts Ray down before it returns. In a fresh process: this one
    may be joined to a test cluster."""
    temp = Path(tempfile.mkdtemp(prefix="ps-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["TMPDIR"] = str(temp)
    try:
        done = subprocess.run(
            [sys.executable, "-c", RAY_DOWN_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-3000:]
