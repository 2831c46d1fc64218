"""Regenerate docs/report.png, the README's picture of a report, from a real study; or
take a picture of any HTML page (the search-quality curves).

Run: .venv/bin/python docs/screenshot.py STUDY_DIR   (e.g. peftsearch-out/demo after `make demo`)
     .venv/bin/python docs/screenshot.py PAGE.html OUT.png [WIDTH,HEIGHT]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "peftsearch-out/demo").resolve()
    report = source if source.suffix == ".html" else source / "report.html"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not report.is_file() or not browser:
        sys.exit(f"need {report} (run the study first) and chromium on PATH")
    target = Path(__file__).resolve().parent / "report.png"
    size = "1200,1500"
    if source.suffix == ".html":
        target = Path(sys.argv[2]).resolve()
        size = sys.argv[3] if len(sys.argv) > 3 else "1000,560"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=5000",
                f"--screenshot={target}",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
