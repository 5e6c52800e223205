"""DPO on the fast base: sequence log-probabilities, the frozen reference, learning, and
best-of-n."""

import copy
import math

import pytest
import torch

from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.rlhf.best_of_n import best_of_n, best_of_n_kl_bound
from minift.rlhf.dpo import DPOConfig, pair_logprobs, sequence_logprobs, train_config, train_dpo
from minift.rlhf.preference import encode_pairs, pair_batch
from minift.tokenizer import eot_id, pad_id


@pytest.fixture(scope="module")
def base():
    return load_base(verbose=False)


@pytest.fixture(scope="module")
def task():
    return get_task("file-words")


def test_sequence_logprobs_sum_the_response_tokens_only(base, task):
    model, enc = base
    pairs = encode_pairs(task.val[:3], enc, model.config.block_size)
    batch = pair_batch(pairs, [0, 1, 2], enc)
    got = sequence_logprobs(model, batch)
    for i in range(3):  # each pair's responses alone, summed by hand
        for j, resp in enumerate([pairs.chosen[i], pairs.rejected[i]]):
            seq = torch.tensor([pairs.prompt[i] + resp])
            logp = torch.log_softmax(model(seq).logits[0], -1)
            P = len(pairs.prompt[i])
            expected = sum(logp[P - 1 + t, tok] for t, tok in enumerate(resp))
            assert got[i + 3 * j].item() == pytest.approx(expected.item(), abs=1e-4)


def test_short_dpo_run_raises_the_chosen_over_rejected_margin(base, task):
    model, enc = base
    before = copy.deepcopy(model.state_dict())
    train = train_config(steps=15, lr=3e-3, warmup_steps=2, eval_every=15)
    config = DPOConfig(batch_size=16, beta=0.1, train=train)
    result = train_dpo(model, enc, task.train[:256], task.val[:64], config)
    evals = [h for h in result.history if "val_margin" in h]
    assert evals[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert evals[-1]["val_margin"] > evals[0]["val_margin"] + 0.5, evals
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    for k, v in model.state_dict().items():  # the reference (the model passed in) is untouched
        assert torch.equal(v, before[k]), k
    # the margin the history reports is the one the trained model gives
    val = encode_pairs(task.val[:64], enc, model.config.block_size)
    c, r = pair_logprobs(result.model, val, enc)
    assert float((c - r).mean()) == pytest.approx(evals[-1]["val_margin"], abs=1e-4)


def test_dpo_through_lora_trains_the_adapters_only(base, task):
    """--lora applies to DPO: only the adapters move, the starting policy (the reference)
    is untouched, and the margin rises as with full DPO."""
    from minift.peft import merge_and_unload
    from minift.recipes.rlhf_methods import rlhf_lora, run_dpo

    model, enc = base
    before = copy.deepcopy(model.state_dict())
    train = train_config(steps=15, lr=1e-2, warmup_steps=2, eval_every=15)
    config = DPOConfig(batch_size=16, beta=0.1, train=train)
    result = run_dpo(model, enc, task.train[:256], task.val[:64], config, rlhf_lora(4))
    evals = [h for h in result.history if "val_margin" in h]
    assert evals[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-5)  # B = 0 at the start
    assert evals[-1]["val_margin"] > evals[0]["val_margin"] + 0.3, evals
    trained = dict(result.model.named_parameters())
    assert any("lora_A" in n for n in trained)
    assert all(("lora_" in n) == p.requires_grad for n, p in trained.items())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
        wrapped = k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        state = result.model.state_dict()
        assert torch.equal(state.get(k, state.get(wrapped)), v), k  # frozen base weights
    merged = merge_and_unload(copy.deepcopy(result.model))
    assert set(merged.state_dict()) == set(model.state_dict())


def test_best_of_n_picks_the_highest_score(base):
    model, enc = base
    prompts = [enc.encode_ordinary(p) for p in ["Return the", "Get"]]
    score = lambda r: r.response_mask.sum(1).float()  # noqa: E731 (longest response wins)
    g = torch.Generator().manual_seed(0)
    out = best_of_n(model, score, prompts, 4, 10, eot_id(enc), pad_id(enc), generator=g)
    assert out.all_scores.shape == (2, 4)
    torch.testing.assert_close(out.scores, out.all_scores.max(1).values)
    torch.testing.assert_close(out.rollout.response_mask.sum(1).float(), out.scores)
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(8) == pytest.approx(math.log(8) - 7 / 8)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(model, score, prompts, 0, 10, eot_id(enc), pad_id(enc))
