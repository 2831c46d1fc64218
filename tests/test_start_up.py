"""The garbage collector around start-up (search/start_up.py): paused while a driver or a
worker builds what it keeps, frozen before the trials, given back after the search."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import tiny_config

from peftsearch.search.start_up import freeze_start_up, pause_collection, release_start_up


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """Each test starts with collection on and nothing frozen, and leaves it so."""
    gc.unfreeze()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_pause_freeze_release() -> None:
    state = pause_collection()
    assert not gc.isenabled()
    built = [[] for _ in range(1000)]
    freeze_start_up(state)
    assert gc.isenabled() and gc.get_freeze_count() >= len(built)
    freeze_start_up(state)  # idempotent
    assert gc.isenabled()
    release_start_up(state)
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_release_keeps_what_the_host_froze_and_its_collector_off() -> None:
    gc.freeze()
    gc.disable()
    state = pause_collection()
    freeze_start_up(state)
    assert not gc.isenabled()  # it was off: it stays off
    release_start_up(state)
    assert gc.get_freeze_count() > 0 and not gc.isenabled()


def test_a_search_runs_its_trials_with_its_start_up_frozen(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import peftsearch
    from peftsearch.pipelines import run

    seen: list[tuple[bool, int]] = []
    drive = run.drive

    def watched(*args: Any) -> str:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return drive(*args)

    monkeypatch.setattr(run, "drive", watched)
    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["space"] = {"methods": ["ia3"]}
    config["search"]["n_trials"] = 1
    config["tracking"] = {"enabled": False}
    peftsearch.run(config, quiet=True)
    [(enabled, frozen)] = seen
    # the imports, the tokenized data and the meta model: tens of thousands at least
    assert enabled and frozen > 50_000
    assert gc.isenabled() and gc.get_freeze_count() == 0  # given back after the search


def test_a_trial_worker_freezes_what_it_loaded(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The Ray actor's body, in this process: collection is off from its creation to the
    end of ``attach`` (the imports and the preloaded base), then on with those frozen."""
    import torch

    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import build_data, build_worker_setup
    from peftsearch.search.ray_executor import TrialWorker

    config = parse_config(tiny_config(tiny_model_dir, tiny_data, tmp_path / "out"))
    data = build_data(config)
    setup, _ = build_worker_setup(config, data)
    threads = torch.get_num_threads()
    try:
        worker = TrialWorker(num_threads=None)
        assert not gc.isenabled()
        worker.attach(dataclasses.replace(setup, preload="none"), data)
    finally:
        torch.set_num_threads(threads)
    assert worker.runner is not None
    assert gc.isenabled() and gc.get_freeze_count() > 50_000


def test_the_command_freezes_everything_before_the_process_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's shutdown would run full collections over all of it (2 to 3.5 s)."""
    from peftsearch.pipelines import cli

    monkeypatch.setattr("sys.argv", ["peftsearch", "--help"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert gc.get_freeze_count() > 0


def test_a_search_that_fails_in_its_start_up_gives_the_collector_back(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    import peftsearch

    broken = tmp_path / "train.csv"
    broken.write_text("words,grade\nfine,1\nbad,0\n")  # not the text/label columns
    config = tiny_config(tiny_model_dir, {**tiny_data, "train": broken}, tmp_path / "out")
    config["tracking"] = {"enabled": False}
    with pytest.raises(peftsearch.UserError):
        peftsearch.run(config, quiet=True)
    assert gc.isenabled() and gc.get_freeze_count() == 0
