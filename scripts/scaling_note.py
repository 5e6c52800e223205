"""The scaling note: memory per device for full fine-tuning, LoRA, QLoRA, FSDP and tensor
parallelism at GPT-2's sizes and at the published shapes of GPT-3 175B, Jurassic-1 Jumbo
and Megatron-Turing NLG 530B, from minift.train.memory (whose fp32 counts
tests/test_memory.py checks against a real training step's tensors).

    python scripts/scaling_note.py            # prints the table, writes docs/scaling.md

bf16 mixed precision (16 bytes per trained parameter), LoRA and QLoRA at r = 16 on every
linear layer of every block, no activations. Shapes (layers, width, heads, vocabulary):
GPT-2 (Radford et al. 2019); GPT-3 175B 96 x 12288, 96 heads (Brown et al. 2020);
Jurassic-1 Jumbo 76 x 13824, 96 heads, 256k vocabulary (Lieber et al. 2021);
MT-NLG 530B 105 x 20480, 128 heads (Smith et al. 2022). Counts from the GPT-2 layout
(learned positions of 2048 for the large three), so they differ from the published totals
by the architectures' small departures from it.
"""

from __future__ import annotations

import pathlib

from minift.model import GPTConfig
from minift.train.memory import memory_per_device, parameter_counts

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = {
    "GPT-2 124M": (12, 768, 12, 50257, 1024),
    "GPT-2 355M": (24, 1024, 16, 50257, 1024),
    "GPT-2 774M": (36, 1280, 20, 50257, 1024),
    "GPT-2 1.5B": (48, 1600, 25, 50257, 1024),
    "GPT-3 175B": (96, 12288, 96, 50257, 2048),
    "Jurassic-1 Jumbo": (76, 13824, 96, 256000, 2048),
    "MT-NLG 530B": (105, 20480, 128, 50257, 2048),
}
COLUMNS = [
    ("full", dict(method="full")),
    ("full, FSDP 8", dict(method="full", fsdp=8)),
    ("full, TP 8", dict(method="full", tensor_parallel=8)),
    ("full, TP 8 x FSDP 8", dict(method="full", tensor_parallel=8, fsdp=8)),
    ("LoRA", dict(method="lora")),
    ("QLoRA", dict(method="qlora")),
    ("QLoRA, FSDP 8", dict(method="qlora", fsdp=8)),
]


def main() -> None:
    gib = 2**30
    header = "| model | parameters | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    totals = {}
    for name, (L, d, h, V, T) in MODELS.items():
        config = GPTConfig(n_layer=L, n_embd=d, n_head=h, vocab_size=V, block_size=T)
        n = parameter_counts(config).total
        totals[name] = {c: memory_per_device(config, **kw)["total"] / gib for c, kw in COLUMNS}
        cells = [f"{totals[name][c]:,.1f}" for c, _ in COLUMNS]
        lines.append(f"| {name} | {n / 1e9:.2f}B | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    text = f"""# Scaling note: memory per device

GiB per device for weights, gradients and optimizer state (no activations), computed by
`python scripts/scaling_note.py` from `minift.train.memory`. bf16 mixed precision with an
fp32 master copy and AdamW: 16 bytes per trained parameter; the frozen base of LoRA in bf16
(2 bytes), of QLoRA in NF4 (4.127 bits for the blocks' linear layers, bf16 for the rest);
adapters at r = 16 on every linear layer of every block. FSDP 8 shards everything over 8
devices; TP 8 splits the blocks' matrices over 8 (Megatron-LM) and keeps embeddings,
norms and biases whole. The fp32 form of the same arithmetic equals the bytes a real
training step allocates (tests/test_memory.py: full fine-tuning and LoRA exactly, QLoRA
within NF4's block padding).

{table}

Read with an 80 GB (74.5 GiB) device in mind: full fine-tuning of GPT-2 1.5B needs
{totals["GPT-2 1.5B"]["full"]:.1f} GiB, of GPT-3 175B {totals["GPT-3 175B"]["full"]:,.0f} GiB;
QLoRA takes GPT-3 to {totals["GPT-3 175B"]["QLoRA"]:.1f} GiB ({totals["GPT-3 175B"]["QLoRA, FSDP 8"]:.1f}
per device sharded over 8), and then the activations, not counted here, decide; activation
checkpointing (lesson 24) is the lever for those. Shapes and sources are in the script's
docstring.
"""
    out = ROOT / "docs" / "scaling.md"
    out.write_text(text)
    print(f"written {out}")


if __name__ == "__main__":
    main()
