"""The bottleneck adapter is a real peft method: registered in peft's PeftType, zero at
the start, saved and reloaded by peft, refused by merge, on an encoder and a decoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftsearch.spaces import get_method, inspect_model
from peftsearch.trials import TrainSettings, TrialJob, TrialRunner
from peftsearch.trials.model import BaseModelSource, Checkpoint


def test_peft_knows_the_method_by_name() -> None:
    """What a peft upgrade must keep: PeftType extends, and peft's own registry,
    config lookup and tuner mapping accept the new name."""
    from peft import get_peft_config
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils.peft_types import PeftType

    from peftsearch.trials.bottleneck import BottleneckConfig, BottleneckModel

    assert PeftType["BOTTLENECK_ADAPTER"] == "BOTTLENECK_ADAPTER"
    assert PeftType("BOTTLENECK_ADAPTER") in list(PeftType)
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.BOTTLENECK_ADAPTER] is BottleneckConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.BOTTLENECK_ADAPTER] is BottleneckModel
    config = get_peft_config({"peft_type": "BOTTLENECK_ADAPTER", "target_modules": ["x"]})
    assert isinstance(config, BottleneckConfig)


def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
        )
    ).eval()


def test_starts_at_the_base_model_trains_saves_reloads_and_refuses_merge(tmp_path: Path) -> None:
    from peft import PeftModel, get_peft_config, get_peft_model

    base = _bert()
    info = inspect_model(base)
    assert info.attention_out == ("attention.output.dense",)
    choice_config = get_method("bottleneck_adapter").calibration_config(info)
    choice_config["modules_to_save"] = ["classifier"]
    ids = torch.randint(1, 50, (3, 7))
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = get_peft_model(_bert(), get_peft_config(choice_config))
    wrapped = [n for n, m in model.named_modules() if type(m).__name__ == "BottleneckLayer"]
    # BERT's FFN output.dense is a suffix of attention.output.dense: both, per layer
    assert len(wrapped) == 4, wrapped
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-6)  # up is zero
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(input_ids=ids, labels=torch.tensor([0, 1, 1])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert not torch.allclose(after, before)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(_bert(), tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, after, atol=1e-6)
    with pytest.raises(ValueError, match="cannot be merged"):
        reloaded.merge_and_unload()


def test_import_peftsearch_is_enough_to_load_one(tmp_path: Path) -> None:
    """A user's script: import peftsearch first, then peft, then load the adapter."""
    from peft import get_peft_config, get_peft_model

    base = _bert()
    base.save_pretrained(tmp_path / "base")
    config = get_method("bottleneck_adapter").calibration_config(inspect_model(base))
    get_peft_model(base, get_peft_config(config)).save_pretrained(tmp_path / "adapter")
    script = (
        "import importlib.util\n"
        "import peftsearch\n"
        "importlib.util.find_spec('peft')  # an availability check, as transformers makes\n"
        "from peft import PeftModel\n"
        "from transformers import BertForSequenceClassification\n"
        f"base = BertForSequenceClassification.from_pretrained({str(tmp_path / 'base')!r})\n"
        f"model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r})\n"
        "print(type(model.base_model).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "BottleneckModel"


def test_a_classifier_trial_with_a_bottleneck_adapter(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from helpers import prepare

    data = prepare(
        tiny_model_dir,
        "sequence-classification",
        train=tiny_data["train"],
        eval=tiny_data["eval"],
        max_length=16,
    )
    source = BaseModelSource(
        Checkpoint(str(tiny_model_dir)),
        num_labels=2,
        label_names=data.label_names,
        pad_token_id=data.pad_token_id,
        task=data.task,
    )
    from peftsearch.spaces import ModelInfo

    info: ModelInfo = inspect_model(source.fresh_copy())
    config = get_method("bottleneck_adapter").calibration_config(info)
    runner = TrialRunner(
        source, data, TrainSettings(max_steps=6, batch_size=8), device="cpu", device_name="cpu"
    )
    result = runner.run(TrialJob(0, "bottleneck_adapter", config, 1e-2, str(tmp_path)))
    assert result.status == "COMPLETE", result.error
    assert 0 < result.trainable_params < result.total_params  # type: ignore[operator]
    assert "adapter_config.json" in result.adapter_files


def test_an_exported_bottleneck_adapter_card_runs_as_written(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The card's code imports peftsearch first, which registers the adapter type."""
    import yaml
    from helpers import run_card_code, tiny_config
    from typer.testing import CliRunner

    from peftsearch.pipelines.cli import app

    config = tiny_config(tiny_model_dir, tiny_data, tmp_path / "out")
    config["space"] = {"methods": ["bottleneck_adapter"]}
    config["search"]["n_trials"] = 1
    config["tracking"] = {"enabled": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(path)])
    import traceback

    assert ran.exit_code == 0, "".join(traceback.format_exception(*ran.exc_info))
    out = tmp_path / "export"
    exported = runner.invoke(
        app, ["export", str(tmp_path / "out" / "tiny"), "--trial", "0", "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.output
    assert "import peftsearch" in (out / "README.md").read_text()
    loaded = run_card_code(out)
    assert type(loaded["model"].base_model).__name__ == "BottleneckModel"
