"""Hierarchical models: classify documents far longer than the transformer's context.

The document is cut into S segments of at most L tokens (L <= block_size). The pretrained
GPT encodes every segment on its own, all segments of a batch in one pass, giving token
states h[s, t]; a small model on top reads across segments. Cost: S L^2 = T L instead of
T^2, and no length limit but max_segments.

Three readers of the segment states:

- :class:`HANClassifier`, Hierarchical Attention Networks (Yang et al. 2016): attention
  pooling at two levels,

      word level:     u_t = tanh(W_w h_t + b_w),  a_t = softmax_t(u_t . c_w),  s = sum_t a_t h_t
      segment level:  g = BiGRU(s_1 .. s_S),      u_s = tanh(W_s g_s + b_s),
                      b_s = softmax_s(u_s . c_s), d = sum_s b_s g_s,   logits = W d + b

  (the paper's word-level BiGRU is the GPT here; its sentence-level BiGRU is optional,
  ``segment_rnn=True``: on the long-passkey task it kept the reader at chance for 250
  steps where attention alone reached 0.89, so it is off by default). The weights a and b
  sum to one per level and show which words and which segments decided.
- :class:`HierarchicalTransformer` (Pappagari et al. 2019, "Hierarchical Transformers
  for Long Document Classification", ToBERT): one summary vector per segment, plus a
  learned segment position, then a small bidirectional transformer over the segment
  summaries, pooled into the document vector.
- :class:`GatedSegmentEnsemble`: every segment predicts the label on its own, and a
  learned gate weights those predictions, a conditional-weighting ensemble (a mixture of
  experts over segments, Jacobs et al. 1991):

      p(y | doc) = sum_s g_s p(y | segment s),   g = softmax_s(w . summary_s)

Which states: the last layer of a causal language model encodes its guess of the *next*
token, and the residual stream grows so large that the token itself is hard to read back
(in the default base the embeddings have norm ~0.5, the block outputs ~25). The readers
therefore pool a learned mix of every layer, each normalised first (ELMo's scalar mix,
Peters et al. 2018): h = sum_l softmax(w)_l LayerNorm(h_l), embeddings included; lower
layers carry which tokens are there, higher ones their context (Tenney et al. 2019).
``layers="last"`` reads the final states alone.

Padding: segments are right-padded to L and documents padded to S segments; only real
segments go through the GPT, and every pooling ignores padding, so a document gets the
same logits whatever else is in its batch (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.model.attention import AttentionInputs, build_attention_mask
from minift.model.config import GPTConfig
from minift.model.gpt import GPT, Block
from minift.model.layers import make_norm


def split_segments(
    ids: list[int], segment_len: int, max_segments: int | None = None
) -> list[list[int]]:
    """Cut a token list into consecutive segments of segment_len (the last may be shorter),
    keeping the first max_segments."""
    if segment_len < 1:
        raise ValueError(f"segment_len must be positive, got {segment_len}")
    if not ids:
        raise ValueError("cannot segment an empty document")
    segments = [ids[i : i + segment_len] for i in range(0, len(ids), segment_len)]
    return segments[:max_segments] if max_segments else segments


def segment_batch(
    docs: list[list[int]], segment_len: int, pad_id: int, max_segments: int | None = None
) -> dict[str, torch.Tensor]:
    """Documents (token lists) as idx (B, S, L), token_mask (B, S, L) and segment_mask (B, S),
    right-padded, S the most segments of any document (at most max_segments)."""
    split = [split_segments(d, segment_len, max_segments) for d in docs]
    S = max(len(s) for s in split)
    idx = torch.full((len(docs), S, segment_len), pad_id, dtype=torch.long)
    token_mask = torch.zeros(len(docs), S, segment_len, dtype=torch.long)
    for b, segments in enumerate(split):
        for s, seg in enumerate(segments):
            idx[b, s, : len(seg)] = torch.tensor(seg)
            token_mask[b, s, : len(seg)] = 1
    return {"idx": idx, "token_mask": token_mask, "segment_mask": token_mask.amax(dim=-1)}


class AttentionPool(nn.Module):
    """HAN attention pooling: a = softmax(tanh(W h + b) . c) over the unmasked positions,
    pooled = sum a h. Returns (pooled (..., C), weights (..., T))."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden or dim)
        self.context = nn.Parameter(torch.randn(hidden or dim) * 0.02)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.tanh(self.proj(h)) @ self.context.to(h.dtype)  # (..., T)
        scores = scores.float().masked_fill(~mask.bool(), float("-inf"))
        weights = scores.softmax(dim=-1).nan_to_num(0.0)  # an all-padding row pools to zero
        return (weights.to(h.dtype).unsqueeze(-1) * h).sum(dim=-2), weights


@dataclass
class HierarchicalOutput:
    logits: torch.Tensor  # (B, num_labels)
    loss: torch.Tensor | None = None
    segment_weights: torch.Tensor | None = None  # (B, S): attention or gate over segments
    token_weights: torch.Tensor | None = None  # (B, S, L): word attention (HAN)
    segment_logits: torch.Tensor | None = None  # (B, S, num_labels): the ensemble's members
    aux_loss: torch.Tensor | None = None  # the backbone's MoE router losses, if any


class SegmentModel(nn.Module):
    """Shared part: the backbone GPT encodes the real segments in one batch."""

    def __init__(self, backbone: GPT, num_labels: int, layers: str = "mix") -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        if layers not in ("mix", "last"):
            raise ValueError(f"layers must be 'mix' or 'last', got {layers!r}")
        self.backbone = backbone
        self.config = backbone.config
        self.num_labels = num_labels
        # Scalar mix over the embeddings and every block's output (the last one after ln_f).
        self.layer_weights = (
            nn.Parameter(torch.zeros(backbone.config.n_layer + 1)) if layers == "mix" else None
        )

    def encode(
        self, idx: torch.Tensor, token_mask: torch.Tensor, segment_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, S, L) segments -> token states (B, S, L, C) (zeros for padding segments) and
        the backbone's auxiliary loss."""
        if idx.dim() != 3 or token_mask.shape != idx.shape or segment_mask.shape != idx.shape[:2]:
            raise ValueError(
                f"expected idx and token_mask (B, S, L) and segment_mask (B, S), got "
                f"{tuple(idx.shape)}, {tuple(token_mask.shape)}, {tuple(segment_mask.shape)}"
            )
        B, S, L = idx.shape
        real = segment_mask.bool().reshape(-1)
        flat_idx, flat_mask = idx.reshape(B * S, L)[real], token_mask.reshape(B * S, L)[real]
        padded = bool((flat_mask == 0).any())
        mix = self.layer_weights is not None
        out = self.backbone(
            flat_idx, attention_mask=flat_mask if padded else None, compute_logits=False,
            output_hidden_states=mix,
        )  # fmt: skip
        states = out.last_hidden
        if mix:
            layers = [*out.hidden_states[:-1], out.last_hidden]
            w = self.layer_weights.softmax(dim=0).to(states.dtype)
            states = sum(w[i] * F.layer_norm(h, h.shape[-1:]) for i, h in enumerate(layers))
        h = states.new_zeros(B * S, L, states.size(-1))
        h[real] = states
        return h.view(B, S, L, -1), out.aux_loss

    def finish(self, logits, labels, aux, log_probs: bool = False, **extra) -> HierarchicalOutput:
        loss = None
        if labels is not None:
            loss = F.nll_loss(logits, labels) if log_probs else F.cross_entropy(logits, labels)
            if aux is not None and self.training:
                loss = loss + aux
        return HierarchicalOutput(logits=logits, loss=loss, aux_loss=aux, **extra)


class HANClassifier(SegmentModel):
    """Words -> segments -> document by attention pooling (Yang et al. 2016)."""

    def __init__(
        self, backbone: GPT, num_labels: int, segment_rnn: bool = False, layers: str = "mix"
    ) -> None:
        super().__init__(backbone, num_labels, layers)
        C = backbone.config.n_embd
        self.word_pool = AttentionPool(C)
        # The paper's sentence encoder: a BiGRU over segment vectors, C/2 per direction.
        self.segment_rnn = (
            nn.GRU(C, C // 2, batch_first=True, bidirectional=True) if segment_rnn else None
        )
        width = 2 * (C // 2) if segment_rnn else C
        self.segment_pool = AttentionPool(width)
        self.head = nn.Linear(width, num_labels)

    def forward(self, idx, token_mask, segment_mask, labels=None) -> HierarchicalOutput:
        h, aux = self.encode(idx, token_mask, segment_mask)
        seg_vec, token_weights = self.word_pool(h, token_mask)  # (B, S, C), (B, S, L)
        if self.segment_rnn is not None:
            lengths = segment_mask.sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(
                seg_vec, lengths, batch_first=True, enforce_sorted=False
            )
            seg_vec, _ = self.segment_rnn(packed)
            seg_vec, _ = nn.utils.rnn.pad_packed_sequence(
                seg_vec, batch_first=True, total_length=idx.size(1)
            )
        doc, segment_weights = self.segment_pool(seg_vec, segment_mask)
        return self.finish(
            self.head(doc), labels, aux, segment_weights=segment_weights,
            token_weights=token_weights,
        )  # fmt: skip


class _SummaryMixin:
    """One vector per segment: the last real token's state (in a causal GPT the only one
    that read the whole segment) or an attention pool over the tokens."""

    def make_summary(self, dim: int, summary: str) -> None:
        if summary not in ("last", "attention"):
            raise ValueError(f"summary must be 'last' or 'attention', got {summary!r}")
        self.summary = summary
        self.summary_pool = AttentionPool(dim) if summary == "attention" else None

    def summarize(self, h: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        if self.summary_pool is not None:
            return self.summary_pool(h, token_mask)[0]
        last = (token_mask.sum(dim=-1) - 1).clamp(min=0)  # (B, S)
        return h.gather(2, last[..., None, None].expand(*last.shape, 1, h.size(-1))).squeeze(2)


class HierarchicalTransformer(SegmentModel, _SummaryMixin):
    """Segment summaries + learned segment positions -> a small bidirectional transformer
    -> mean over the real segments -> linear head (Pappagari et al. 2019)."""

    def __init__(
        self,
        backbone: GPT,
        num_labels: int,
        max_segments: int = 64,
        n_layer: int = 1,
        n_head: int | None = None,
        summary: str = "attention",
        dropout: float = 0.0,
        layers: str = "mix",
    ) -> None:
        super().__init__(backbone, num_labels, layers)
        C = backbone.config.n_embd
        self.make_summary(C, summary)
        self.seg_config = GPTConfig(
            vocab_size=1, block_size=max_segments, n_layer=n_layer,
            n_head=n_head or backbone.config.n_head, n_embd=C, dropout=dropout, causal=False,
        )  # fmt: skip
        self.segment_pos = nn.Embedding(max_segments, C)
        nn.init.normal_(self.segment_pos.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(self.seg_config) for _ in range(n_layer))
        self.ln_f = make_norm(self.seg_config)
        self.head = nn.Linear(C, num_labels)

    def forward(self, idx, token_mask, segment_mask, labels=None, output_attentions=False):
        B, S, _ = idx.shape
        if S > self.seg_config.block_size:
            raise ValueError(
                f"{S} segments exceed max_segments {self.seg_config.block_size}; "
                "raise max_segments or cut the document"
            )
        h, aux = self.encode(idx, token_mask, segment_mask)
        x = self.summarize(h, token_mask) + self.segment_pos.weight[:S]
        mask, _ = build_attention_mask(False, S, 0, segment_mask, idx.device)
        positions = torch.arange(S, device=idx.device).expand(B, S)
        inputs = AttentionInputs(positions=positions, mask=mask, causal_no_mask=False)
        probs = None
        for block in self.blocks:
            x, probs = block(x, inputs, need_weights=output_attentions)
        x = self.ln_f(x)
        w = segment_mask.to(x.dtype).unsqueeze(-1)
        doc = (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
        # Segment weights: how much the last layer's queries attend to each segment.
        seg_weights = None
        if probs is not None:
            seg_weights = (probs.float().mean(dim=1) * w).sum(dim=1) / w.sum(dim=1)
        return self.finish(self.head(doc), labels, aux, segment_weights=seg_weights)


class GatedSegmentEnsemble(SegmentModel, _SummaryMixin):
    """Each segment predicts; a learned gate weights the predictions:
    p(y | doc) = sum_s softmax_s(w . summary_s) p(y | s). ``logits`` are log p(y | doc)."""

    def __init__(self, backbone: GPT, num_labels: int, summary: str = "attention") -> None:
        super().__init__(backbone, num_labels)
        C = backbone.config.n_embd
        self.make_summary(C, summary)
        self.head = nn.Linear(C, num_labels)
        self.gate = nn.Linear(C, 1)

    def forward(self, idx, token_mask, segment_mask, labels=None) -> HierarchicalOutput:
        h, aux = self.encode(idx, token_mask, segment_mask)
        summary = self.summarize(h, token_mask)  # (B, S, C)
        seg_logits = self.head(summary).float()
        gate = self.gate(summary).squeeze(-1).float()
        log_g = gate.masked_fill(~segment_mask.bool(), float("-inf")).log_softmax(dim=-1)
        log_p = torch.logsumexp(log_g.unsqueeze(-1) + seg_logits.log_softmax(dim=-1), dim=1)
        return self.finish(
            log_p, labels, aux, log_probs=True, segment_weights=log_g.exp(),
            segment_logits=seg_logits,
        )  # fmt: skip
