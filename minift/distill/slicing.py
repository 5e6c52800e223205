"""Initialise a narrower student from the teacher's own weights.

Three cuts, each with its reason:

1. **Width, by rotation then slicing** (SliceGPT, Ashkboos et al. 2024). A transformer's
   residual stream is a shared space every block reads (through a norm) and writes to. An
   orthogonal change of basis Q of that space leaves the network's function unchanged if
   every reader's weight is multiplied by Q and every writer's by Q^T. Choose Q's columns
   as the principal directions of the stream (eigenvectors of E[x x^T] on calibration
   text, x normalised as the norms see it), and drop all but the first d: the student's
   residual stream is x_s = x Q_d, and nothing else changes.

   LayerNorm is not rotation-invariant because of its mean subtraction; the fix is to
   make every writer (embeddings, c_proj of attention and MLP) write centred vectors,
   W -> W M with M = I - 11^T / C. The stream then has zero mean, LayerNorm's centring
   does nothing, and LN(x) = g * x / rms(x) + b: an RMSNorm whose gain g and bias b fold
   into the linear that reads it (W diag(g), c + W b). The student uses RMSNorm; its
   rms over d channels instead of C is corrected by a gain of sqrt(C / d) and an epsilon
   of eps * C / d. With d = C the student computes exactly what the teacher does.

2. **Heads** (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): keep the
   n_head heads whose output adds most to the residual stream, E ||W_O[:, h] o_h||, on
   calibration text. A kept head keeps its head_dim, so its attention is untouched.

3. **MLP neurons**: keep the n_inner neurons with the largest E|act_j| * ||W_out[:, j]||,
   the size of what each one writes.

What cannot be exact: with tied embeddings the output layer is the (sliced) embedding, so
ln_f's per-channel gain cannot be folded into it; the student's ln_f gain is the diagonal
of Q_d^T diag(g) Q_d (the nearest diagonal in the new basis) and ln_f's bias, a constant
logit offset per token, is dropped. A classification head is separate, so it folds both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minift.model import GPT, GPTConfig


@dataclass
class Calibration:
    second_moment: torch.Tensor  # (C, C): E[x x^T] of the centred, rms-normalised stream
    head_importance: torch.Tensor  # (n_layer, n_head)
    neuron_importance: torch.Tensor  # (n_layer, inner)
    tokens: int


def _norm_params(norm, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = norm.weight.detach().double()
    b = norm.bias.detach().double() if getattr(norm, "bias", None) is not None else torch.zeros(C)
    return g, b.to(g)


@torch.no_grad()
def calibrate(teacher: GPT, batches) -> Calibration:
    """Statistics of the teacher on calibration batches of (idx, attention_mask or None)."""
    cfg = teacher.config
    if cfg.moe.experts:
        raise ValueError("the teacher's MLPs are mixtures of experts; slicing handles dense MLPs")
    C, H, D = cfg.n_embd, cfg.n_head, cfg.head_dim
    second = torch.zeros(C, C, dtype=torch.float64)
    heads = torch.zeros(cfg.n_layer, H, dtype=torch.float64)
    neurons = torch.zeros(cfg.n_layer, cfg.inner_dim, dtype=torch.float64)
    current_mask: list[torch.Tensor] = []

    def real(t: torch.Tensor) -> torch.Tensor:  # (B, T, ...) -> (real tokens, ...)
        return t[current_mask[0]].double()

    def head_hook(layer):
        def hook(module, args):
            y = real(args[0]).view(-1, H, D)  # the heads' outputs, concatenated
            w = module.weight.double().view(C, H, D)
            heads[layer] += torch.einsum("nhd,chd->nhc", y, w).norm(dim=-1).sum(0)

        return hook

    def neuron_hook(layer):
        def hook(module, args):
            act = real(args[0]).abs().sum(0)
            neurons[layer] += act * module.weight.double().norm(dim=0)

        return hook

    handles = []
    for i, block in enumerate(teacher.transformer.h):
        handles.append(block.attn.c_proj.register_forward_pre_hook(head_hook(i)))
        handles.append(block.mlp.c_proj.register_forward_pre_hook(neuron_hook(i)))
    was_training = teacher.training
    teacher.eval()
    n_tokens = 0
    try:
        for idx, mask in batches:
            idx = idx.to(teacher.lm_head.weight.device)
            m = torch.ones_like(idx, dtype=torch.bool) if mask is None else mask.to(idx).bool()
            current_mask[:] = [m]
            out = teacher(idx, attention_mask=mask, output_hidden_states=True)
            for h in out.hidden_states:
                x = real(h)
                if cfg.norm == "layernorm":
                    x = x - x.mean(-1, keepdim=True)
                x = x / x.pow(2).mean(-1, keepdim=True).add(cfg.norm_eps).sqrt()
                second += x.T @ x
            n_tokens += int(m.sum())
    finally:
        for h in handles:
            h.remove()
        teacher.train(was_training)
    if n_tokens == 0:
        raise ValueError("calibration needs at least one real token; the batches were empty")
    scale = n_tokens * len(out.hidden_states)
    return Calibration(second / scale, heads / n_tokens, neurons / n_tokens, n_tokens)


def principal_basis(second_moment: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of a symmetric matrix, columns sorted by decreasing eigenvalue."""
    values, vectors = torch.linalg.eigh(second_moment)
    return vectors[:, values.argsort(descending=True)]


def _top(importance: torch.Tensor, k: int) -> torch.Tensor:
    return importance.topk(k).indices.sort().values


def student_config(
    tc: GPTConfig, blocks: list[int], n_embd: int, n_head: int, n_inner: int
) -> GPTConfig:
    """The sliced student's config: ``len(blocks)`` blocks of width ``n_embd`` (whole
    heads of the teacher's size), RMSNorm with eps scaled to the narrower width. A shape
    the teacher cannot give is a ValueError listing every problem."""
    C, D, d = tc.n_embd, tc.head_dim, n_embd
    problems = []
    if d != n_head * D:
        problems.append(
            f"n_embd {d} must be n_head ({n_head}) x the teacher's head_dim {D} (kept heads keep their size)"
        )
    if not 1 <= n_head <= tc.n_head:
        problems.append(f"n_head {n_head} must be in 1..{tc.n_head}")
    if not 1 <= n_inner <= tc.inner_dim:
        problems.append(f"n_inner {n_inner} must be in 1..{tc.inner_dim}")
    if any(not 0 <= b < tc.n_layer for b in blocks):
        problems.append(f"blocks {blocks} must be in 0..{tc.n_layer - 1}")
    if tc.moe.experts:
        problems.append("the teacher's MLPs are mixtures of experts; slicing handles dense MLPs")
    if problems:
        raise ValueError("cannot slice the teacher: " + "; ".join(problems))
    return GPTConfig.from_dict(
        {
            **tc.to_dict(),
            "n_layer": len(blocks),
            "n_embd": d,
            "n_head": n_head,
            "n_inner": n_inner,
            "norm": "rmsnorm",
            "norm_eps": tc.norm_eps * C / d,
        }
    )


@torch.no_grad()
def slice_teacher(
    teacher: GPT,
    stats: Calibration,
    blocks: list[int],
    n_embd: int,
    n_head: int,
    n_inner: int | None = None,
) -> tuple[GPT, torch.Tensor, tuple[torch.Tensor, torch.Tensor], list[list[int]]]:
    """(student GPT, basis Q_d (C x d), the teacher's ln_f (gain, bias), the teacher heads
    each student block kept) -- see the module docstring."""
    tc = teacher.config
    C, D = tc.n_embd, tc.head_dim
    d = n_embd
    n_inner = n_inner or tc.inner_dim * d // C
    sc = student_config(tc, blocks, d, n_head, n_inner)
    student = GPT(sc).to(teacher.lm_head.weight.device)
    Q = principal_basis(stats.second_moment)[:, :d]  # (C, d), float64
    M = torch.eye(C, dtype=torch.float64)
    if tc.norm == "layernorm":
        M -= 1.0 / C  # writers write centred vectors, so LayerNorm's centring is a no-op
    write = M @ Q  # a row vector x in the teacher's stream becomes x @ write in the student's
    gain = (C / d) ** 0.5

    def put(param, value):
        param.copy_(value.to(param.dtype))

    def w(t):
        return t.detach().double()

    tt, st = teacher.transformer, student.transformer
    put(st.wte.weight, w(tt.wte.weight) @ write)
    if "wpe" in tt:
        put(st.wpe.weight, w(tt.wpe.weight) @ write)

    def read(dst, src, rows, norm):  # a linear reading the stream through a norm
        g, b = _norm_params(norm, C)
        put(dst.weight, w(src.weight)[rows] @ torch.diag(g) @ Q)
        if dst.bias is not None:
            put(dst.bias, w(src.bias)[rows] + w(src.weight)[rows] @ b)

    def emit(dst, src, cols):  # a linear writing into the stream
        put(dst.weight, write.T @ w(src.weight)[:, cols])
        if dst.bias is not None:
            put(dst.bias, write.T @ w(src.bias))

    head_maps = []
    for j, b in enumerate(blocks):
        tb, sb = tt.h[b], st.h[j]
        kept = _top(stats.head_importance[b], n_head)
        head_maps.append(kept.tolist())
        cols = (kept[:, None] * D + torch.arange(D)).flatten()
        qkv = torch.cat([part * C + cols for part in range(3)])
        read(sb.attn.c_attn, tb.attn.c_attn, qkv, tb.ln_1)
        emit(sb.attn.c_proj, tb.attn.c_proj, cols)
        neurons = _top(stats.neuron_importance[b], n_inner)
        fc_rows = neurons if tc.mlp == "gelu" else torch.cat([neurons, tc.inner_dim + neurons])
        read(sb.mlp.c_fc, tb.mlp.c_fc, fc_rows, tb.ln_2)
        emit(sb.mlp.c_proj, tb.mlp.c_proj, neurons)
        sb.ln_1.weight.fill_(gain)
        sb.ln_2.weight.fill_(gain)
    g_f, b_f = _norm_params(tt.ln_f, C)
    put(st.ln_f.weight, gain * torch.diagonal(Q.T @ torch.diag(g_f) @ Q))
    if not tc.tie_weights:
        put(student.lm_head.weight, w(teacher.lm_head.weight) @ torch.diag(g_f) @ Q)
        put(st.ln_f.weight, torch.full((d,), gain, dtype=torch.float64))
    return student, Q.to(teacher.lm_head.weight.dtype), (g_f, b_f), head_maps
