"""Run by test_tensor_parallel under torchrun (2 processes): the same steps on the same
batches with a plain model and with a tensor-parallel copy; dump both."""

import copy
import json
import pathlib
import sys

import torch

from minift.model import GPT, GPTConfig
from minift.train.distributed import cleanup, setup_distributed
from minift.train.tensor_parallel import parallelize_gpt, qkv_order


def main(out: str) -> None:
    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=61)
    plain = GPT(config).double()  # float64: the ranks sum in another order than one process
    tp = parallelize_gpt(copy.deepcopy(plain))
    held = sum((p.to_local() if hasattr(p, "to_local") else p).numel()
               for block in tp.transformer.h for p in block.parameters())  # fmt: skip
    losses = {"plain": [], "tp": []}
    opts = {
        k: torch.optim.AdamW(m.parameters(), lr=3e-3) for k, m in (("plain", plain), ("tp", tp))
    }
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randint(0, 61, (4, 16), generator=gen)
        for name, model in (("plain", plain), ("tp", tp)):
            loss = model(x[:, :-1], x[:, 1:]).loss
            loss.backward()
            opts[name].step()
            opts[name].zero_grad()
            losses[name].append(loss.item())
    inv = torch.argsort(qkv_order(config.n_embd, config.n_head, info.world_size))
    diffs = {}
    for (name, a), (_, b) in zip(plain.named_parameters(), tp.named_parameters()):
        full = b.full_tensor() if hasattr(b, "full_tensor") else b
        if name.endswith("c_attn.weight") or name.endswith("c_attn.bias"):
            full = full[inv]
        diffs[name] = float((full.detach() - a.detach()).abs().max())
    if info.is_main:
        total = sum(p.numel() for block in plain.transformer.h for p in block.parameters())
        pathlib.Path(out + ".json").write_text(json.dumps(
            {"losses": losses, "diffs": diffs, "held": held, "block_total": total}))  # fmt: skip
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
