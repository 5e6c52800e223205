"""The method registry: every fine-tuning method once, each setting with one default, the
same table for `minift finetune`, the Python API and re-applying a saved adapter."""

import dataclasses
import subprocess
import sys

import pytest
import torch

from minift.data.tasks import DEFAULT_TASK
from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier
from minift.peft.core import adapter_layers
from minift.peft.lora import LoRALinear
from minift.peft.methods import (
    BUILTIN,
    METHODS,
    Method,
    NoOptions,
    apply_method,
    get_method,
    register_method,
)
from minift.recipes.demo import DEFAULT_METHODS, PROBE_HEAD_LR
from minift.recipes.finetune import FinetuneConfig, finetune, train_config
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task

EXPECTED = {
    "full", "scratch", "lora", "dora", "layerwise", "bitfit", "layernorm", "probe", "llrd",
    "gradual", "adapter", "ia3", "prefix", "prompt", "unipelt", "hybrid",
}  # fmt: skip


def tiny_classifier() -> SequenceClassifier:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16))
    return SequenceClassifier(gpt, 3)


def test_every_method_is_registered_once_with_its_options_lr_and_description():
    names = [m.name for m in BUILTIN]
    assert sorted(names) == sorted(EXPECTED) and len(names) == len(set(names))
    for m in BUILTIN:
        assert METHODS[m.name] is m
        assert dataclasses.is_dataclass(m.config), m.name
        assert m.lr > 0 and m.description, m.name
        fields = {f.name for f in dataclasses.fields(m.config)}
        assert set(m.defaults) <= fields, f"{m.name}: defaults for unknown fields"
        assert set(m.option_defaults()) == fields


def test_importing_everything_registers_nothing_more():
    """No module adds a method as a side effect of being imported (the CLI imports all)."""
    code = (
        "import minift.cli, minift.recipes.demo, minift.recipes.distill, minift.recipes.saved\n"
        "minift.cli.build_parser()\n"
        "from minift.peft.methods import BUILTIN, METHODS\n"
        "assert list(METHODS) == [m.name for m in BUILTIN], sorted(METHODS)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lora_targets_have_one_default_for_finetune_and_for_reapplying():
    """`finetune --method lora`, apply_method (how a saved adapter is re-applied) and the
    registry's listed default all wrap the same layers."""
    listed = METHODS["lora"].option_defaults()["target_modules"]
    assert listed == ["c_attn", "attn.c_proj"]
    reapplied = apply_method(tiny_classifier(), "lora", {})
    wrapped = sorted(n.split(".", 4)[-1] for n, m in adapter_layers(reapplied))
    assert wrapped == ["attn.c_attn", "attn.c_attn", "attn.c_proj", "attn.c_proj"]

    base, enc = load_base(progress=False, verbose=False)
    config = FinetuneConfig("lora", train=train_config(steps=1, eval_every=1, progress=False))
    result = finetune(get_task(DEFAULT_TASK), base, enc, config, keep_model=True)
    trained = [n for n, m in result.model.named_modules() if isinstance(m, LoRALinear)]
    assert sorted(n.split(".", 4)[-1] for n in trained) == wrapped
    assert result.options["target_modules"] == listed


def test_options_override_the_methods_defaults_and_unknown_ones_are_refused():
    config = METHODS["lora"].make_config({"r": 4})
    assert (config.r, config.target_modules) == (4, ["c_attn", "attn.c_proj"])
    assert METHODS["dora"].make_config().use_dora is True
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['rank'\].*'r'"):
        METHODS["lora"].make_config({"rank": 4})
    with pytest.raises(ValueError, match="unknown method 'lorra'"):
        get_method("lorra")


def test_register_method_adds_a_variant_but_never_replaces_a_builtin():
    def head_only(model, options, run):
        model.requires_grad_(False)
        model.head.requires_grad_(True)

    variant = Method("test-head-only", NoOptions, 1e-2, "the head alone", head_only)
    try:
        assert register_method(variant) is variant and METHODS["test-head-only"] is variant
        with pytest.raises(ValueError, match="built-in"):
            register_method(dataclasses.replace(variant, name="lora"))
        assert METHODS["lora"] in BUILTIN
    finally:
        METHODS.pop("test-head-only", None)


def test_apply_method_reapplies_adapters_only():
    with pytest.raises(ValueError, match="not a PEFT adapter method"):
        apply_method(tiny_classifier(), "full", {})
    model = apply_method(tiny_classifier(), "ia3", {})
    assert model.peft_config["default"][0]["method"] == "ia3"


@pytest.mark.parametrize(
    "sweep_file, head, table",
    [
        ("lr_sweep.json", "words", {name: m.lr for name, m in METHODS.items()}),
        ("lr_sweep_probe.json", "probe", PROBE_HEAD_LR),
    ],
)
def test_default_learning_rates_are_the_ones_the_sweep_chose(sweep_file, head, table):
    """scripts/sweep_lr.py chose each demo method's rate, once per head start (the
    registry's with the label-word head, the demo's LP-FT table with the probe's); each
    table must say what its sweep chose."""
    import json
    import pathlib

    sweep = pathlib.Path(__file__).resolve().parent.parent / "docs" / "results" / sweep_file
    saved = json.loads(sweep.read_text())
    assert saved.get("head", "words") == head
    chosen = saved["methods"]
    assert set(chosen) >= set(DEFAULT_METHODS) - {"probe"}
    if head == "probe":
        assert set(PROBE_HEAD_LR) == set(chosen)
    for name, row in chosen.items():
        assert table[name] == pytest.approx(row["best_lr"], rel=1e-6), name
        # the choice is inside the grid, not at an edge that was never extended past
        lrs = sorted(float(k) for k in row["scores"])
        assert len(lrs) >= 3 and lrs[0] < row["best_lr"] < lrs[-1] or len(lrs) == 6, name
