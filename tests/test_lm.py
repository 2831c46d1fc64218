"""Causal LMs on a tiny LLaMA built from config: response-only loss, the three metrics,
every method through a real trial, and an adapter that reloads to the same score."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import FILLER, LM_LORA, lm_runner, prepare_lm, run_card_code, tiny_config
from typer.testing import CliRunner

from peftsearch.pipelines.cli import app
from peftsearch.trials import TrialJob
from peftsearch.trials.file_transfer import write_folder
from peftsearch.trials.lm_data import IGNORE_INDEX
from peftsearch.trials.lm_eval import evaluate_lm, normalise_answer
from peftsearch.trials.model import Checkpoint, load_tokenizer


def test_only_response_tokens_count(tiny_llama_dir: Path, tiny_lm_data: dict[str, Path]) -> None:
    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    row = data.eval[0]
    prompt, answer = row["prompt_ids"], row["answer"]
    assert row["input_ids"][: len(prompt)] == prompt
    assert row["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    response = row["labels"][len(prompt) :]
    assert response[-1] == tokenizer.eos_token_id  # the model learns to stop
    assert tokenizer.decode(response[:-1]) == answer
    assert data.task == "causal-lm" and data.stats["too_long_rows"] == 0
    assert len(data.train) == 96 and len(data.eval) == 24


def test_prompts_lose_their_start_and_long_responses_are_dropped(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    rows = ["prompt,response", "the movie plot actors really opposite of good,bad"] * 3
    rows.append("opposite of good," + " ".join(["bad"] * 8))  # 8 words + EOS > max_length 6
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(rows) + "\n")
    data = prepare_lm(tiny_llama_dir, path, path, max_length=6)
    assert data.stats["too_long_rows"] == 2  # once from train, once from eval
    assert data.stats["truncated_prompts"] == 6
    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    kept = data.eval[0]
    assert tokenizer.decode(kept["prompt_ids"]) == "really opposite of good"  # the end kept
    assert len(kept["input_ids"]) == 6


def test_chat_messages_render_through_the_chat_template(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    tokenizer.chat_template = template
    path = tmp_path / "chat.jsonl"
    turns = [
        {"role": "user", "content": "opposite of good"},
        {"role": "assistant", "content": "bad"},
    ]
    path.write_text("\n".join(json.dumps({"messages": turns}) for _ in range(4)) + "\n")
    data = prepare_lm(
        tiny_llama_dir, path, path, messages_column="messages", tokenizer=tokenizer, max_length=32
    )
    row = data.eval[0]
    assert row["answer"] == "bad"
    # the template's words are not in the tiny vocab: they become <unk>, the rest survives
    assert tokenizer.decode(row["prompt_ids"]).split()[-5:] == [
        "opposite",
        "of",
        "good",
        "<unk>",
        "<unk>",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": turns[:1]}) + "\n")
    from peftsearch.errors import UserError

    with pytest.raises(UserError, match="last turn must be the assistant"):
        prepare_lm(tiny_llama_dir, bad, bad, messages_column="messages", tokenizer=tokenizer)


def test_normalised_answers() -> None:
    assert normalise_answer("  Paris\n") == normalise_answer("paris")
    assert normalise_answer("New   York") == "new york"
    assert normalise_answer("Paris.") != "paris"  # punctuation is part of the answer


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path, tiny_lm_data: dict[str, Path]) -> tuple[Any, Any, Any]:
    from transformers import AutoModelForCausalLM

    data = prepare_lm(tiny_llama_dir, tiny_lm_data["train"], tiny_lm_data["eval"])
    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    return model, data, tokenizer


def test_eval_loss_and_token_accuracy_are_the_models_own(lm: tuple[Any, Any, Any]) -> None:
    model, data, tokenizer = lm
    table = data.eval.select(range(8))
    metrics = evaluate_lm(
        model,
        table,
        metric="eval_loss",
        tokenizer=tokenizer,
        batch_size=3,
        pad_token_id=0,
        device="cpu",
    )
    loss_sum = counted = correct = 0.0
    for row in table:  # one row at a time, no padding: what the batched pass must equal
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor([row["labels"]])
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        n = int((labels[0, 1:] != IGNORE_INDEX).sum())
        loss_sum += float(out.loss) * n
        counted += n
        mask = labels[0, 1:] != IGNORE_INDEX
        correct += int((out.logits[0, :-1].argmax(-1)[mask] == labels[0, 1:][mask]).sum())
    assert metrics["eval_loss"] == pytest.approx(loss_sum / counted, rel=1e-4)
    assert metrics["token_accuracy"] == pytest.approx(correct / counted)
    assert metrics["accuracy"] == pytest.approx(1 / metrics["perplexity"])
    assert metrics["metric"] == "eval_loss"


def test_batched_left_padded_generation_matches_one_by_one(lm: tuple[Any, Any, Any]) -> None:
    """The answers are the model's own unpadded greedy outputs, so a correct batched,
    left-padded exact match scores 1.0; right padding or a misplaced cut would not."""
    model, data, tokenizer = lm
    table = data.eval.select(range(6))
    answers = []
    for row in table:
        ids = torch.tensor([row["prompt_ids"]])
        out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    table = table.remove_columns("answer").add_column("answer", answers)
    metrics = evaluate_lm(
        model,
        table,
        metric="exact_match",
        tokenizer=tokenizer,
        batch_size=4,
        pad_token_id=0,
        device="cpu",
        max_new_tokens=3,
    )
    assert metrics["exact_match"] == 1.0 == metrics["accuracy"]
    assert metrics["example"]["reference"] == answers[0]


METHOD_CONFIGS = {
    "lora": LM_LORA,
    "bottleneck_adapter": {
        "peft_type": "BOTTLENECK_ADAPTER",
        "task_type": "CAUSAL_LM",
        "bottleneck_size": 8,
        "target_modules": ["o_proj", "down_proj"],
    },
    "dora": {**LM_LORA, "use_dora": True},
    "ia3": {
        "peft_type": "IA3",
        "task_type": "CAUSAL_LM",
        "target_modules": ["k_proj", "v_proj", "down_proj"],
        "feedforward_modules": ["down_proj"],
    },
    "loha": {"peft_type": "LOHA", "task_type": "CAUSAL_LM", "r": 2, "target_modules": ["q_proj"]},
    "prompt_tuning": {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": 4,
    },
    "prefix_tuning": {
        "peft_type": "PREFIX_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": 4,
    },
}


@pytest.mark.parametrize("method", list(METHOD_CONFIGS))
def test_each_method_trains_and_its_adapter_reloads_to_the_same_score(
    method: str, lm: tuple[Any, Any, Any], tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, data, tokenizer = lm
    untrained = evaluate_lm(
        model,
        data.eval,
        metric="eval_loss",
        tokenizer=tokenizer,
        batch_size=16,
        pad_token_id=0,
        device="cpu",
    )
    runner = lm_runner(tiny_llama_dir, data, metric="exact_match")
    request = TrialJob(0, method, METHOD_CONFIGS[method], 5e-2, str(tmp_path), rungs=(4,))
    result = runner.run(request)
    assert result.status == "COMPLETE", result.error
    assert result.steps == 8
    assert result.metrics["eval_loss"] < untrained["eval_loss"]  # it learned something
    assert result.rungs and result.rungs[0][0] == 4  # the rung scored token accuracy
    assert set(result.metrics) >= {"exact_match", "token_accuracy", "eval_loss", "perplexity"}
    assert result.accuracy == result.metrics["exact_match"]
    assert result.precision == "fp32"
    # an export round trip: the saved adapter on a fresh base model scores the same
    write_folder(result.adapter_files, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    reloaded = PeftModel.from_pretrained(base, tmp_path)
    again = evaluate_lm(
        reloaded,
        data.eval,
        metric="exact_match",
        tokenizer=tokenizer,
        batch_size=16,
        pad_token_id=0,
        device="cpu",
        max_new_tokens=3,
    )
    assert again["exact_match"] == result.metrics["exact_match"]
    assert again["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-4)


def test_a_rung_scores_token_accuracy_unless_told_to_score_exact_match(
    lm: tuple[Any, Any, Any], tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """By default a rung of an exact-match search is one teacher-forced pass (token
    accuracy, no generation); ``rung_metric: exact_match`` generates there too. Either way
    the rung keeps every number the task reported (the causal-LM table reads both)."""
    _, data, _ = lm
    job = TrialJob(0, "lora", METHOD_CONFIGS["lora"], 5e-2, str(tmp_path), rungs=(4,))
    cheap = lm_runner(tiny_llama_dir, data, metric="exact_match").run(job)
    full = lm_runner(tiny_llama_dir, data, metric="exact_match", rung_metric="exact_match").run(
        dataclasses.replace(job, adapter_dir=str(tmp_path / "full"))
    )
    assert cheap.status == full.status == "COMPLETE"
    assert "exact_match" not in cheap.rung_metrics[0]
    assert cheap.rungs[0][1] == cheap.rung_metrics[0]["token_accuracy"]
    assert full.rungs[0][1] == full.rung_metrics[0]["exact_match"]
    # the same training either way: the rung's teacher-forced pass agrees
    assert full.rung_metrics[0]["token_accuracy"] == cheap.rung_metrics[0]["token_accuracy"]
    assert full.accuracy == cheap.accuracy


def test_a_rung_metric_the_task_lacks_is_one_error_naming_the_key(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_llama_dir, tiny_lm_data, tmp_path / "out")
    config["model"]["task"] = "causal-lm"
    config["search"]["early_stopping"] = {"rung_metric": "accuracy"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "search.early_stopping.rung_metric: 'accuracy' is not a metric of causal-lm" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_gradient_checkpointing_gives_the_same_training(
    lm: tuple[Any, Any, Any], tiny_llama_dir: Path
) -> None:
    _, data, _ = lm
    request = TrialJob(0, "lora", LM_LORA, 1e-2, None)
    plain = lm_runner(tiny_llama_dir, data, metric="token_accuracy").run(request)
    checkpointed = lm_runner(
        tiny_llama_dir, data, metric="token_accuracy", gradient_checkpointing=True
    ).run(request)
    assert checkpointed.status == "COMPLETE", checkpointed.error
    assert checkpointed.gradient_checkpointing and not plain.gradient_checkpointing
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-4)
    assert checkpointed.accuracy == pytest.approx(plain.accuracy)


def test_bf16_autocast_is_recorded_and_trains(
    lm: tuple[Any, Any, Any], tiny_llama_dir: Path
) -> None:
    _, data, _ = lm
    request = TrialJob(0, "lora", LM_LORA, 1e-2, None)
    result = lm_runner(tiny_llama_dir, data, metric="token_accuracy", precision="bf16").run(request)
    assert result.status == "COMPLETE", result.error
    assert result.precision == "bf16" and result.accuracy is not None


def demo_check(study: Path) -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from llm_demo_check import check

    return check(study)


def trial_rows_of(study: Path) -> list[dict[str, Any]]:
    from peftsearch.pipelines.api import load

    return load(study).rows


def test_a_causal_lm_search_names_its_metric_and_its_zero_shot_baseline(
    tiny_llama_dir: Path, tiny_lm_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_llama_dir, tiny_lm_data, tmp_path / "out")
    config["model"]["task"] = "causal-lm"
    config["space"] = {"methods": ["lora", "prefix_tuning"]}
    config["search"].update(n_trials=5, early_stopping=False)
    config["evaluation"] = {"metric": "exact_match", "max_new_tokens": 3}
    config["tracking"] = {"enabled": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "scored by exact match" in result.output
    assert "Without an adapter: exact match" in result.output
    assert "| best exact match 0." in result.output  # the progress line names the metric
    study = tmp_path / "out" / "tiny"
    pareto = json.loads((study / "pareto.json").read_text())
    assert pareto["metric"] == "exact_match"
    zero_shot = pareto["summary"]["baseline"]["base_model"]
    assert zero_shot["eval_rows"] == 24 and "perplexity" in zero_shot
    assert zero_shot["method"] == "no adapter: the base model, zero-shot"
    assert zero_shot["forgetting"] == 0.0  # the base model, by definition
    # 12 answers, each twice among the 24 eval prompts: always giving one scores 2/24
    common = pareto["summary"]["baseline"]["most_common_answer"]
    assert common["accuracy"] == pytest.approx(2 / 24) and common["eval_rows"] == 24
    import csv

    rows = [r for r in csv.DictReader((study / "trials.csv").open()) if r["status"] == "COMPLETE"]
    assert {r["metric"] for r in rows} == {"exact_match"}
    assert all(r["forgetting"] and r["adapter_bytes"] for r in rows)
    # six steps teach the tiny LLaMA no exact answers: nothing beats zero-shot, and
    # recommend says so in plain words (exit 0)
    advice = runner.invoke(app, ["recommend", str(study)])
    assert advice.exit_code == 0, advice.output
    said = " ".join(advice.output.split())
    assert said.startswith("No trial beats the model with no adapter (no adapter: always")
    assert "exact match 0.083" in said
    assert pareto["pareto"] == [] and pareto["summary"]["below_baseline"]
    # the LLM demo's live check (benchmarks/llm_demo_check.py) reads the same study: its
    # design trials against the most common answer, the best against zero-shot
    checked = demo_check(study)
    assert checked["zero_shot"] == zero_shot["accuracy"]
    assert checked["most_common_answer"] == pytest.approx(2 / 24)
    labels = [d["label"] for d in checked["design"]]
    assert labels and labels[0].startswith("lora") and len(set(labels)) == len(labels)
    assert {d["verdict"] for d in checked["design"]} <= {"at chance", "not finished"}
    assert not checked["meets_design"]
    assert checked["meets_margin"] == (checked["margin_over_zero_shot"] >= 0.40)
    # export: the card's code loads the adapter and generates the trial's own example,
    # prefix tuning's by forward passes (its cached generate gives other tokens)
    finished = [r for r in trial_rows_of(study) if r["status"] == "COMPLETE"]
    for method in ("lora", "prefix_tuning"):
        row = next(r for r in finished if r["method"] == method)
        out = tmp_path / f"export-{method}"
        exported = runner.invoke(
            app, ["export", str(study), "--trial", str(row["trial"]), "--out", str(out)]
        )
        assert exported.exit_code == 0, exported.output
        card = (out / "README.md").read_text()
        assert f"exact match on 24 eval prompts | {row['accuracy']:.4f}" in card
        assert ("model.generate(" in card) == (method == "lora")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_card_code(out)
        assert printed.getvalue().strip() == json.loads(row["example"])["generated"], method
    report = (study / "report.html").read_text()
    assert "Exact match vs trainable parameters" in report and "its answer" in report
    # --merge: LoRA folds into the causal LM; prefix tuning is refused in one plain line
    for method in ("lora", "prefix_tuning"):
        alone = runner.invoke(
            app,
            [
                "run",
                str(path),
                "--set",
                f"search.study_name={method}",
                "--set",
                f"space.methods=[{method}]",
                "--set",
                "search.n_trials=1",
            ],
        )
        assert alone.exit_code == 0, alone.output
    merged = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "out" / "lora"),
            "--trial",
            "0",
            "--out",
            str(tmp_path / "m"),
            "--merge",
        ],
    )
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "m" / "merged" / "config.json").is_file()
    refused = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "out" / "prefix_tuning"),
            "--trial",
            "0",
            "--out",
            str(tmp_path / "p"),
            "--merge",
        ],
    )
    assert refused.exit_code == 2 and "not a linear change" in refused.output
    assert "Traceback" not in refused.output


def test_a_prompt_template_builds_prompts_from_columns(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from peftsearch.errors import UserError

    path = tmp_path / "reviews.csv"
    path.write_text("text,category\ngood film,fresh\nbad film,rotten\ndull plot,rotten\n")
    data = prepare_lm(
        tiny_llama_dir,
        path,
        path,
        prompt_template="opposite of {text}",
        response_column="category",
        max_length=32,
    )
    tokenizer = load_tokenizer(Checkpoint(str(tiny_llama_dir)))
    assert tokenizer.decode(data.eval[0]["prompt_ids"]) == "opposite of good film"
    assert data.eval["answer"] == ["fresh", "rotten", "rotten"]
    with pytest.raises(UserError, match=r"\{review\}, which is not a column"):
        prepare_lm(
            tiny_llama_dir, path, path, prompt_template="{review}", response_column="category"
        )


def test_the_llm_example_config_is_valid_offline(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "llm.yaml"
    written = runner.invoke(app, ["init", str(path), "--example", "llm"])
    assert written.exit_code == 0, written.output
    checked = runner.invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "bottleneck_adapter" in checked.output and "causal-lm" in checked.output
    # no hand-set learning rates: the causal-LM task's own defaults apply
    import yaml

    from peftsearch.config import parse_config
    from peftsearch.trials.tasks import get_task

    raw = yaml.safe_load(path.read_text())
    sections = [s for s in raw["space"].values() if isinstance(s, dict)]
    assert sections and all("lr" not in section for section in sections)
    config = parse_config(raw)
    for method in config.space.methods:
        task_lr = get_task("causal-lm").method_defaults[method]["lr"]
        lr = getattr(config.space, method).lr
        assert (lr.low, lr.high) == (task_lr["low"], task_lr["high"]), method
    wrong = runner.invoke(app, ["init", str(tmp_path / "x.yaml"), "--example", "gpt"])
    assert wrong.exit_code == 2 and "--example" in wrong.output


def own_greedy(model: Any, prompt: list[int], steps: int, eos: int) -> list[int]:
    """The model's own greedy continuation: one unpadded full forward pass per token."""
    import torch

    ids, new = list(prompt), []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).logits
        token = int(logits[0, -1].argmax())
        ids.append(token)
        new.append(token)
        if token == eos:
            break
    return new


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "lora"])
def test_greedy_answers_are_the_models_own_continuation_in_any_batch(
    lm: tuple[Any, Any, Any], method: str
) -> None:
    """Exact match generates what the model itself continues with, whatever the batch:
    peft's virtual-token methods too, whose cached ``generate`` on transformers 5 gives
    other tokens (they decode by full forward passes, trials/lm_eval.py)."""
    import copy

    import torch
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    from peftsearch.trials.lm_eval import generates_with_cache, greedy_ids

    base, data, tokenizer = lm
    config = {
        "prompt_tuning": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        "prefix_tuning": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
        "lora": LoraConfig(
            task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    }[method]
    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(base), config).eval()
    if method != "lora":  # a trained prompt, not peft's small initial one
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0.0, 1.0)
    assert generates_with_cache(model) == (method == "lora")
    # 0..5 more filler words in front: prompts of six lengths, so a batch is padded
    filler = tokenizer.convert_tokens_to_ids(FILLER[:5])
    prompts = [filler[:i] + list(p) for i, p in enumerate(data.eval["prompt_ids"][:6])]
    assert len({len(p) for p in prompts}) == 6
    eos = tokenizer.eos_token_id
    with torch.inference_mode():
        own = [own_greedy(model, p, 4, eos) for p in prompts]
        for batch in (1, 6):
            found = [
                ids[: len(mine)]
                for start in range(0, len(prompts), batch)
                for ids, mine in zip(
                    greedy_ids(
                        model,
                        prompts[start : start + batch],
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=eos,
                        max_new_tokens=4,
                        device="cpu",
                    ),
                    own[start : start + batch],
                    strict=True,
                )
            ]
            assert found == own, (method, batch)
