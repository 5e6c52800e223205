"""Task heads (minift/model/heads.py): pooling, the label-word head, regression, and
feature extraction with a linear probe.

Each test checks the head against something computed another way: a text scored alone,
the language model's own next-token logits, a hand-written MSE, a probe trained on
cached features.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from minift.model import GPT, GPTConfig
from minift.model.heads import SequenceClassifier

VOCAB, PAD = 37, 36


def tiny(n_embd: int = 12, n_layer: int = 2, tie: bool = True, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=VOCAB, block_size=24, n_layer=n_layer, n_head=3, n_embd=n_embd, tie_weights=tie
    )
    return GPT(config).eval()


def right_padded(lengths, generator, pad=PAD):
    """Random texts of the given lengths, right-padded with ``pad``: (idx, mask, texts)."""
    texts = [torch.randint(0, PAD, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    idx = torch.full((len(texts), width), pad, dtype=torch.long)
    mask = torch.zeros(len(texts), width, dtype=torch.long)
    for i, t in enumerate(texts):
        idx[i, : len(t)] = t
        mask[i, : len(t)] = 1
    return idx, mask, texts


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooling_under_right_padding_equals_each_text_alone(pooling):
    clf = SequenceClassifier(tiny(), num_labels=5, pooling=pooling).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [1, 7, 3, 11, 5]
    idx, mask, texts = right_padded(lengths, g)
    with torch.no_grad():
        batch = clf(idx, attention_mask=mask).logits
        feats = clf.features(idx, attention_mask=mask)
        # What is under the padding must not matter: fill it with other tokens.
        other = idx.masked_fill(mask == 0, 3)
        refilled = clf(other, attention_mask=mask).logits
        for i, text in enumerate(texts):
            hidden = clf.backbone(text[None]).last_hidden[0]  # (T, C), no padding at all
            by_hand = hidden[-1] if pooling == "last" else hidden.mean(0)
            torch.testing.assert_close(feats[i], by_hand, rtol=1e-5, atol=1e-6)
            alone = clf(text[None]).logits[0]
            torch.testing.assert_close(batch[i], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(refilled, batch, rtol=1e-5, atol=1e-6)
    # Without the mask the padding is read as text: the scores of padded rows change.
    with torch.no_grad():
        unmasked = clf(idx).logits
    assert (unmasked[0] - batch[0]).abs().max() > 1e-4


def test_last_and_mean_pooling_differ_and_bad_pooling_is_refused():
    gpt = tiny()
    idx, mask, _ = right_padded([6, 4], torch.Generator().manual_seed(2))
    last = SequenceClassifier(gpt, 3, pooling="last").features(idx, attention_mask=mask)
    mean = SequenceClassifier(gpt, 3, pooling="mean").features(idx, attention_mask=mask)
    assert (last - mean).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(gpt, 3, pooling="max")
    with pytest.raises(ValueError, match="num_labels"):
        SequenceClassifier(gpt, 0)


@pytest.mark.parametrize("tie", [True, False])
def test_init_head_gives_the_language_models_next_token_logits_for_the_label_tokens(tie):
    clf = SequenceClassifier(tiny(tie=tie), num_labels=4).eval()
    label_ids = [30, 2, 17, 9]
    clf.init_head(label_ids)
    idx, mask, _ = right_padded([9, 2, 6], torch.Generator().manual_seed(3))
    with torch.no_grad():
        head = clf(idx, attention_mask=mask).logits
        lm = clf.backbone(idx, attention_mask=mask).logits  # (B, T, V)
    last = mask.sum(1) - 1
    expected = lm[torch.arange(len(last)), last][:, label_ids]
    torch.testing.assert_close(head, expected, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(clf.head.bias) == 0
    # The order of the label ids is the order of the classes.
    clf.init_head(label_ids[::-1])
    with torch.no_grad():
        reversed_head = clf(idx, attention_mask=mask).logits
    torch.testing.assert_close(reversed_head, expected.flip(-1), rtol=1e-5, atol=1e-6)


def test_init_head_without_ids_reuses_the_label_tokens_on_new_embeddings():
    """What fine-tuning "from scratch" relies on: after the backbone is re-initialised,
    init_head() copies the same label tokens' rows of the *new* output embeddings."""
    clf = SequenceClassifier(tiny(seed=0), num_labels=3)
    clf.init_head([4, 8, 15])
    fresh = tiny(seed=1)
    clf.backbone.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        clf.head.bias.fill_(1.0)
    clf.init_head()
    torch.testing.assert_close(clf.head.weight, fresh.lm_head.weight[[4, 8, 15]], rtol=0, atol=0)
    assert torch.count_nonzero(clf.head.bias) == 0


def test_random_head_is_small_and_unbiased():
    clf = SequenceClassifier(tiny(n_embd=48), num_labels=6)
    assert torch.count_nonzero(clf.head.bias) == 0
    assert 0.01 < clf.head.weight.std().item() < 0.03  # N(0, 0.02^2), 288 draws


@pytest.mark.parametrize("bad", [[1, 2], [1, 2, 2], [1, 2, 3, 4]])
def test_init_head_refuses_wrong_label_tokens(bad):
    clf = SequenceClassifier(tiny(), num_labels=3)
    with pytest.raises(ValueError, match="3 distinct label tokens"):
        clf.init_head(bad)


def test_a_refused_init_head_leaves_the_head_as_it_was():
    clf = SequenceClassifier(tiny(), num_labels=3)
    with torch.no_grad():
        clf.head.bias.fill_(0.5)
    before = copy.deepcopy(clf.head.state_dict())
    with pytest.raises(ValueError):
        clf.init_head([1, 1, 2])
    for k, v in clf.head.state_dict().items():
        assert torch.equal(v, before[k]), f"head.{k} changed by a refused init_head"


def test_regression_head_uses_mse_and_learns_a_simple_target():
    """num_labels=1: a regressor. Target: the mean of a fixed per-token value over the
    text's real tokens, which mean pooling of the embeddings can represent."""
    torch.manual_seed(0)
    value = torch.randn(VOCAB)
    value[PAD] = 0.0
    model = SequenceClassifier(tiny(n_embd=18), num_labels=1, pooling="mean")

    def batch(seed: int, n: int = 32):
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(2, 12, (n,), generator=g).tolist()
        idx, mask, texts = right_padded(lengths, g)
        y = torch.stack([value[t].mean() for t in texts])
        return idx, mask, y

    idx, mask, y = batch(10_000, n=256)  # held out
    with torch.no_grad():
        out = model(idx, attention_mask=mask, labels=y)
    assert out.logits.shape == (256, 1)
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - y) ** 2).mean())
    start = out.loss.item()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(120):
        bi, bm, by = batch(step)
        loss = model(bi, attention_mask=bm, labels=by).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        end = model(idx, attention_mask=mask, labels=y).loss.item()
    var = y.var(unbiased=False).item()
    assert end < 0.1 * var, f"held-out MSE {end:.4f} vs target variance {var:.4f}"
    assert end < 0.1 * start


def test_linear_probe_on_cached_features_equals_training_the_frozen_classifiers_head():
    """Feature extraction: with the backbone frozen, training the classifier's head on
    the texts is the same computation as training a linear model on features extracted
    once. Same init, same optimizer, same batches -> the same weights; and the backbone
    does not move."""
    clf = SequenceClassifier(tiny(n_embd=24), num_labels=3)
    clf.backbone.requires_grad_(False)
    backbone_before = copy.deepcopy(clf.backbone.state_dict())
    g = torch.Generator().manual_seed(5)
    idx, mask, texts = right_padded(torch.randint(3, 10, (96,), generator=g).tolist(), g)
    labels = torch.tensor([int(t[-1]) % 3 for t in texts])  # a function of the last token

    with torch.no_grad():
        feats = clf.eval().features(idx, attention_mask=mask)  # extracted once
    probe = copy.deepcopy(clf.head)
    opt_probe = torch.optim.SGD(probe.parameters(), lr=0.5)
    opt_head = torch.optim.SGD(clf.head.parameters(), lr=0.5)
    for step in range(30):
        rows = torch.randperm(96, generator=torch.Generator().manual_seed(step))[:32]
        loss = clf(idx[rows], attention_mask=mask[rows], labels=labels[rows]).loss
        opt_head.zero_grad()
        loss.backward()
        opt_head.step()
        probe_loss = F.cross_entropy(probe(feats[rows]), labels[rows])
        opt_probe.zero_grad()
        probe_loss.backward()
        opt_probe.step()
        torch.testing.assert_close(probe_loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probe.weight, clf.head.weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(probe.bias, clf.head.bias, rtol=1e-4, atol=1e-6)
    for k, v in clf.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), f"frozen backbone tensor {k} changed"


def test_linear_probe_reads_a_label_from_frozen_random_features():
    """A label that is a function of the last token is linearly decodable from the
    last-token features of even a random backbone (the residual stream carries the token's
    embedding): a probe fitted on cached features of some texts classifies unseen ones."""
    clf = SequenceClassifier(tiny(n_embd=48), num_labels=3).eval()
    g = torch.Generator().manual_seed(7)

    def data(n):
        idx, mask, texts = right_padded(torch.randint(2, 10, (n,), generator=g).tolist(), g)
        with torch.no_grad():
            feats = clf.features(idx, attention_mask=mask)
        return feats, torch.tensor([int(t[-1]) % 3 for t in texts])

    x_train, y_train = data(600)
    x_val, y_val = data(300)
    probe = torch.nn.Linear(x_train.shape[1], 3)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x_train), y_train)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        acc = (probe(x_val).argmax(-1) == y_val).float().mean().item()
    assert acc > 0.8, f"probe accuracy {acc:.3f} on held-out texts (chance 0.33)"


@pytest.mark.parametrize("num_labels", [1, 3])
def test_a_float64_classifier_keeps_its_loss_in_float64(num_labels):
    """The loss follows the logits' precision (float32 only for half precision), so float64
    runs (the distributed tests' 1e-9 comparisons) are not rounded to float32 at the loss."""
    model = SequenceClassifier(tiny(), num_labels).double()
    idx = torch.randint(0, PAD, (5, 7), generator=torch.Generator().manual_seed(3))
    labels = (
        torch.randn(5, dtype=torch.float64) if num_labels == 1 else torch.tensor([0, 2, 1, 1, 0])
    )
    out = model(idx, labels=labels)
    logits = out.logits.squeeze(-1) if num_labels == 1 else out.logits
    ref = F.mse_loss(logits, labels) if num_labels == 1 else F.cross_entropy(logits, labels)
    assert out.loss.dtype == torch.float64
    assert out.loss.item() == ref.item()  # the same float64 arithmetic, no float32 detour
