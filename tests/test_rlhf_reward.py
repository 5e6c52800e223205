"""The reward model and the preference data: where the reward is read, normalisation,
saving, learning, and bad input (missing fields, rows longer than the block)."""

import copy
import json

import pytest
import torch

from minift.data.batching import pad_sequences
from minift.recipes.pretrain import load_base
from minift.recipes.tasks import get_task
from minift.rlhf.preference import append_preferences, encode_pairs, load_preferences, pair_batch
from minift.rlhf.reward import (
    RewardConfig,
    RewardModel,
    score_pairs,
    train_config,
    train_reward_model,
)
from minift.rlhf.tasks import storage_counts, truth_score
from minift.tokenizer import pad_id


@pytest.fixture(scope="module")
def base():
    return load_base(verbose=False)


def test_reward_is_read_at_the_last_real_token_under_any_padding(base):
    model, enc = base
    torch.manual_seed(0)
    rm = RewardModel(copy.deepcopy(model)).eval()
    seqs = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15]]
    alone = torch.stack([rm(torch.tensor([s]))[0] for s in seqs])
    for side in ("left", "right"):
        ids, mask = pad_sequences(seqs, pad_id(enc), side=side)
        torch.testing.assert_close(rm(ids, mask), alone, atol=1e-5, rtol=1e-5)
    # By hand: the head applied to the final hidden state of the last token.
    hidden = model(torch.tensor([seqs[1]]), compute_logits=False).last_hidden[0, -1]
    manual = rm.head(hidden).squeeze()
    torch.testing.assert_close(alone[1], manual)
    # The last token matters: changing it changes the reward.
    assert not torch.allclose(rm(torch.tensor([[12, 13, 99]])), alone[1:2])


def test_normalisation_gives_mean_zero_std_one_on_the_reference_samples(base):
    model, enc = base
    rm = RewardModel(copy.deepcopy(model)).eval()
    g = torch.Generator().manual_seed(1)
    seqs = [
        torch.randint(0, 400, (int(n),), generator=g).tolist()
        for n in torch.randint(2, 12, (40,), generator=g)
    ]
    ids, mask = pad_sequences(seqs, pad_id(enc), side="left")
    report = rm.normalize(ids, mask, batch=16)
    raw = rm(ids, mask, normalized=False)
    assert report["raw_mean"] == pytest.approx(raw.mean().item(), abs=1e-5)
    scores = rm(ids, mask)
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_round_trip(base, tmp_path):
    model, enc = base
    rm = RewardModel(copy.deepcopy(model)).eval()
    rm.gain.fill_(2.5)
    rm.bias.fill_(-0.5)
    rm.save(tmp_path / "rm")
    again = RewardModel.load(tmp_path / "rm")
    ids = torch.tensor([[3, 4, 5, 6]])
    torch.testing.assert_close(again(ids), rm(ids))
    with pytest.raises(FileNotFoundError, match="no reward model"):
        RewardModel.load(tmp_path)


def test_reward_model_learns_held_out_preferences(base):
    model, enc = base
    task = get_task("file-words")
    before = copy.deepcopy(model.state_dict())
    # 60 steps on all held-out pairs: over seeds 0-3 and two builds of the fast base the
    # accuracy rose from 0.43-0.58 to 0.72-0.87 (20 steps on 128 pairs was too noisy).
    train = train_config(steps=60, lr=2e-3, warmup_steps=3, eval_every=60)
    config = RewardConfig(batch_size=16, train=train)
    result = train_reward_model(model, enc, task.train, task.val, config)
    accuracies = [h["val_accuracy"] for h in result.history if "val_accuracy" in h]
    assert accuracies[-1] >= accuracies[0] + 0.1, accuracies
    assert accuracies[-1] >= 0.65, accuracies
    assert result.accuracy == accuracies[-1]
    for k, v in model.state_dict().items():  # the backbone passed in is untouched
        assert torch.equal(v, before[k]), k
    # score_pairs agrees with the reported accuracy
    c, r = score_pairs(result.model, encode_pairs(task.val, enc, 64), enc)
    assert float((c > r).float().mean()) == pytest.approx(result.accuracy)


def test_pair_batch_marks_the_response_and_end_token(base):
    _, enc = base
    pairs = encode_pairs([{"prompt": "Return", "chosen": " the file", "rejected": " x"}], enc, 64)
    b = pair_batch(pairs, [0], enc)
    n_prompt = len(enc.encode_ordinary("Return"))
    assert b["idx"].shape[0] == 2
    for row, resp in enumerate([pairs.chosen[0], pairs.rejected[0]]):
        marked = b["idx"][row][b["response_mask"][row].bool()].tolist()
        assert marked == resp  # response tokens and the end token, nothing else
        assert b["response_mask"][row, :n_prompt].sum() == 0


def test_truth_score_counts_distinct_storage_words_and_penalises_repeats():
    assert truth_score(" the path of the file.") == 2
    assert truth_score(" the FILE of the file") == 0  # one word, repeated once
    assert truth_score(" nothing here") == 0
    assert truth_score(" file file file path") == 2 - 2
    assert storage_counts(" a directory, files and a filename") == (3, 0)


# ---------------------------------------------------------------------------- bad input
def test_missing_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ValueError, match=r"prefs\.jsonl line 2: missing field 'rejected'"):
        load_preferences(path)
    path.write_text(json.dumps({"prompt": "a", "chosen": 3, "rejected": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: field 'chosen' must be a string"):
        load_preferences(path)
    path.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c", "margin": "x"}))
    with pytest.raises(ValueError, match="margin"):
        load_preferences(path)


def test_a_pair_whose_two_responses_are_the_same_is_refused_naming_the_row(base, tmp_path):
    model, enc = base
    rows = [{"prompt": "Return", "chosen": " ok", "rejected": " no"}] * 2
    rows.append({"prompt": "Return", "chosen": " same", "rejected": " same"})
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"prefs\.jsonl row 3: chosen and rejected are the same"):
        load_preferences(path)
    with pytest.raises(ValueError, match=r"train row 3: chosen and rejected are the same"):
        encode_pairs(rows, enc, 64, "train")
    assert len(encode_pairs(rows[:2], enc, 64, "train")) == 2  # different responses pass


def test_rows_longer_than_the_block_are_refused_before_training(base):
    model, enc = base
    long = " file" * 80
    rows = [{"prompt": "Return", "chosen": " ok", "rejected": " no"}] * 3
    rows.append({"prompt": "Return", "chosen": " fine", "rejected": long})
    with pytest.raises(ValueError, match=r"row 4: .*rejected.* exceeds block_size 64"):
        encode_pairs(rows, enc, 64, "train")
    with pytest.raises(ValueError, match="exceeds block_size"):
        train_reward_model(model, enc, rows, rows[:1], RewardConfig(train=train_config(steps=1)))


def test_append_preferences_extends_a_valid_file_and_refuses_a_broken_one(tmp_path):
    path = tmp_path / "p.jsonl"
    append_preferences(path, [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    append_preferences(path, [{"prompt": "q", "chosen": "c", "rejected": "d"}])
    assert [r["prompt"] for r in load_preferences(path)] == ["p", "q"]
    with pytest.raises(ValueError, match="lacks"):
        append_preferences(path, [{"prompt": "q", "chosen": "c"}])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(ValueError, match="missing field 'rejected'"):
        append_preferences(broken, [{"prompt": "q", "chosen": "c", "rejected": "d"}])
    assert broken.read_text() == '{"prompt": "p", "chosen": "a"}\n'  # untouched
