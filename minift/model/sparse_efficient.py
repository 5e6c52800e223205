"""Block-sparse attention in plain PyTorch with memory linear in the sequence length.

The masked reference (minift.model.sparse) builds the T x T score matrix and throws most
of it away. Here each query block gathers only the key blocks its layout row lists:

    for query block I:   K_I = [k_J for J in cols(I)],  V_I = [v_J for J in cols(I)]
                         O_I = softmax(Q_I K_I^T / sqrt(d) + M_I) V_I

where M_I is the token mask of the pattern restricted to the gathered keys (the causal
rule inside the diagonal block, padding, packing). A query block with c(I) key blocks
costs c(I) * bs^2 scores instead of T * bs, so with c bounded (window + global + random)
memory and time grow as O(T c bs): linearly in T. Autograd differentiates the gathers
(their backward scatters the gradients back onto the key blocks).

Rows are processed in chunks of consecutive query blocks, at most ``budget`` gathered key
blocks per chunk: a global query block that sees all nb blocks then costs one chunk of
bs x T scores, not nb of them. Padding rows (queries before the first real query block
boundary, or past the end) see a finite score and are dropped from the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minift.kernels.block_sparse import index_lists

MASKED = torch.finfo(torch.float32).min  # finite, so a row with nothing visible is not NaN


def _chunks(counts: list[int], budget: int) -> list[tuple[int, int, int]]:
    """Split query blocks into runs (start, end, K) with (end - start) * K <= budget, where
    K is the largest key-block count in the run (a single row may exceed the budget)."""
    runs, start, widest = [], 0, 0
    for i, c in enumerate(counts):
        wider = max(widest, c)
        if i > start and (i + 1 - start) * wider > budget:
            runs.append((start, i, widest))
            start, wider = i, c
        widest = wider
    runs.append((start, len(counts), widest))
    return runs


def efficient_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    block_size: int,
    causal: bool,
    n_prefix: int = 0,
    key_padding: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    dropout: float = 0.0,
    budget: int = 256,
) -> torch.Tensor:
    """Sparse attention over the blocks of ``layout`` without a T x T matrix.

    q (B, H, Tq, D); k, v (B, H, n_prefix + Tk, D): n_prefix trained prefix keys that
    every query sees, then the Tk sequence keys; the queries are the last Tq of those.
    layout bool (1 or H, nb, nb) with nb = ceil(Tk / block_size); key_padding (B, Tk),
    1 = real; segment_ids (B, Tq), only with Tq == Tk. Equal to
    masked_sparse_attention under sparse_mask(...) (tested, forward and backward).
    """
    B, H, Tq, D = q.shape
    P, Tk, bs = n_prefix, k.size(2) - n_prefix, block_size
    nb = math.ceil(Tk / bs)
    if layout.shape[-1] != nb or Tk < Tq:
        raise ValueError(f"layout {tuple(layout.shape)} does not cover {Tk} keys in blocks of {bs}")
    if segment_ids is not None and Tq != Tk:
        raise ValueError("segment_ids (packed sequences) cannot be combined with a KV cache")
    scale = 1.0 / math.sqrt(D)
    device = q.device
    acc = torch.promote_types(q.dtype, torch.float32)  # softmax in float32 (or float64)
    past = Tk - Tq
    qb0, lead = divmod(past, bs)  # first query block; queries before it in that block
    nq = math.ceil((lead + Tq) / bs)
    # Pad so that query and key blocks are whole: (B, H, nq, bs, D) and (B, H, nb, bs, D).
    qb = F.pad(q, (0, 0, lead, nq * bs - lead - Tq)).view(B, H, nq, bs, D)
    pk, pv = k[:, :, :P], v[:, :, :P]
    kb = F.pad(k[:, :, P:], (0, 0, 0, nb * bs - Tk)).view(B, H, nb, bs, D)
    vb = F.pad(v[:, :, P:], (0, 0, 0, nb * bs - Tk)).view(B, H, nb, bs, D)
    q_pos = (qb0 * bs + torch.arange(nq * bs, device=device)).view(nq, bs)
    flags = key_padding is not None or segment_ids is not None
    if key_padding is not None:
        real = F.pad(key_padding.bool(), (0, nb * bs - Tk))  # (B, nb * bs)
    if segment_ids is not None:
        seg = F.pad(segment_ids, (0, nb * bs - Tk), value=-1)
    rows = layout[:, qb0 : qb0 + nq].to(device)  # (Hl, nq, nb): the pattern's rows
    if flags:  # a query always sees its own key: gather the own block too
        own = torch.zeros_like(rows)
        own[:, torch.arange(nq), torch.arange(qb0, qb0 + nq).clamp(max=nb - 1)] = True
        cols, counts = index_lists(rows | own)
    else:
        cols, counts = index_lists(rows)  # (Hl, nq, nb) key blocks first, (Hl, nq) counts
    Hl = layout.size(0)
    heads = torch.arange(Hl, device=device)[:, None, None]
    outs = []
    for r0, r1, K in _chunks(counts.max(dim=0).values.tolist(), budget):
        R = r1 - r0
        idx = cols[:, r0:r1, :K].long()  # (Hl, R, K) key blocks of each query block
        listed = torch.arange(K, device=device) < counts[:, r0:r1, None]  # not list padding
        in_pattern = listed & rows[:, r0:r1].gather(-1, idx)
        # Gather: (B, H, R, K, bs, D) -> (B, H, R, K * bs, D). Shared layouts index every head
        # alike; per-head layouts (BigBird's random blocks) index head h with its own list.
        if Hl == 1:
            kg, vg = kb[:, :, idx[0]], vb[:, :, idx[0]]
        else:
            kg, vg = kb[:, heads, idx], vb[:, heads, idx]
        kg, vg = kg.reshape(B, H, R, K * bs, D), vg.reshape(B, H, R, K * bs, D)
        k_pos = (idx[..., None] * bs + torch.arange(bs, device=device)).view(Hl, R, 1, K * bs)
        qp = q_pos[r0:r1][None, :, :, None]  # (1, R, bs, 1)
        block_ok = in_pattern[..., None].expand(Hl, R, K, bs).reshape(Hl, R, 1, K * bs)
        ok = block_ok & (k_pos < Tk)
        if causal:
            ok = ok & (k_pos <= qp)
        ok = ok.unsqueeze(0)  # (1, Hl, R, bs or 1, K * bs)
        if flags:
            if key_padding is not None:
                ok = ok & real[:, k_pos[:, :, 0]][:, :, :, None, :]
            if segment_ids is not None:
                q_seg = seg[:, q_pos[r0:r1].clamp(max=nb * bs - 1)]  # (B, R, bs); no cache here
                ok = ok & (seg[:, k_pos[:, :, 0]][:, :, :, None, :] == q_seg[:, None, :, :, None])
            diag = listed[..., None].expand(Hl, R, K, bs).reshape(Hl, R, 1, K * bs) & (k_pos == qp)
            ok = ok | diag.unsqueeze(0)
        s = (qb[:, :, r0:r1] @ kg.transpose(-1, -2)).to(acc) * scale  # (B, H, R, bs, K * bs)
        s = s.masked_fill(~ok, MASKED)
        if P:  # prefix keys: visible to every query
            s = torch.cat(
                [(qb[:, :, r0:r1] @ pk[:, :, None].transpose(-1, -2)).to(acc) * scale, s], -1
            )
        p = F.dropout(s.softmax(dim=-1), dropout).to(q.dtype)
        o = p[..., P:] @ vg
        if P:
            o = o + p[..., :P] @ pv[:, :, None]
        outs.append(o)
    out = torch.cat(outs, dim=2).reshape(B, H, nq * bs, D)
    return out[:, :, lead : lead + Tq]
