"""Every technique on a real GPT-2 checkpoint layout, not only on minift's own base.

A randomly initialised transformers GPT2LMHeadModel with odd sizes (biases, learned
positions, LayerNorm, tied embeddings: GPT-2's layout, unlike minift's default base) is
saved with save_pretrained and loaded by GPT.from_pretrained (Conv1D weights transposed).
Each family then runs on it and is checked for doing its job on this layout: the
fine-tuning methods, a sparse pattern switched on after loading, MoE upcycling, a
distilled student, a reward model, DPO and PPO. Learning quality is tested on the
pretrained base elsewhere; the weights here are random.
"""

import copy

import pytest
import torch

from minift.data.encoding import default_encoding
from minift.distill.config import train_config as distill_train
from minift.distill.loop import DistillConfig, distill
from minift.distill.objectives import lm_objective
from minift.distill.students import every_kth_student
from minift.longctx.context import set_attention_pattern
from minift.model import GPT
from minift.model.upcycle import upcycle
from minift.recipes.finetune import METHODS, FinetuneConfig, finetune
from minift.recipes.finetune import train_config as finetune_train
from minift.recipes.tasks import get_task
from minift.rlhf.dpo import DPOConfig, pair_logprobs, train_dpo
from minift.rlhf.dpo import train_config as dpo_train
from minift.rlhf.policy import PolicyWithValue, Reference
from minift.rlhf.preference import encode_pairs
from minift.rlhf.reward import RewardModel
from minift.rlhf.trainer import PPOConfig, PPOTrainer
from minift.tokenizer import eot_id, pad_id


@pytest.fixture(scope="module")
def enc():
    return default_encoding(fast=True)


@pytest.fixture(scope="module")
def gpt2(enc, tmp_path_factory) -> GPT:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=enc.n_vocab, n_positions=64, n_embd=48, n_layer=3, n_head=3,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(cfg).save_pretrained(path)
    model = GPT.from_pretrained(path).eval()
    assert model.config.bias and model.config.n_layer == 3  # GPT-2's layout, loaded
    return model


def tokens(enc, n: int = 2, T: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, enc.n_vocab - 8, (n, T), generator=g)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_finetune_method_trains_on_the_gpt2_layout(gpt2, enc, method):
    task = get_task("stdlib-package")
    before = copy.deepcopy(gpt2.state_dict())
    config = FinetuneConfig(
        method=method, max_len=24, train=finetune_train(steps=4, eval_every=4, progress=False)
    )
    result = finetune(task, gpt2, enc, config)
    first, last = result.history[0], result.history[-1]
    # a closed-form method (the probe) logs its fit as step 1 and takes no optimizer steps
    assert first["step"] == 0 and last["step"] == (1 if result.fit is not None else 4)
    assert torch.isfinite(torch.tensor(last["val_loss"]))
    assert last["val_loss"] != first["val_loss"]  # the trained parameters moved
    assert 0 < result.trainable <= result.total
    for k, v in gpt2.state_dict().items():  # the loaded base is never modified
        assert torch.equal(v, before[k]), k


def test_sparse_pattern_switched_on_after_loading(gpt2, enc):
    idx = tokens(enc, T=48)  # 6 blocks of 8, so a 6-block window sees everything
    model = copy.deepcopy(gpt2)
    dense = model(idx).logits
    set_attention_pattern(model, "sliding_window", window=6, block_size=8)
    torch.testing.assert_close(model(idx).logits, dense, atol=1e-5, rtol=1e-5)
    set_attention_pattern(model, "bigbird", window=1, block_size=8, n_global=1)
    out = model(idx, targets=idx)
    assert (out.logits - dense).abs().max() > 1e-3  # now it attends to fewer keys
    out.loss.backward()
    assert model.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0


def test_upcycled_gpt2_equals_the_dense_model_at_init(gpt2, enc):
    idx = tokens(enc)
    moe = upcycle(copy.deepcopy(gpt2), num_experts=4, top_k=2)
    torch.testing.assert_close(moe(idx).logits, gpt2(idx).logits, atol=1e-5, rtol=1e-5)
    assert moe.num_params() > gpt2.num_params()


def test_distilled_student_of_the_gpt2_layout(gpt2, enc):
    idx = tokens(enc)
    copy_k1 = every_kth_student(gpt2, 1)
    torch.testing.assert_close(copy_k1(idx).logits, gpt2(idx).logits)
    student = every_kth_student(gpt2, 3)
    assert student.config.n_layer == 1
    teacher_before = copy.deepcopy(gpt2.state_dict())
    objective = lm_objective(enc, batch_size=4, seq_len=32, seed=0, eval_batches=2)
    config = DistillConfig(
        alpha=1.0, train=distill_train(steps=3, lr=3e-3, eval_every=3, progress=False)
    )
    result = distill(gpt2, student, objective, config)
    assert torch.isfinite(torch.tensor(result.val_loss))
    for k, v in gpt2.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_reward_model_dpo_and_ppo_on_the_gpt2_layout(gpt2, enc):
    rows = [
        {"prompt": "Return the", "chosen": " file path.", "rejected": " value of it."},
        {"prompt": "Open a", "chosen": " directory.", "rejected": " socket now."},
        {"prompt": "Read the", "chosen": " bytes of a file.", "rejected": " thing."},
        {"prompt": "Write", "chosen": " to the path.", "rejected": " it out."},
    ]
    rm = RewardModel(copy.deepcopy(gpt2)).eval()
    assert rm(tokens(enc)).shape == (2,)

    # DPO: a few steps raise the implicit reward margin on the training pairs
    config = DPOConfig(
        batch_size=4, train=dpo_train(steps=5, lr=1e-3, warmup_steps=0, eval_every=5)
    )
    policy = train_dpo(gpt2, enc, rows, None, config).model.eval()
    pairs = encode_pairs(rows, enc, gpt2.config.block_size)
    (pc, pr), (rc, rr) = pair_logprobs(policy, pairs, enc), pair_logprobs(gpt2, pairs, enc)
    assert ((pc - rc) - (pr - rr)).mean() > 0

    # PPO: one iteration of rollouts, KL to the frozen reference, clipped updates
    reward = lambda rollout: rollout.response_mask.float().mean(1)  # noqa: E731
    prompts = [enc.encode_ordinary(r["prompt"]) for r in rows]
    ppo_config = PPOConfig(
        iterations=1, batch_size=8, num_minibatches=2, ppo_epochs=1, max_new_tokens=6, seed=0
    )
    reference = Reference(model=copy.deepcopy(gpt2))
    trainer = PPOTrainer(
        PolicyWithValue(copy.deepcopy(gpt2).requires_grad_(True)), reference, reward, prompts,
        eot_id(enc), pad_id(enc), ppo_config,
    )  # fmt: skip
    row = trainer.fit().history[-1]
    for key in ("kl", "entropy", "clipfrac", "value_loss"):
        assert torch.isfinite(torch.tensor(row[key])), key
