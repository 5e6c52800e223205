"""PPO end to end on the fast base: rollouts, padding invariance, the reference, the KL,
learning on a tiny task, and the errors of a bad configuration."""

import copy

import pytest
import torch

from minift.peft import LoRAConfig, apply_lora
from minift.recipes.pretrain import load_base
from minift.rlhf.policy import Critic, PolicyWithValue, Reference
from minift.rlhf.reward import RewardModel
from minift.rlhf.rollout import Rollout, sample_responses
from minift.rlhf.trainer import PPOConfig, PPOTrainer
from minift.tokenizer import eot_id, pad_id

PROMPTS = ["Return the", "Create a", "Get", "Set the value of", "The"]


@pytest.fixture(scope="module")
def base():
    return load_base(verbose=False)


def e_reward(enc):
    """A tiny task scored exactly: the fraction of response tokens containing the letter e."""
    has_e = torch.tensor([("e" in enc.decode([i])) for i in range(enc.n_vocab)])

    def reward(rollout: Rollout) -> torch.Tensor:
        hits = has_e[rollout.responses.clamp(max=enc.n_vocab - 1)].float() * rollout.response_mask
        return hits.sum(1) / rollout.response_mask.sum(1).clamp(min=1)

    return reward


def make_trainer(model, enc, config, reference=None, reward=None):
    policy = PolicyWithValue(copy.deepcopy(model).requires_grad_(True))
    reference = reference or Reference(model=copy.deepcopy(model))
    prompts = [enc.encode_ordinary(p) for p in PROMPTS]
    reward = reward or e_reward(enc)
    return PPOTrainer(policy, reference, reward, prompts, eot_id(enc), pad_id(enc), config)


def test_rollout_masks_everything_after_the_first_end_token(base):
    model, enc = base
    g = torch.Generator().manual_seed(0)
    prompts = [enc.encode_ordinary(p) for p in PROMPTS]
    r = sample_responses(model, prompts, 12, eot_id(enc), pad_id(enc), 1.0, generator=g)
    eos = eot_id(enc)
    assert r.prompt_len == max(len(p) for p in prompts)
    for row, mask, ended in zip(r.responses.tolist(), r.response_mask.tolist(), r.has_eos.tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # real tokens first, then padding
        assert ended == (eos in row)
        if ended:
            assert row.index(eos) == n - 1  # the end token is the last real token
            assert all(t == pad_id(enc) for t in row[n:])
    # left padding: every prompt ends in the last prompt column
    for p, seq, att in zip(prompts, r.sequences.tolist(), r.attention_mask.tolist()):
        assert seq[r.prompt_len - len(p) : r.prompt_len] == p
        assert att[: r.prompt_len - len(p)] == [0] * (r.prompt_len - len(p))


@pytest.mark.parametrize("value", ["head", "critic"])
def test_logprobs_and_values_do_not_depend_on_padding(base, value):
    model, enc = base
    torch.manual_seed(0)
    if value == "critic":
        rm = RewardModel(copy.deepcopy(model))
        pv = PolicyWithValue(copy.deepcopy(model), Critic.from_reward_model(rm))
    else:
        pv = PolicyWithValue(copy.deepcopy(model))
        torch.nn.init.normal_(pv.value_head.weight)  # a non-zero head, so values can differ
    prompts = [enc.encode_ordinary("Get"), enc.encode_ordinary("Return the value of a long name")]
    g = torch.Generator().manual_seed(1)
    batch = sample_responses(model, prompts, 10, eot_id(enc), pad_id(enc), 1.0, generator=g)
    lp, v, ent = pv.evaluate(batch.sequences, batch.attention_mask, batch.prompt_len, 0.7)
    # the short prompt alone: no left padding, and only its own response columns
    n = int(batch.response_mask[0].sum())
    P = batch.prompt_len
    alone = torch.cat([torch.tensor(prompts[0]), batch.sequences[0, P : P + n]])[None]
    lp1, v1, ent1 = pv.evaluate(alone, torch.ones_like(alone), len(prompts[0]), 0.7)
    torch.testing.assert_close(lp[0, :n], lp1[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v[0, :n], v1[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[0, :n], ent1[0], atol=1e-5, rtol=1e-5)
    assert v1.abs().max() > 0


def test_kl_is_zero_when_the_policy_is_the_reference(base):
    model, enc = base
    config = PPOConfig(iterations=1, batch_size=8, num_minibatches=2, max_new_tokens=6)
    trainer = make_trainer(model, enc, config, reward=lambda r: torch.zeros(r.sequences.size(0)))
    _, batch, stats = trainer.make_experience()
    assert stats["kl"] == 0.0 and stats["kl_k3"] == 0.0
    # with a zero score and no KL the only reward is the missing-EOS penalty
    assert stats["reward"] == pytest.approx(-config.missing_eos_penalty * (1 - stats["eos_rate"]))
    # a zero-initialised value head: every first value is exactly 0
    assert torch.all(batch["values"] == 0)


def test_reference_model_never_changes(base):
    model, enc = base
    reference = Reference(model=copy.deepcopy(model))
    before = {k: v.clone() for k, v in reference.model.state_dict().items()}
    config = PPOConfig(iterations=2, batch_size=8, num_minibatches=2, ppo_epochs=2, max_new_tokens=6, lr=1e-2)  # fmt: skip
    trainer = make_trainer(model, enc, config, reference=reference)
    trainer.fit()
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in reference.model.parameters())
    moved = any(not torch.equal(p, before[k]) for k, p in trainer.model.policy.state_dict().items())
    assert moved  # while the policy did move


def test_lora_policy_uses_itself_with_adapters_off_as_the_reference(base):
    model, enc = base
    torch.manual_seed(0)
    lora_model = apply_lora(copy.deepcopy(model), LoRAConfig(r=4, target_modules=["c_attn", "c_fc"], trainable_extra=[]))  # fmt: skip
    base_weights = {k: v.clone() for k, v in lora_model.state_dict().items() if "lora_" not in k}
    pv = PolicyWithValue(lora_model)
    reference = Reference(policy=lora_model)
    prompts = [enc.encode_ordinary(p) for p in PROMPTS]
    config = PPOConfig(iterations=2, batch_size=8, num_minibatches=2, ppo_epochs=2, max_new_tokens=6, lr=1e-2)  # fmt: skip
    trainer = PPOTrainer(pv, reference, e_reward(enc), prompts, eot_id(enc), pad_id(enc), config)
    trainer.fit()
    for k, v in lora_model.state_dict().items():  # base weights bit-identical
        if "lora_" not in k:
            assert torch.equal(v, base_weights[k]), k
    g = torch.Generator().manual_seed(3)
    r = sample_responses(lora_model, prompts, 6, eot_id(enc), pad_id(enc), generator=g)
    ref_lp = reference.logprobs(r.sequences, r.attention_mask, r.prompt_len, 1.0)
    logits = model(r.sequences, attention_mask=r.attention_mask).logits[:, r.prompt_len - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, r.responses[..., None]).squeeze(-1)
    torch.testing.assert_close(ref_lp, expected, atol=1e-6, rtol=1e-6)  # the starting model
    lp, _, _ = pv.evaluate(r.sequences, r.attention_mask, r.prompt_len, 1.0)
    assert not torch.allclose(lp * r.response_mask, ref_lp * r.response_mask)  # adapters trained
    with pytest.raises(ValueError, match="without adapters"):
        Reference(policy=model)


def test_short_seeded_ppo_run_raises_the_reward(base):
    model, enc = base
    config = PPOConfig(
        iterations=10, batch_size=16, num_minibatches=2, ppo_epochs=2, max_new_tokens=8,
        lr=3e-3, kl_coef=0.05, missing_eos_penalty=None, seed=0,
    )  # fmt: skip
    trainer = make_trainer(model, enc, config)
    result = trainer.fit()
    scores = [h["score"] for h in result.history]
    # fresh samples of the trained policy and of the reference, on the same prompts
    reward = e_reward(enc)
    prompts = [enc.encode_ordinary(p) for p in PROMPTS] * 12

    def mean_reward(m):
        g = torch.Generator().manual_seed(99)
        return float(
            reward(sample_responses(m, prompts, 8, eot_id(enc), pad_id(enc), generator=g)).mean()
        )

    trained, reference = mean_reward(trainer.model.policy), mean_reward(model)
    assert trained > reference + 0.2, (trained, reference, scores)
    for key in ("kl", "entropy", "clipfrac", "approx_kl", "value_loss", "explained_variance"):
        assert key in result.history[-1]


# ---------------------------------------------------------------------------- bad input
def test_a_batch_the_minibatch_count_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="batch_size 10 is not divisible by num_minibatches 3"):
        PPOConfig(batch_size=10, num_minibatches=3)
    with pytest.raises(ValueError, match="not divisible by grad_accum 3"):
        PPOConfig(batch_size=16, num_minibatches=2, grad_accum=3)
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")


def test_responses_that_exceed_the_block_size_are_refused(base):
    model, enc = base
    block = model.config.block_size
    long_prompt = [[7] * (block - 4)]
    with pytest.raises(ValueError, match=f"exceeds block_size {block}"):
        sample_responses(model, long_prompt, 8, eot_id(enc), pad_id(enc))
    config = PPOConfig(batch_size=8, num_minibatches=2, max_new_tokens=8)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        PPOTrainer(
            PolicyWithValue(copy.deepcopy(model)), Reference(model=copy.deepcopy(model)),
            e_reward(enc), long_prompt, eot_id(enc), pad_id(enc), config,
        )  # fmt: skip
    with pytest.raises(ValueError, match="pad token must differ"):
        sample_responses(model, [[1, 2]], 4, eot_id(enc), eot_id(enc))
