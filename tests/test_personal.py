"""Personalization: simulated users, serving many users' adapters in one batch, the shared
score, a user's adapter learning their hidden preference, and the commands."""

import json

import pytest
import torch

import minift.cli
from minift.errors import UserError
from minift.model import GPT, GPTConfig
from minift.peft import LoRAConfig, apply_lora
from minift.personal import (
    USERS,
    get_user,
    preference_correct,
    stack_adapters,
    user_pairs,
    users,
)
from minift.personal.users import agreement


def tiny() -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=71, block_size=32, n_layer=2, n_head=3, n_embd=24)
    return GPT(cfg).double().eval()


def adapted(base: GPT, r: int, seed: int, targets=("c_attn", "c_fc")) -> GPT:
    """A LoRA copy of base with random (non-zero) B, so each user's model really differs."""
    import copy

    torch.manual_seed(seed)
    model = apply_lora(
        copy.deepcopy(base), LoRAConfig(r=r, alpha=2 * r, target_modules=list(targets))
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model.eval()


# ------------------------------------------------------------------------ users
def test_each_user_agrees_with_their_own_pairs_and_brief_and_verbose_disagree():
    pairs = {u: user_pairs(u, "val", 40) for u in USERS}
    for u in USERS:
        assert len(pairs[u]) >= 30
        assert agreement(USERS[u], pairs[u]) == 1.0
    # Opposite tastes: brief never shares one of verbose's choices, and vice versa.
    assert agreement(USERS["brief"], pairs["verbose"]) == 0.0
    assert agreement(USERS["verbose"], pairs["brief"]) == 0.0
    # A topic user is indifferent to most of another topic user's pairs.
    assert agreement(USERS["storage"], pairs["net"]) < 0.3


def test_pairs_are_deterministic_and_train_and_val_share_no_response():
    assert user_pairs("storage", "train", 20, seed=3) == user_pairs("storage", "train", 20, seed=3)
    train = {p[k] for p in user_pairs("text", "train", 48) for k in ("chosen", "rejected")}
    val = {p[k] for p in user_pairs("text", "val", 48) for k in ("chosen", "rejected")}
    assert not train & val


def test_unknown_user_lists_the_valid_ones():
    with pytest.raises(UserError, match="storage, text, net, brief, verbose"):
        get_user("alice")
    with pytest.raises(UserError, match="at least one"):
        user_pairs("brief", n=0)


# ------------------------------------------------------------------------ serving
def test_one_batch_of_many_users_equals_each_users_own_model():
    """Row b through stacked adapter ids[b] gives exactly user ids[b]'s own model's logits;
    ranks differ (2 and 5, padded inside) and -1 rows get the base model."""
    base = tiny()
    models = [adapted(base, 2, seed=1), adapted(base, 5, seed=2), adapted(base, 3, seed=3)]
    served = stack_adapters(base, models)
    idx = torch.randint(0, 71, (5, 9))
    ids = [1, 0, -1, 2, 1]
    with users(served, ids):
        out = served(idx).logits
    for row, uid in enumerate(ids):
        want = (models[uid] if uid >= 0 else base)(idx[row : row + 1]).logits
        assert torch.allclose(out[row : row + 1], want, rtol=0, atol=1e-10)
    # The users really differ (otherwise the check above would prove nothing).
    assert (models[0](idx[:1]).logits - models[1](idx[:1]).logits).abs().max() > 1e-3


def test_a_batch_of_one_user_takes_the_plain_matmuls(monkeypatch):
    """Every row one user's: the layers skip the segmented kernel (multi_lora is never
    called) and still give that user's own logits; a mixed batch in the same model after it
    goes back through multi_lora."""
    import minift.personal.serving as serving

    base = tiny()
    models = [adapted(base, 2, seed=6), adapted(base, 4, seed=7)]
    served = stack_adapters(base, models)
    idx = torch.randint(0, 71, (3, 6))
    calls = []
    real = serving.multi_lora
    monkeypatch.setattr(serving, "multi_lora", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    with users(served, [1, 1, 1]):
        out = served(idx).logits
    assert calls == []
    assert torch.allclose(out, models[1](idx).logits, rtol=0, atol=1e-10)
    with users(served, [1, 0, 1]):
        mixed = served(idx).logits
    assert calls and torch.allclose(mixed[1:2], models[0](idx[1:2]).logits, rtol=0, atol=1e-10)
    layer = next(m for m in served.modules() if isinstance(m, serving.MultiLoRALinear))
    assert layer.ids is None and layer.only_user is None  # reset when the block ends


def test_generation_of_many_users_at_once_equals_each_alone():
    base = tiny()
    models = [adapted(base, 3, seed=4), adapted(base, 3, seed=5)]
    served = stack_adapters(base, models)
    prompt = torch.randint(0, 71, (1, 4))
    with users(served, [0, 1, -1]):
        out = served.generate(prompt.repeat(3, 1), 6, temperature=0.0)
    for row, model in enumerate([*models, base]):
        assert torch.equal(out[row : row + 1], model.generate(prompt, 6, temperature=0.0))


def test_serving_bad_inputs_are_named():
    base = tiny()
    served = stack_adapters(base, [adapted(base, 2, seed=1), adapted(base, 2, seed=2)])
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        with users(served, [0, 2]):
            pass
    with pytest.raises(RuntimeError, match="users\\(model, ids\\)"):
        served(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(UserError, match="share targets"):
        stack_adapters(base, [adapted(base, 2, 1), adapted(base, 2, 2, targets=("c_attn",))])
    with pytest.raises(UserError, match="no stacked adapters"):
        with users(base, [0]):
            pass
    with pytest.raises(UserError, match="at least one"):
        stack_adapters(base, [])


# ------------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def policy():
    from minift.recipes.rlhf_stages import default_policy

    return default_policy(verbose=False)


def test_the_base_scores_one_half_and_a_users_adapter_learns_their_taste(policy):
    from minift.recipes.personalize import dpo_config, user_lora

    model, enc = policy
    held = user_pairs("brief", "val", 40)
    assert preference_correct(model, enc, held, model).tolist() == [0.5] * len(held)
    own = user_lora(model, enc, user_pairs("brief", "train", 32), 4, dpo_config(25, 3e-3))
    mine = preference_correct(own, enc, held, model).mean()
    # The opposite user's pairs are the same comparisons reversed in spirit: the adapter
    # that learned "short" must now score verbose's choices below chance.
    theirs = preference_correct(own, enc, user_pairs("verbose", "val", 40), model).mean()
    assert mine > 0.65 and theirs < 0.45


# ------------------------------------------------------------------------ commands
def test_personalize_saves_an_adapter_that_generate_loads(tmp_path, capsys):
    dest = tmp_path / "brief"
    argv = ["personalize", "--user", "brief", "--steps", "3", "--rank", "2", "--save", str(dest)]
    assert minift.cli.main(argv) == 0
    meta = json.loads((dest / "personal.json").read_text())
    assert meta["user"] == "brief" and (dest / "adapter_model.safetensors").exists()
    assert 0.0 <= meta["hidden_preference_accuracy"] <= 1.0
    assert minift.cli.main(["generate", "--adapter", str(dest), "--max-new-tokens", "5"]) == 0
    capsys.readouterr()
    assert minift.cli.main(["generate", "--adapter", "nobody-here"]) == 2
    assert "no personal adapter 'nobody-here'" in capsys.readouterr().err


def test_feedback_with_user_records_for_personalize(tmp_path, monkeypatch, capsys):
    import minift.recipes.personalize as personalize

    monkeypatch.setattr(personalize, "minift_home", lambda: tmp_path)
    answers = tmp_path / "answers.txt"
    answers.write_text("1\n2\n1\n")
    argv = ["feedback", "--user", "alice", "--rounds", "3", "--answers", str(answers)]
    assert minift.cli.main(argv) == 0
    recorded = tmp_path / "users" / "alice.jsonl"
    assert len(recorded.read_text().splitlines()) >= 1
    assert "minift personalize --user alice" in capsys.readouterr().out
    # An unknown user with no data is a one-line error naming the ways to give some.
    assert minift.cli.main(["personalize", "--user", "bob", "--steps", "2"]) == 2
    assert "minift feedback --user bob" in capsys.readouterr().err
    assert minift.cli.main(["personalize", "--user", "../x"]) == 2


def test_personalize_from_the_users_own_responses_trains_by_sft(tmp_path):
    """A prompt/response file (the user's data, not comparisons) trains the adapter by SFT;
    trained on brief's preferred lines, it scores brief's held-out pairs above chance."""
    rows = [
        {"prompt": p["prompt"], "response": p["chosen"]} for p in user_pairs("brief", "train", 48)
    ]
    data = tmp_path / "brief.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dest = tmp_path / "adapter"
    argv = ["personalize", "--user", "brief", "--data", str(data), "--steps", "30", "--rank", "4",
            "--save", str(dest)]  # fmt: skip
    assert minift.cli.main(argv) == 0
    meta = json.loads((dest / "personal.json").read_text())
    assert meta["method"] == "sft" and meta["train_rows"] == 48
    assert meta["hidden_preference_accuracy"] > 0.6


def test_serving_through_the_triton_kernel_equals_each_users_model(monkeypatch):
    """The same mixed batch with MINIFT_KERNELS=triton (the interpreter on CPU): the
    segmented kernel inside a real model gives each user's own logits."""
    pytest.importorskip("triton")
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("Triton on CPU needs TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the kernel runs where the model is
    base = tiny().to(device)
    models = [adapted(base, 2, seed=8), adapted(base, 3, seed=9)]
    served = stack_adapters(base, models)
    idx = torch.randint(0, 71, (3, 5), device=device)
    monkeypatch.setenv("MINIFT_KERNELS", "reference")  # each user's model the plain way
    want = [m(idx[row : row + 1]).logits for row, m in enumerate([models[1], base, models[0]])]
    monkeypatch.setenv("MINIFT_KERNELS", "triton")
    with users(served, [1, -1, 0]):
        out = served(idx).logits
    for row in range(3):
        assert torch.allclose(out[row : row + 1], want[row], rtol=0, atol=1e-10)


def test_each_user_is_a_registered_preference_task():
    from minift.recipes.tasks import get_task, list_tasks

    assert {f"user-{u}" for u in USERS} <= set(list_tasks())
    task = get_task("user-verbose")
    assert task.kind == "preference" and task.train == user_pairs("verbose", "train", 48)
    assert agreement(USERS["verbose"], task.val) == 1.0
