"""The executor contract on the in-process executor (the Ray one runs it in test_ray.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from executor_contract import ExecutorContract
from helpers import tiny_config

from peftsearch.config import parse_config
from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
from peftsearch.search import InProcessExecutor
from peftsearch.trials import TrialRunner


class TestInProcessExecutor(ExecutorContract):
    @pytest.fixture
    def executor(
        self, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
    ) -> Iterator[InProcessExecutor]:
        config = parse_config(tiny_config(tiny_model_dir, tiny_data, tmp_path / "out"))
        data = build_data(config)
        runner = TrialRunner(
            build_model_source(config, data),
            data,
            build_settings(config),
            device="cpu",
            device_name="cpu",
        )
        executor = InProcessExecutor(runner)
        yield executor
        executor.close()
