"""Task heads on top of the transformer: a sequence classifier (or regressor).

The backbone turns a text into one hidden vector per token; a head pools them into one
vector and maps it to the task's outputs:
- last-token pooling reads the hidden state of the last real token, which in a causal
  model is the only one that has seen the whole text (Radford et al. 2018 read GPT's
  classification feature the same way);
- mean pooling averages the hidden states of the real tokens (common for encoders).
With num_labels == 1 and float labels the head is a regressor trained with MSE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minift.model.gpt import GPT, ModelOutput


def pool_hidden(
    hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """(B, T, C) -> (B, C). attention_mask (B, T) marks real tokens; right padding assumed."""
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if pooling == "last":
        last = attention_mask.long().sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    if pooling == "mean":
        w = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")


class SequenceClassifier(nn.Module):
    """backbone (a GPT) + pooling + a linear head: score = W pool(h) + b."""

    def __init__(self, backbone: GPT, num_labels: int, pooling: str = "last", dropout: float = 0.0):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.backbone = backbone
        self.config = backbone.config
        self.pooling = pooling
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, num_labels)
        self.label_token_ids: list[int] | None = None
        self.init_head()

    @torch.no_grad()
    def init_head(self, label_token_ids: list[int] | None = None) -> None:
        """Random head, or (label_token_ids) the backbone's own output embeddings of one
        word per label: the head then starts as the language model's next-token scores
        for those words, restricted to them (a "verbalizer", Schick and Schuetze 2021),
        so what the pretrained model knows about the label words is kept."""
        label_token_ids = label_token_ids if label_token_ids is not None else self.label_token_ids
        if label_token_ids is not None and (  # check before touching the head
            len(label_token_ids) != self.num_labels or len(set(label_token_ids)) != self.num_labels
        ):
            raise ValueError(
                f"need {self.num_labels} distinct label tokens, got {list(label_token_ids)}"
            )
        self.head.bias.zero_()
        if label_token_ids is None:
            nn.init.normal_(self.head.weight, std=0.02)
            return
        self.head.weight.copy_(self.backbone.lm_head.weight[list(label_token_ids)])
        self.label_token_ids = list(label_token_ids)

    def features(
        self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw
    ) -> torch.Tensor:
        """The pooled backbone features (B, C), before the head (for linear probes)."""
        out = self.backbone(idx, attention_mask=attention_mask, compute_logits=False, **kw)
        return pool_hidden(out.last_hidden, attention_mask, self.pooling)

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kw,
    ) -> ModelOutput:
        logits = self.head(self.dropout(self.features(idx, attention_mask, **kw)))
        loss = None
        if labels is not None:
            # float32 for half-precision logits; a float64 model keeps its loss in float64
            out = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            if self.num_labels == 1:
                loss = F.mse_loss(out.squeeze(-1), labels.to(out.dtype))
            else:
                loss = F.cross_entropy(out, labels)
        return ModelOutput(logits=logits, loss=loss)
