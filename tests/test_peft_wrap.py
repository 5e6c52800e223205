"""The one skeleton every wrapping PEFT method goes through (minift.peft.targets.wrap_targets):
targets by PEFT's suffix rule, everything checked before the model changes, and on any
error the model exactly as it was."""

import copy

import pytest
import torch
from test_adapters import tiny

from minift.peft import (
    AdapterConfig,
    IA3Config,
    LoRAConfig,
    UniPELTConfig,
    apply_adapters,
    apply_ia3,
    apply_lora,
    apply_unipelt,
)
from minift.peft.lora import LoRALinear
from minift.peft.targets import wrap_targets


def unchanged(model, before: dict, snapshot: str) -> bool:
    state = model.state_dict()
    return (
        str(model) == snapshot
        and state.keys() == before.keys()
        and all(torch.equal(v, before[k]) for k, v in state.items())
        and all(p.requires_grad for p in model.parameters())
        and not hasattr(model, "peft_config")
        and not any(attn._forward_pre_hooks for attn in model.modules())
    )


def lora_maker(r=2):
    return lambda name, module: LoRALinear(module, r=r, alpha=2 * r)


def test_wraps_what_the_suffix_rule_selects_and_nothing_else():
    model = tiny()
    names = wrap_targets(model, ["c_proj"], lora_maker())
    assert names == [f"transformer.h.{i}.{s}.c_proj" for i in (0, 1) for s in ("attn", "mlp")]
    assert [n for n, m in model.named_modules() if isinstance(m, LoRALinear)] == names


def test_an_error_anywhere_leaves_the_model_as_it_was():
    model = tiny()
    before, snapshot = copy.deepcopy(model.state_dict()), str(model)
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no linear layer; .*\['c_attn'"):
        wrap_targets(model, ["c_attn", "q_proj"], lora_maker())
    with pytest.raises(ValueError, match=r"\['transformer.h.5'\] match no module"):
        wrap_targets(model, ["c_attn"], lora_maker(), trainable_extra=["transformer.h.5"])
    built = []

    def fails_on_the_third(name, module):
        if len(built) == 2:
            raise TypeError("this layer cannot take it")
        built.append(name)
        return LoRALinear(module, r=2, alpha=4)

    with pytest.raises(TypeError, match=r"cannot wrap transformer.h.0.mlp.c_fc: this layer"):
        wrap_targets(model, ["c_attn", "c_fc"], fails_on_the_third)
    assert built == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]

    def refuse(names):
        raise ValueError(f"not these: {names[:1]}")

    with pytest.raises(ValueError, match=r"not these: \['transformer.h.0.attn.c_attn'\]"):
        wrap_targets(model, ["c_attn"], lora_maker(), check=refuse)
    with pytest.raises(ValueError, match="select both transformer.h.0 and transformer.h.0.mlp"):
        wrap_targets(model, ["h.0", "mlp"], lambda n, m: m, modules=True)
    assert unchanged(model, before, snapshot)


SAME_TWICE = {
    "lora": lambda m: apply_lora(m, LoRAConfig(r=2, target_modules=["c_attn"])),
    "ia3": lambda m: apply_ia3(m, IA3Config()),
    "houlsby": lambda m: apply_adapters(m, AdapterConfig("houlsby", 4)),
    "parallel": lambda m: apply_adapters(m, AdapterConfig("parallel", 4)),
}


@pytest.mark.parametrize("method", list(SAME_TWICE))
def test_the_same_adapter_twice_on_a_layer_is_refused(method, tmp_path):
    """Its tensors would have the same names as the first's, so a saved adapter could not
    hold both (before: wrapped twice, and the save silently kept one)."""
    model = SAME_TWICE[method](tiny())
    before, snapshot = copy.deepcopy(model.state_dict()), str(model)
    with pytest.raises(ValueError, match="already has a .* adapter named 'default'; give the new"):
        SAME_TWICE[method](model)
    assert str(model) == snapshot and len(model.peft_config["default"]) == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_lora_over_unipelts_gated_lora_needs_its_own_name():
    model = apply_unipelt(tiny(), UniPELTConfig(r=2, reduction_factor=4, num_virtual_tokens=2))
    with pytest.raises(ValueError, match="c_attn already has a GatedLoRALinear adapter"):
        apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"]))
    apply_lora(model, LoRAConfig(r=2, target_modules=["c_attn"], adapter_name="other"))


WRAPPING = {  # each with a config that a later layer refuses (n_inner = 20)
    "lora": (apply_lora, LoRAConfig(r=22, target_modules=["c_attn", "c_fc"])),  # c_fc: r <= 20
    "houlsby": (apply_adapters, AdapterConfig("houlsby", 8, target_modules=["c_proj", "c_fc"])),
    "parallel": (apply_adapters, AdapterConfig("parallel", 4, target_modules=["attn", "ln_2"])),
    "unipelt": (apply_unipelt, UniPELTConfig(r=2, reduction_factor=5, num_virtual_tokens=2)),
}


@pytest.mark.parametrize("method", list(WRAPPING))
def test_every_wrapping_method_is_all_or_none(method):
    """The first layers are built and fine; a later one fails; nothing is put in place."""
    apply, config = WRAPPING[method]
    model = tiny(n_inner=20)
    before, snapshot = copy.deepcopy(model.state_dict()), str(model)
    with pytest.raises(ValueError, match=r"cannot wrap transformer.h.0.(mlp|ln_2)"):
        apply(model, config)
    assert unchanged(model, before, snapshot)


@pytest.mark.parametrize(
    "apply, config",
    [
        (apply_lora, LoRAConfig),
        (apply_ia3, IA3Config),
        (apply_adapters, lambda **kw: AdapterConfig("houlsby", 4, **kw)),
        (apply_adapters, lambda **kw: AdapterConfig("parallel", 4, **kw)),
        (apply_unipelt, lambda **kw: UniPELTConfig(reduction_factor=4, **kw)),
    ],
)
def test_every_wrapping_method_checks_its_trainable_extras_first(apply, config):
    model = tiny()
    before, snapshot = copy.deepcopy(model.state_dict()), str(model)
    with pytest.raises(ValueError, match=r"\['transformer.h.7'\] match no module"):
        apply(model, config(trainable_extra=["head", "transformer.h.7"]))
    assert unchanged(model, before, snapshot)
    extra = apply(model, config(trainable_extra="transformer.h.1"))  # one name, not a list
    trainable = {n for n, p in extra.named_parameters() if p.requires_grad}
    assert "transformer.h.1.ln_1.weight" in trainable
    assert "transformer.h.0.ln_1.weight" not in trainable
