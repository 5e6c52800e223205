"""minift.metrics.lm: perplexity and bits per byte, by hand and against a float64
reference computed from a model whose probabilities are known."""

import math

import pytest
import torch
import torch.nn as nn

from minift.metrics import lm
from minift.model import GPT, GPTConfig
from minift.tokenizer import eot_id, train_bpe

TEXT = "the quick brown fox jumps over the lazy dog; the dog sleeps. " * 3


@pytest.fixture(scope="module")
def enc():
    return train_bpe(TEXT, 256 + 3 + 20)


class Out:
    def __init__(self, logits):
        self.logits = logits


class Bigram(nn.Module):
    """logits of the next token = table[current token]: p(x_t | x_<t) = softmax(table[x_{t-1}]),
    so the NLL of a text is a sum over its adjacent pairs, whatever the context window."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g, dtype=torch.float64))

    def forward(self, idx):
        return Out(self.table[idx])


def by_hand(table: torch.Tensor, enc, texts) -> tuple[float, int, int]:
    logp = torch.log_softmax(table, dim=-1)
    nll, tokens, nbytes = 0.0, 0, 0
    for text in texts:
        ids = [eot_id(enc), *enc.encode_ordinary(text)]
        for a, b in zip(ids, ids[1:]):
            nll -= logp[a, b].item()
            tokens += 1
        nbytes += len(text.encode("utf-8"))
    return nll, tokens, nbytes


def test_formulas_by_hand():
    # 10 tokens at NLL ln 4 each: perplexity 4; over 20 bytes: 10 * 2 bits / 20 = 1 bit/byte
    assert lm.perplexity(10 * math.log(4), 10) == pytest.approx(4.0)
    assert lm.bits_per_byte(10 * math.log(4), 20) == pytest.approx(1.0)
    # a uniform guess over the 256 byte values, one token per byte: 8 bits per byte
    assert lm.bits_per_byte(100 * math.log(256), 100) == pytest.approx(8.0)


@pytest.mark.parametrize("block_size", [1, 3, 7, 64])
def test_bigram_model_statistics_match_the_hand_computation(enc, block_size):
    model = Bigram(enc.n_vocab, seed=block_size)
    texts = ["the lazy dog", "a quick brown fox jumps over é", "x"]
    stats = lm.lm_statistics(model, enc, texts, block_size=block_size)
    nll, tokens, nbytes = by_hand(model.table.detach(), enc, texts)
    assert (stats.n_tokens, stats.n_bytes) == (tokens, nbytes)
    assert stats.nll == pytest.approx(nll, rel=1e-12)
    assert stats.bits_per_byte == pytest.approx(nll / math.log(2) / nbytes, rel=1e-12)
    assert stats.perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-12)


@pytest.mark.parametrize("block_size", [48, 5])
def test_gpt_nll_matches_float64_log_probabilities(enc, block_size):
    torch.manual_seed(3)
    config = GPTConfig(vocab_size=enc.n_vocab, block_size=48, n_layer=2, n_head=2, n_embd=24)
    model = GPT(config).double().eval()
    text = "the quick brown fox jumps over the lazy dog"
    ids = [eot_id(enc), *enc.encode_ordinary(text)]
    # by hand: window w feeds ids[wB : wB + B] and scores the token after each position
    expected = 0.0
    for start in range(0, len(ids) - 1, block_size):
        window = ids[start : start + block_size + 1]
        logp = torch.log_softmax(model(torch.tensor([window[:-1]])).logits[0].double(), -1)
        expected -= sum(logp[i, t].item() for i, t in enumerate(window[1:]))
    stats = lm.lm_statistics(model, enc, [text], block_size=block_size)
    assert stats.n_tokens == len(ids) - 1
    assert stats.nll == pytest.approx(expected, rel=1e-12)
    if block_size == 48:  # one window: the model's own (float32) loss, to float32 precision
        loss = model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])).loss.item()
        assert stats.loss == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: lm.perplexity(1.0, 0), "n_tokens must be positive"),
        (lambda: lm.bits_per_byte(1.0, 0), "n_bytes must be positive"),
        (lambda: lm.bits_per_byte(float("nan"), 3), "finite"),
        (lambda: lm.perplexity(-1.0, 3), ">= 0"),
    ],
)
def test_bad_numbers_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_texts_are_clear_errors(enc):
    model = Bigram(enc.n_vocab, 0)
    with pytest.raises(ValueError, match="texts\\[1\\] is empty"):
        lm.lm_statistics(model, enc, ["dog", ""], block_size=8)
    with pytest.raises(ValueError, match="non-empty list"):
        lm.lm_statistics(model, enc, "dog", block_size=8)


def test_a_soft_prompt_shrinks_the_windows_to_the_room_left(enc):
    """Prompt tuning puts P embeddings in front of every call: a text is scored in windows
    of block_size - P tokens, each with the prompt in front (as the model was tuned)."""
    from minift.peft.prompt import PromptConfig, apply_prompt_tuning

    torch.manual_seed(4)
    config = GPTConfig(vocab_size=enc.n_vocab, block_size=16, n_layer=1, n_head=2, n_embd=12)
    model = apply_prompt_tuning(GPT(config).double().eval(), PromptConfig(num_virtual_tokens=5))
    gpt = model if isinstance(model, GPT) else model.base_model
    room = gpt.text_room()
    assert room == 11
    ids = [eot_id(enc), *enc.encode_ordinary(TEXT)]
    assert len(ids) - 1 > room  # several windows
    expected = 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, room):
            window = ids[start : start + room + 1]
            logp = torch.log_softmax(gpt(torch.tensor([window[:-1]])).logits[0].double(), -1)
            expected -= sum(logp[i, t].item() for i, t in enumerate(window[1:]))
    stats = lm.lm_statistics(gpt, enc, [TEXT])
    assert stats.n_tokens == len(ids) - 1
    assert stats.nll == pytest.approx(expected, rel=1e-12)
