"""Hierarchical readers of long documents: padding invariance, the pooling weights, the
gated ensemble's formula, and documents longer than block_size in one pass."""

import pytest
import torch

from minift.longctx.hierarchical import (
    AttentionPool,
    GatedSegmentEnsemble,
    HANClassifier,
    HierarchicalTransformer,
    segment_batch,
    split_segments,
)
from minift.model import GPT, GPTConfig, MoEConfig

PAD = 60


def backbone(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))


READERS = {
    "han": lambda gpt: HANClassifier(gpt, 3),
    "han-rnn-last": lambda gpt: HANClassifier(gpt, 3, segment_rnn=True, layers="last"),
    "transformer": lambda gpt: HierarchicalTransformer(gpt, 3, max_segments=8, n_layer=2),
    "transformer-last": lambda gpt: HierarchicalTransformer(gpt, 3, max_segments=8, summary="last"),
    "gated": lambda gpt: GatedSegmentEnsemble(gpt, 3),
}


def test_split_and_batch_segments():
    assert split_segments(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_segments(list(range(7)), 3, max_segments=2) == [[0, 1, 2], [3, 4, 5]]
    batch = segment_batch([[1, 2, 3, 4, 5], [7, 8]], 2, PAD)
    assert batch["idx"].tolist() == [[[1, 2], [3, 4], [5, PAD]], [[7, 8], [PAD, PAD], [PAD, PAD]]]
    assert batch["segment_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_mask"][0].tolist() == [[1, 1], [1, 1], [1, 0]]
    with pytest.raises(ValueError, match="empty document"):
        split_segments([], 4)


@pytest.mark.parametrize("name", list(READERS))
def test_a_document_gets_the_same_logits_whatever_its_batch(name):
    model = READERS[name](backbone()).eval()
    doc = torch.randint(0, 60, (37,)).tolist()  # 3 segments of 16, the last one partial
    longer = torch.randint(0, 60, (100,)).tolist()  # 7 segments: pads doc's segments
    alone = model(**segment_batch([doc], 16, PAD)).logits
    batched = model(**segment_batch([longer, doc, doc[:20]], 16, PAD)).logits
    torch.testing.assert_close(batched[1], alone[0], atol=1e-5, rtol=1e-5)
    # 100 tokens is more than 6 x block_size: read in one pass all the same.
    assert batched.shape == (3, 3)


def test_han_pooling_weights_sum_to_one_per_level_and_skip_padding():
    model = HANClassifier(backbone(), 3).eval()
    batch = segment_batch([list(range(40)), list(range(5))], 16, PAD)
    out = model(**batch)
    tw, sw = out.token_weights, out.segment_weights  # (B, S, L), (B, S)
    real_segments = batch["segment_mask"].bool()
    torch.testing.assert_close(tw.sum(-1)[real_segments], torch.ones(int(real_segments.sum())))
    assert (tw[batch["token_mask"] == 0] == 0).all()
    torch.testing.assert_close(sw.sum(-1), torch.ones(2))
    assert (sw[~real_segments] == 0).all()


def test_attention_pool_is_the_written_formula():
    pool = AttentionPool(4, hidden=3)
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled, w = pool(h, mask)
    u = torch.tanh(h @ pool.proj.weight.T + pool.proj.bias) @ pool.context
    a0 = u[0, :3].softmax(-1)
    torch.testing.assert_close(w[0, :3], a0)
    torch.testing.assert_close(pooled[0], (a0[:, None] * h[0, :3]).sum(0))
    torch.testing.assert_close(pooled[1], (u[1].softmax(-1)[:, None] * h[1]).sum(0))


def test_gated_ensemble_is_a_mixture_of_segment_predictions():
    model = GatedSegmentEnsemble(backbone(), 3).eval()
    batch = segment_batch([list(range(45))], 16, PAD)
    out = model(**batch, labels=torch.tensor([2]))
    g, seg = out.segment_weights[0], out.segment_logits[0]
    p = (g[:, None] * seg.softmax(-1)).sum(0)
    torch.testing.assert_close(out.logits[0].exp(), p)
    torch.testing.assert_close(out.loss, -p[2].log())
    one = model(**segment_batch([list(range(10))], 16, PAD))  # one segment: its own prediction
    torch.testing.assert_close(one.logits[0], one.segment_logits[0, 0].log_softmax(-1))


@pytest.mark.parametrize("name", ["han", "transformer", "gated"])
def test_training_reaches_the_backbone_and_the_reader(name):
    model = READERS[name](backbone())
    batch = segment_batch([list(range(30)), list(range(12))], 16, PAD)
    model(**batch, labels=torch.tensor([0, 2])).loss.backward()
    assert model.backbone.transformer.wte.weight.grad.abs().sum() > 0
    assert model.layer_weights.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_moe_backbone_adds_its_router_loss_while_training():
    model = HANClassifier(backbone(moe=MoEConfig(experts=2, top_k=1)), 3)
    batch = segment_batch([list(range(30))], 16, PAD)
    out = model(**batch, labels=torch.tensor([1]))
    assert out.aux_loss is not None
    model.eval()
    torch.testing.assert_close(
        out.loss - out.aux_loss, model(**batch, labels=torch.tensor([1])).loss
    )


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="exceed max_segments 2"):
        HierarchicalTransformer(backbone(), 3, max_segments=2)(
            **segment_batch([list(range(40))], 16, PAD)
        )
    with pytest.raises(ValueError, match="num_labels"):
        HANClassifier(backbone(), 1)
    with pytest.raises(ValueError, match="summary must be"):
        GatedSegmentEnsemble(backbone(), 3, summary="first")
    with pytest.raises(ValueError, match=r"expected idx and token_mask \(B, S, L\)"):
        HANClassifier(backbone(), 3)(
            torch.zeros(2, 16, dtype=torch.long), torch.ones(2, 16), torch.ones(2)
        )
