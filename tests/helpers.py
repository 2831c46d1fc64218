"""Helpers shared by the tests (importable; fixtures live in conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak"]
# A small LoRA on the tiny BERT, for tests that run single trials.
LORA = {
    "peft_type": "LORA",
    "task_type": "SEQ_CLS",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["query", "value"],
}
FILLER = ["the", "movie", "was", "plot", "actors", "really", "quite", "film", "story", "a"]


# LoRA on the tiny causal LM's query and value projections
LM_LORA = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
}


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose label is carried by three sentiment words beside a filler: the
    tiny BERT learns them within a few steps (at LoRA's larger learning rates), so a
    study's trials beat the model with no adapter, as real ones do."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        cues = rng.choices(POSITIVE if label == "pos" else NEGATIVE, k=3)
        words = [*rng.sample(FILLER, 1), *cues]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def tiny_config(
    model_dir: Path, data: dict[str, Path], out: Path, **sections: Any
) -> dict[str, Any]:
    """A complete config dict for the tiny model; ``sections`` override whole sections."""
    config: dict[str, Any] = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data["train"]), "eval": str(data["eval"]), "max_length": 16},
        # confirmation (search/confirm.py) has its own tests; off here, for speed
        "search": {"study_name": "tiny", "n_trials": 3, "seed": 0, "confirm": False},
        # the tiny BERT learns at these (tiny_model_dir); real models want the defaults
        "space": {
            "methods": ["lora", "ia3", "prompt_tuning"],
            "lora": {"lr": {"low": 2e-2, "high": 6e-2}},
            "ia3": {"lr": {"low": 1e-2, "high": 3e-2}},
        },
        "resources": {"use_ray": False},
        "training": {"max_steps": 6, "batch_size": 8, "eval_batch_size": 32, "device": "cpu"},
        "output_dir": str(out),
    }
    config.update(sections)
    return config


def run_card_code(folder: Path) -> dict[str, Any]:
    """Run the first python block of an exported model card as a user would: from inside
    the export folder, with its one placeholder replaced by the folder's path."""
    import os
    import re

    card = (folder / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", card, re.S)
    assert match, "the model card has no python block"
    code = match.group(1).replace("path/to/this/folder", str(folder))
    namespace: dict[str, Any] = {}
    before = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(code, str(folder / "README.md"), "exec"), namespace)
    finally:
        os.chdir(before)
    return namespace


def ray_test_cluster(**head_args: Any) -> Any:
    """A ``ray.cluster_utils.Cluster`` joined by this process, its files in one short temp
    folder (``RAY_TMPDIR``): a fresh machine has no ``/tmp/ray``, and Unix socket paths
    must stay under 108 bytes, which pytest's deep tmp_path breaks. A generator: yield
    the cluster, then shut everything down and remove the folder."""
    import os
    import shutil
    import tempfile

    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ray-")
    (Path(temp) / "ray").mkdir()
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    try:
        cluster = Cluster(initialize_head=True, head_node_args={**head_args, "temp_dir": temp})
        yield cluster, temp
        ray.shutdown()
        cluster.shutdown()
    finally:
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)


def prepare(
    model_dir: Path, task: str, *, seed: int = 0, tokenizer: Any = None, **data: Any
) -> Any:
    """The task's tokenized splits of a ``data`` section (its keys as keyword arguments;
    paths may be Path objects), as a run prepares them."""
    from peftsearch.config import data_config_class
    from peftsearch.trials.model import Checkpoint, load_tokenizer
    from peftsearch.trials.tasks import get_task

    # unvalidated, so a test may go below the config's bounds (a 6-token max_length)
    section = data_config_class().model_construct(
        **{k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    )
    tokenizer = tokenizer or load_tokenizer(Checkpoint(str(model_dir)))
    return get_task(task).prepare(section, seed=seed, tokenizer=tokenizer)


def task_scores(model: Any, data: Any, metric: str) -> dict[str, Any]:
    """Every metric the data's task reports for ``model`` on the eval split, on the CPU."""
    from peftsearch.trials.tasks import EvalContext, get_task

    context = EvalContext(
        batch_size=32,
        pad_token_id=data.pad_token_id,
        device="cpu",
        precision="fp32",
        label_names=data.label_names,
    )
    return get_task(data.task).evaluate(model, data.eval, context, metric=metric)


def prepare_lm(model_dir: Path, train: Path, eval: Path | None, **kwargs: Any) -> Any:
    """Prompt/response CSVs tokenized for the tiny causal LM (``kwargs`` override)."""
    options: dict[str, Any] = {"max_length": 16, **kwargs}
    return prepare(model_dir, "causal-lm", train=train, eval=eval, **options)


def lm_runner(model_dir: Path, data: Any, **settings: Any) -> Any:
    """A trial runner on the tiny causal LM (``settings`` override TrainSettings)."""
    from peftsearch.trials import TrainSettings, TrialRunner
    from peftsearch.trials.model import BaseModelSource, Checkpoint

    source = BaseModelSource(
        Checkpoint(str(model_dir)), num_labels=0, label_names=[], pad_token_id=0, task="causal-lm"
    )
    options = {"max_steps": 8, "batch_size": 8, "eval_batch_size": 16, "max_new_tokens": 3}
    options.update(settings)
    return TrialRunner(source, data, TrainSettings(**options), device="cpu", device_name="cpu")


def tiny_runner(
    model_dir: Path, data: dict[str, Path], out: Path, **runner_options: Any
) -> tuple[Any, Any]:
    """A worker's trial runner on the tiny BERT (CPU) and the data it trains on, as
    ``tiny_config`` describes them; ``runner_options`` go to ``TrialRunner``."""
    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import build_data, build_model_source, build_settings
    from peftsearch.trials import TrialRunner

    config = parse_config(tiny_config(model_dir, data, out))
    prepared = build_data(config)
    runner = TrialRunner(
        build_model_source(config, prepared),
        prepared,
        build_settings(config),
        device="cpu",
        device_name="cpu",
        **runner_options,
    )
    return runner, prepared
