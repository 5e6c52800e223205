"""The GPT: token and position embeddings, a stack of pre-norm blocks, a final norm and a
language-model head tied to the token embedding (Radford et al. 2018, 2019).

    h_0 = wte[idx] + wpe[pos]
    h_l = h_{l-1} + Attn(LN(h_{l-1}));  h_l = h_l + MLP(LN(h_l))
    logits = LN_f(h_L) wte^T

With ``causal=False`` the same stack is a BERT-style encoder (Devlin et al. 2019): every
token sees every other, trained with the masked-language-model objective (minift.model.mlm).
Parameter names follow GPT-2's layout, so Hugging Face checkpoints map one to one.

Options that change no parameter names: a sparse attention pattern (``config.sparse``,
minift.model.sparse) and mixture-of-experts MLPs (``config.moe``, minift.model.moe, whose
experts read ...mlp.experts.E.c_fc).
An MoE model adds its routers' auxiliary losses to ``loss`` while training and reports
them as ``aux_loss`` (with per-layer ``router_stats``) in every mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minift.model.attention import AttentionInputs, SelfAttention
from minift.model.checkpoint import check_shapes, read_model_folder, save_model
from minift.model.config import GPTConfig
from minift.model.hf_gpt2 import read_hf_gpt2
from minift.model.kv_cache import KVCache
from minift.model.layers import MLP, init_weights, make_norm, residual_init_std
from minift.model.masks import attention_inputs, check_token_ids
from minift.model.moe import MoEMLP, RouterStats, moe_layers
from minift.model.outputs import IGNORE_INDEX, ModelOutput, lm_loss
from minift.model.sparse import density


def _drop_prompt(P: int, x, targets, hidden, attentions):
    """The outputs without the first P (soft prompt) positions."""
    targets = targets[:, P:] if targets is not None else None
    hidden = [h[:, P:] for h in hidden] if hidden is not None else None
    attentions = [a[:, :, P:] for a in attentions] if attentions is not None else None
    return x[:, P:], targets, hidden, attentions


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = SelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MoEMLP(config) if config.is_moe_layer(layer) else MLP(config)

    def forward(self, x, inputs: AttentionInputs, cache=None, need_weights: bool = False):
        a, probs = self.attn(self.ln_1(x), inputs, cache, need_weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, probs


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        if config.pos_emb == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Optional module giving (B, P, C) soft-prompt embeddings with a num_tokens
        # attribute: prompt tuning (minift.peft.prompt) sets it; None changes nothing.
        self.soft_prompt: nn.Module | None = None
        # Activation checkpointing (Chen et al. 2016): keep only each block's input while
        # training and recompute the block in the backward pass, trading about one extra
        # forward for activation memory that no longer grows with depth times width.
        self.activation_checkpointing = False
        if config.tie_weights:
            # One matrix both embeds tokens and scores them (Press and Wolf 2017).
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(lambda m: init_weights(m, config))
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_init_std(config))

    # ---------------------------------------------------------------- accounting
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (shared tensors once). non_embedding drops the token and position
        tables, the count used by scaling laws (Kaplan et al. 2020)."""
        n = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """Approximate FLOPs to process one token (Chowdhery et al. 2022, PaLM appendix B).

        A forward pass costs 2 FLOPs per weight used (one multiply, one add) plus the
        attention scores and mixing, 2 * 2 * n_layer * T * d per token (q k^T and p v).
        Kaplan et al. (2020, Table 1) list half that attention term, 2 * n_layer * T * d
        (their "Attention: Mask" row);
        the lm_head, tied or not, is a matmul every token pays for. Training (forward +
        backward) costs three times the forward. An MoE layer uses only top_k of its
        experts per token; a sparse pattern scores only its density's share of the keys.
        """
        c = self.config
        T = seq_len or c.block_size
        weights = self.num_params(non_embedding=True) + c.vocab_size * c.n_embd
        for moe in moe_layers(self):
            expert = sum(p.numel() for p in moe.experts[0].parameters())
            weights -= (moe.n_experts - moe.top_k) * expert
        forward = 2 * weights + 4 * c.n_layer * T * c.n_embd * density(c, T)
        return float(3 * forward if training else forward)

    # ---------------------------------------------------------------- forward
    def embed(self, idx, positions, inputs_embeds=None) -> torch.Tensor:
        x = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(positions)
        return x

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        compute_logits: bool = True,
    ) -> ModelOutput:
        """idx: (B, T) token ids. targets: (B, T), the token each position must predict
        (IGNORE_INDEX to skip), so a causal model's caller shifts by one.
        attention_mask: (B, T), or (B, past + T) with a cache: 1 = real token, 0 = padding.
        position_ids default to 0.. for unpadded input and count real tokens when padded,
        so a left-padded sequence gets the same positions as it would alone.
        inputs_embeds replaces wte[idx] (soft prompts). segment_ids (B, T) keep packed
        examples from attending to each other. compute_logits=False skips the lm_head
        (heads that read last_hidden need no vocabulary projection)."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, time), got shape {tuple(idx.shape)}")
        if inputs_embeds is None:
            check_token_ids(idx, self.config.vocab_size)
        n_prompt = self._soft_prompt_length(cache, segment_ids)
        if n_prompt:
            idx, targets, attention_mask, position_ids, inputs_embeds = self._prepend_prompt(
                idx, targets, attention_mask, position_ids, inputs_embeds
            )
        inputs = attention_inputs(
            self.config, idx, attention_mask, position_ids, cache, segment_ids
        )
        x = self.transformer.drop(self.embed(idx, inputs.positions, inputs_embeds))
        x, hidden, attentions = self._blocks(
            x, inputs, cache, output_hidden_states, output_attentions
        )
        x = self.transformer.ln_f(x)
        if n_prompt:  # report only the caller's positions; the prompt is internal
            x, targets, hidden, attentions = _drop_prompt(n_prompt, x, targets, hidden, attentions)
        if cache is not None:
            cache.advance(inputs.key_padding, inputs.positions)
        logits = self.lm_head(x) if compute_logits or targets is not None else None
        loss = lm_loss(logits, targets) if targets is not None else None
        aux_loss, router_stats = self.router_losses()
        if loss is not None and aux_loss is not None and self.training:
            loss = loss + aux_loss
        return ModelOutput(
            logits=logits,
            loss=loss,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            cache=cache,
            last_hidden=x,
            aux_loss=aux_loss,
            router_stats=router_stats,
        )

    def _blocks(self, x, inputs, cache, output_hidden_states: bool, output_attentions: bool):
        """Run the blocks; also return every block's output (after the embeddings) and
        attention probabilities when asked, else None."""
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for i, block in enumerate(self.transformer.h):
            layer_cache = cache.layers[i] if cache is not None else None
            recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
            if recompute and layer_cache is None and not output_attentions:
                # Non-reentrant checkpointing restores the RNG state, so the recomputed
                # block draws the same dropout masks as the first pass.
                x, probs = checkpoint(block, x, inputs, use_reentrant=False)
            else:
                x, probs = block(x, inputs, layer_cache, need_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(probs)
        return x, hidden, attentions

    def router_losses(self) -> tuple[torch.Tensor | None, list[RouterStats] | None]:
        """The mean weighted auxiliary loss of the MoE layers' last forward pass and their
        RouterStats, or (None, None) for a model without MoE layers."""
        if not self.config.moe.experts:
            return None, None
        layers = moe_layers(self.transformer.h)
        losses = [m.aux_loss for m in layers if m.stats is not None]
        if not losses:
            return None, None
        return torch.stack(losses).mean(), [m.stats for m in layers]

    def text_room(self) -> int:
        """Tokens of text one forward pass takes: block_size, less the soft prompt's P
        tokens when prompt tuning put one in front of every call."""
        return self.config.block_size - (self.soft_prompt.num_tokens if self.soft_prompt is not None else 0)  # fmt: skip

    def _soft_prompt_length(self, cache: KVCache | None, segment_ids) -> int:
        """P when a soft prompt goes in front of this call's tokens (not on cached steps,
        which already hold it), else 0."""
        if self.soft_prompt is None or (cache is not None and cache.length):
            return 0
        if segment_ids is not None:
            raise ValueError("a soft prompt cannot be combined with packed segment_ids")
        return self.soft_prompt.num_tokens

    def _prepend_prompt(self, idx, targets, attention_mask, position_ids, inputs_embeds):
        """Soft prompt tuning: P trained embeddings go in front of the tokens' embeddings,
        as if they were P extra tokens (masks, positions and targets are widened to match)."""
        B = idx.size(0)
        prompt = self.soft_prompt(B)
        P = prompt.size(1)
        tokens = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds
        inputs_embeds = torch.cat([prompt.to(tokens.dtype), tokens], dim=1)
        idx = F.pad(idx, (P, 0), value=0)
        if targets is not None:
            targets = F.pad(targets, (P, 0), value=IGNORE_INDEX)
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (P, 0), value=1)
        if position_ids is not None:
            front = torch.arange(P, device=idx.device).expand(B, P)
            position_ids = torch.cat([front, position_ids + P], dim=1)
        return idx, targets, attention_mask, position_ids, inputs_embeds

    # ---------------------------------------------------------------- helpers
    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        like = self.transformer.wte.weight
        return KVCache(self.config, batch, max_len or self.config.block_size, like)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """Sample max_new_tokens after idx; see minift.model.generation.generate."""
        from minift.model.generation import generate

        return generate(self, idx, max_new_tokens, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **overrides) -> GPT:
        """Load a local Hugging Face GPT-2 folder (config.json + model.safetensors)."""
        config, state = read_hf_gpt2(path, **overrides)
        return cls._from_state(config, state, str(path))

    def save(self, path) -> None:
        """Save to a folder: model.safetensors + config.json (minift's own format)."""
        save_model(self, path)

    @classmethod
    def load(cls, path, map_location="cpu") -> GPT:
        """Load a folder written by save()."""
        config, state = read_model_folder(path)
        return cls._from_state(config, state, str(path)).to(map_location)

    @classmethod
    def _from_state(cls, config: GPTConfig, state: dict, source: str) -> GPT:
        model = cls(config)
        check_shapes(model, state, source)
        model.load_state_dict(state, strict=False)  # strict=False: a tied lm_head is not stored
        return model
