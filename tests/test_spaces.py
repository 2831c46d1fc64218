"""Contract suite: every registered method goes through the same checks on real peft."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import optuna
import pytest
import torch

from peftsearch.config import space_config_class
from peftsearch.spaces import ModelInfo, get_method, inspect_model, method_names, sample_choice


def tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
    )


def _llama_config(**extra: int) -> Any:
    from transformers import LlamaConfig

    torch.manual_seed(0)
    return LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=0,
        **extra,
    )


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaForSequenceClassification

    return LlamaForSequenceClassification(_llama_config(num_labels=2))


def tiny_llama_lm() -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(_llama_config())


# arch: (builder, peft task type)
MODELS = {
    "bert": (tiny_bert, "SEQ_CLS"),
    "llama": (tiny_llama, "SEQ_CLS"),
    "llama-lm": (tiny_llama_lm, "CAUSAL_LM"),
}


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[torch.nn.Module, ModelInfo]]:
    return {
        name: (build(), inspect_model(build(), task_type=task))
        for name, (build, task) in MODELS.items()
    }


def sampled_trials(method: str, info: ModelInfo, n: int) -> list:
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    options = getattr(space_config_class()(), method)
    choices = []
    for _ in range(n):
        trial = study.ask()
        choices.append((trial, sample_choice(trial, {method: options}, info)))
    return choices


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("arch", list(MODELS))
def test_method_contract(method: str, arch: str, models: dict) -> None:
    from peft import get_peft_config, get_peft_model

    model, info = models[arch]
    reason = get_method(method).supports(info)
    if reason is not None:
        # Only prefix tuning may refuse (test_prefix_tuning_refusals says why); the rest of
        # the contract does not apply to a refused method, so say so instead of passing.
        assert method == "prefix_tuning", reason
        pytest.skip(f"{method} refuses {arch}: {reason}")
    for trial, choice in sampled_trials(method, info, 3):
        assert choice.method == method
        assert all(name.startswith(f"{method}.") for name in trial.params), trial.params
        assert choice.learning_rate > 0
        peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(dict(choice.peft_config)))
        trainable, total = peft_model.get_nb_trainable_parameters()
        assert 0 < trainable < total
        frozen_base = [
            n
            for n, p in peft_model.named_parameters()
            if p.requires_grad and "modules_to_save" not in n
        ]
        assert frozen_base, "the adapter itself must train"
        ids = torch.randint(1, 50, (2, 7))
        causal = info.task_type == "CAUSAL_LM"
        labels = ids if causal else torch.tensor([0, 1])
        out = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        trained = [p for p in peft_model.parameters() if p.requires_grad and p.grad is not None]
        assert trained and any(bool(p.grad.abs().sum() > 0) for p in trained if p.grad is not None)
        if causal:  # what an exact-match evaluation does: the adapter shapes generation
            generated = peft_model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3
            )
            assert generated.shape[0] == 2 and 7 < generated.shape[1] <= 10
        assert get_method(method).describe(choice.summary).strip()


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("arch", list(MODELS))
def test_initial_design_is_each_placements_smallest_adapter_at_the_top_lr(
    method: str, arch: str, models: dict
) -> None:
    """Every config of a method's initial design is one ``suggest`` can express, at the
    top of the learning-rate range, one per placement, and no config of the space with
    the same placement trains fewer parameters."""
    from peft import get_peft_config, get_peft_model

    model, info = models[arch]
    space = get_method(method)
    if space.supports(info) is not None:
        pytest.skip(f"{method} refuses {arch}")
    options = getattr(space_config_class()(), method)
    design = space.initial_configs(options, info)
    assert design
    lists = {k: v for k, v in options if isinstance(v, list)}
    placement = next((k for k in ("targets", "placement") if k in lists), None)
    assert len(design) == (len(lists[placement]) if placement else 1)

    def trainable(params: dict[str, Any]) -> int:
        choice = sample_choice(optuna.trial.FixedTrial(params), {method: options}, info)
        peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(choice.peft_config))
        return int(peft_model.get_nb_trainable_parameters()[0])

    for params in design:
        choice = sample_choice(optuna.trial.FixedTrial(params), {method: options}, info)
        assert choice.learning_rate == options.lr.high
        smallest = trainable(params)
        for values in itertools.product(*lists.values()):
            other = {f"{method}.{k}": v for k, v in zip(lists, values, strict=True)}
            if placement and other[f"{method}.{placement}"] != params[f"{method}.{placement}"]:
                continue
            assert smallest <= trainable({**params, **other}), (params, other)


def test_initial_design_tries_every_method_before_a_second_placement(models: dict) -> None:
    from peftsearch.spaces import initial_design

    _, info = models["bert"]
    space = space_config_class()()
    design = initial_design({m: getattr(space, m) for m in ("lora", "ia3", "prompt_tuning")}, info)
    assert [label for label, _, _ in design] == [
        "lora targets=qv",
        "ia3 targets=kv+ffn",
        "prompt_tuning",
        "lora targets=attention",
        "ia3 targets=kv",
        "lora targets=attention+mlp",
    ]
    lora = design[0][2]
    assert lora["method"] == "lora" and lora["lora.rank"] == 4 and lora["lora.dropout"] == 0.0
    assert lora["lora.layers"] == "top-half" and lora["lora.alpha_ratio"] == 2.0


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("arch", list(MODELS))
def test_method_owns_its_words_merging_and_calibration(
    method: str, arch: str, models: dict
) -> None:
    """What reports, export and the cost calibration ask of a method, its plug-in says."""
    from peft import get_peft_config, get_peft_model

    model, info = models[arch]
    space = get_method(method)
    assert space.display_name.strip() and isinstance(space.mergeable, bool)
    if space.supports(info) is not None:
        pytest.skip(f"{method} refuses {arch}")
    config = space.calibration_config(info)
    peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(dict(config)))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert 0 < trainable < total
    if space.mergeable:
        merged = peft_model.merge_and_unload()
        assert not any(
            "lora_" in n or "ia3_" in n or "hada_" in n for n, _ in merged.named_parameters()
        )


def test_prefix_tuning_refusals(models: dict) -> None:
    """Encoders have no KV cache; transformers 5's sequence classifiers no longer take
    the ``past_key_values`` that peft hands the prefix over as."""
    prefix = get_method("prefix_tuning")
    assert "is an encoder" in prefix.supports(models["bert"][1])
    llama = models["llama"][1]
    assert llama.takes_past_key_values or "past_key_values" in prefix.supports(llama)
    assert prefix.supports(models["llama-lm"][1]) is None  # peft's causal-LM path runs


def test_inspect_names_come_from_the_model(models: dict) -> None:
    bert, llama = models["bert"][1], models["llama"][1]
    assert bert.layers_pattern == "layer" and bert.num_layers == 4
    assert bert.query_value == ("attention.self.query", "attention.self.value")
    assert bert.mlp == ("intermediate.dense", "output.dense")
    assert llama.layers_pattern == "layers"
    assert llama.query_value == ("self_attn.q_proj", "self_attn.v_proj")
    assert llama.mlp_down == ("mlp.down_proj",)
    assert llama.decoder_only and not bert.decoder_only


def test_gpt2_fused_attention() -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    info = inspect_model(
        GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    )
    assert info.query_value == ("attn.c_attn",)
    assert info.layers_pattern == "h"


def test_ambiguous_suffix_is_qualified_by_layer(models: dict) -> None:
    """BERT's MLP `output.dense` is a suffix of `attention.output.dense` too."""
    from peft import LoraConfig, get_peft_model

    model, info = models["bert"]
    names = info.target_modules(("output.dense",), [2, 3])
    assert names == ["layer.2.output.dense", "layer.3.output.dense"]
    assert info.target_modules(("attention.output.dense", "output.dense"), [0]) == ["output.dense"]
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=2, target_modules=names, task_type="SEQ_CLS")
    )
    adapted = {n.split(".lora_A")[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert adapted == {
        "base_model.model.bert.encoder.layer.2.output.dense",
        "base_model.model.bert.encoder.layer.3.output.dense",
    }


@pytest.mark.parametrize(
    "subset, expected",
    [("top-half", {2, 3}), ("top-quarter", {3}), ("bottom-half", {0, 1}), ("all", {0, 1, 2, 3})],
)
def test_layer_subset_is_respected(subset: str, expected: set[int], models: dict) -> None:
    from peft import get_peft_config, get_peft_model

    model, info = models["bert"]
    study = optuna.create_study()
    trial = study.ask(fixed_distributions={})
    options = space_config_class()().lora.model_copy(
        update={"layers": [subset], "targets": ["attention+mlp"]}
    )
    choice = sample_choice(trial, {"lora": options}, info)
    peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(dict(choice.peft_config)))
    layers = {
        int(n.split("layer.")[1].split(".")[0])
        for n, _ in peft_model.named_parameters()
        if "lora_A" in n
    }
    assert layers == expected
    adapted = {n for n, _ in peft_model.named_parameters() if "lora_A" in n and "layer.3." in n}
    if 3 in expected:
        assert len(adapted) == len(info.block_linears)


def test_ia3_layer_subset(models: dict) -> None:
    from peft import get_peft_config, get_peft_model

    model, info = models["bert"]
    trial = optuna.create_study().ask()
    options = space_config_class()().ia3.model_copy(
        update={"layers": ["top-half"], "targets": ["kv+ffn"]}
    )
    choice = sample_choice(trial, {"ia3": options}, info)
    peft_model = get_peft_model(copy.deepcopy(model), get_peft_config(dict(choice.peft_config)))
    scaled = sorted(
        n.removeprefix("base_model.model.bert.encoder.").split(".ia3_l")[0]
        for n, _ in peft_model.named_parameters()
        if "ia3_l" in n
    )
    assert scaled == [
        f"layer.{i}.{m}"
        for i in (2, 3)
        for m in ("attention.self.key", "attention.self.value", "output.dense")
    ]


def test_model_info_round_trips(models: dict) -> None:
    info = models["llama"][1]
    assert ModelInfo.from_dict(info.to_dict()) == info


def test_a_task_can_have_its_design_span_the_most_blocks(models: dict, tmp_path: Any) -> None:
    """A causal LM's LoRA-family design trials span every block (its table: on the top
    half they stay near chance); IA3's stays the smallest; the encoder's is unchanged."""
    from peftsearch.config import parse_config
    from peftsearch.pipelines.builders import build_design_configs
    from peftsearch.spaces import initial_design
    from peftsearch.trials.tasks import get_task

    _, info = models["llama"]
    space = space_config_class()()
    methods = {m: getattr(space, m) for m in ("lora", "dora", "ia3")}
    most = get_task("causal-lm").design_most_blocks
    assert {"lora", "dora"} <= most and "ia3" not in most
    fewest = {label: params for label, _, params in initial_design(methods, info)}
    spanned = {label: params for label, _, params in initial_design(methods, info, most)}
    assert fewest.keys() == spanned.keys()
    for label, params in spanned.items():
        method = params["method"]
        if method == "ia3":
            assert params == fewest[label]
        else:
            assert fewest[label][f"{method}.layers"] == "top-half"
            assert params == {**fewest[label], f"{method}.layers": "all"}
    assert get_task("sequence-classification").design_most_blocks == frozenset()

    # a causal-LM config's design, as the search queues it
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "a", "response": "b"}\n')
    config = parse_config(
        {
            "model": {"name_or_path": "some/model", "task": "causal-lm"},
            "data": {"train": str(train)},
            "space": {"methods": ["lora", "dora", "ia3"]},
        }
    )
    built = build_design_configs(config, info)
    assert built == initial_design(config.method_options(), info, most)
    layers = {params["method"]: params[f"{params['method']}.layers"] for _, _, params in built}
    assert layers == {"lora": "all", "dora": "all", "ia3": "top-half"}
