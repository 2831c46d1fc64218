"""CLI start-up: `peftsearch --help` against a bare `python -c pass`, same run, medians.

Run: .venv/bin/python benchmarks/cli_startup.py [repeats]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    baseline = median_seconds([sys.executable, "-c", "pass"], repeats)
    cli = median_seconds([sys.executable, "-m", "peftsearch.pipelines.cli", "--help"], repeats)
    validate_heavy = median_seconds(
        [
            sys.executable,
            "-c",
            "import peftsearch.pipelines.cli, sys; "
            "assert 'torch' not in sys.modules and 'peft' not in sys.modules "
            "and 'transformers' not in sys.modules",
        ],
        repeats,
    )
    print(f"python -c pass:      {baseline * 1000:7.0f} ms (median of {repeats})")
    print(f"peftsearch --help:   {cli * 1000:7.0f} ms ({cli / baseline:.1f}x bare python)")
    print(f"import cli (no torch/peft/transformers loaded): {validate_heavy * 1000:.0f} ms")
    print(f"target: --help under 1000 ms -> {'OK' if cli < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
