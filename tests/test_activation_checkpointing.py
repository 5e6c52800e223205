"""GPT.activation_checkpointing: recomputing each block in the backward pass gives the same
loss and gradients (float64, dropout on: the recompute must draw the same masks)."""

import torch

from minift.model import GPT, GPTConfig, MoEConfig


def grads(model, x, on):
    model.activation_checkpointing = on
    model.zero_grad()
    torch.manual_seed(7)  # same dropout masks for both runs
    loss = model(x, x).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_checkpointed_blocks_give_the_same_gradients():
    for extra in (dict(), dict(moe=MoEConfig(experts=3, top_k=2), mlp="swiglu", pos_emb="rope")):
        torch.manual_seed(0)
        config = GPTConfig(n_layer=3, n_head=2, n_embd=24, block_size=16, vocab_size=53,
                           dropout=0.2, **extra)  # fmt: skip
        model = GPT(config).double().train()
        x = torch.randint(0, 53, (3, 13))
        loss_a, g_a = grads(model, x, False)
        loss_b, g_b = grads(model, x, True)
        assert torch.equal(loss_a, loss_b)
        for name in g_a:
            torch.testing.assert_close(g_a[name], g_b[name], rtol=1e-12, atol=1e-14)


def test_attention_weights_and_eval_take_the_plain_path():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=31))
    model.activation_checkpointing = True
    x = torch.randint(0, 31, (2, 5))
    out = model.train()(x, x, output_attentions=True)  # probabilities cannot be recomputed
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 5, 5)
    with torch.no_grad():
        on = model.eval()(x).logits
        model.activation_checkpointing = False
        assert torch.equal(on, model(x).logits)
