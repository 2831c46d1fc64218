"""The executor contract on the in-process executor (the Ray one runs it in test_ray.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from executor_contract import ExecutorContract
from helpers import tiny_runner

from peftsearch.search import InProcessExecutor


class TestInProcessExecutor(ExecutorContract):
    @pytest.fixture
    def executor(
        self, tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
    ) -> Iterator[InProcessExecutor]:
        runner, _ = tiny_runner(tiny_model_dir, tiny_data, tmp_path / "out")
        executor = InProcessExecutor(runner)
        yield executor
        executor.close()
