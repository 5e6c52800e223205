"""On-policy distillation: the student learns on text it sampled itself.

A student trained on fixed text (the data, or the teacher's generations) is only ever
shown prefixes someone else wrote; when it generates, it conditions on its own, and
its early mistakes lead it where it was never trained (exposure bias). Generalized
knowledge distillation (GKD, Agarwal et al. 2024) fixes the mismatch: a fraction lambda
of the sequences are continuations sampled from the *current* student, and on those the
loss is a token-level divergence between the teacher's and the student's next-token
distributions, given the student's prefix. MiniLLM (Gu et al. 2024) minimises the
sequence-level reverse KL, KL(q_student || p_teacher), by policy gradient; the
single-step part of its gradient is the token-level reverse KL on student samples, which
is what this module trains (MiniLLM's long-horizon reward term is not implemented).

    batch_fn = OnPolicyBatches(student, data_batch_fn, prompt_len=16, fraction=0.5)
    distill(teacher, student, objective(batch_fn), DistillConfig(divergence="reverse", alpha=1))

Sampled rows are marked ``unlabeled``: the loop computes no hard-label loss on them (the
student's own tokens are not labels) and the divergence only on the generated tokens.
The batch is a function of (seed, step, micro) and of the student's weights at that
step, so a resumed run samples the same text.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from minift.model import GPT
from minift.model.gpt import IGNORE_INDEX
from minift.seeding import batch_generator, sample_rows


@torch.no_grad()
def sample_continuations(
    model: GPT,
    prompts: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """prompts (B, P) -> (B, P + length) with ``length`` tokens sampled from ``model``
    (in eval mode, whatever mode it was in; restored afterwards)."""
    if not isinstance(model, GPT):
        raise ValueError(
            f"on-policy sampling needs a GPT language model, got {type(model).__name__}"
        )
    was_training = model.training
    model.eval()
    try:
        return model.generate(
            prompts, length, temperature=temperature, top_k=top_k, generator=generator
        )
    finally:
        model.train(was_training)


class OnPolicyBatches:
    """batch_fn(step, micro): the data batch with a ``fraction`` of its rows replaced by
    the student's continuations of their first ``prompt_len`` tokens."""

    def __init__(
        self,
        student: GPT,
        batch_fn: Callable,
        prompt_len: int,
        fraction: float = 0.5,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction (GKD's lambda) must be in [0, 1], got {fraction}")
        if prompt_len < 1:
            raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
        self.student, self.batch_fn = student, batch_fn
        self.prompt_len, self.fraction = prompt_len, fraction
        self.temperature, self.top_k, self.seed = temperature, top_k, seed

    def __call__(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        batch = self.batch_fn(step, micro)
        if isinstance(batch, (tuple, list)):
            batch = {"idx": batch[0], "targets": batch[1]}
        idx, targets = batch["idx"].clone(), batch["targets"].clone()
        B, T = idx.shape
        if self.prompt_len >= T:
            raise ValueError(f"prompt_len {self.prompt_len} leaves nothing to sample in {T} tokens")
        g = batch_generator(self.seed, step, micro, stream=7)
        sampled = torch.rand(B, generator=g) < self.fraction
        if sampled.any():
            rows = sampled.nonzero().squeeze(1)
            device = self.student.lm_head.weight.device
            gen = torch.Generator(device=device).manual_seed(
                int(torch.randint(2**62, (1,), generator=g))
            )
            prompts = idx[rows, : self.prompt_len].to(device)
            seq = sample_continuations(
                self.student, prompts, T + 1 - self.prompt_len, self.temperature, self.top_k, gen
            ).to(idx.device)
            idx[rows] = seq[:, :-1]
            targets[rows] = seq[:, 1:]
            targets[rows, : self.prompt_len - 1] = IGNORE_INDEX  # count generated tokens only
        return {"idx": idx, "targets": targets, "unlabeled": sampled}


@torch.no_grad()
def teacher_sequences(
    teacher: GPT,
    prompts: torch.Tensor,
    length: int,
    temperature: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Sequence-level KD data (Kim and Rush 2016): the teacher's continuations (N, P + length)
    of prompts (N, P). Kim and Rush take the teacher's beam-search output as the
    approximate mode of its sequence distribution; greedy decoding (temperature 0) is the
    beam of width one."""
    g = torch.Generator(device=teacher.lm_head.weight.device).manual_seed(seed)
    prompts = prompts.to(teacher.lm_head.weight.device)
    out = [
        sample_continuations(teacher, prompts[i : i + batch_size], length, temperature, None, g)
        for i in range(0, len(prompts), batch_size)
    ]
    return torch.cat(out)


def sequence_batches(
    sequences: torch.Tensor, prompt_len: int, batch_size: int, seed: int = 0
) -> Callable:
    """batch_fn over teacher sequences: the student learns the teacher's continuations
    (targets on the prompt are IGNORE_INDEX, so only the generated tokens count)."""
    if not 1 <= prompt_len < sequences.size(1):
        raise ValueError(
            f"prompt_len {prompt_len} must be in 1..{sequences.size(1) - 1} for sequences "
            f"of {sequences.size(1)} tokens"
        )

    def batch_fn(step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        rows = sample_rows(len(sequences), batch_size, seed, step, micro)
        seq = sequences[rows]
        targets = seq[:, 1:].clone()
        targets[:, : prompt_len - 1] = IGNORE_INDEX
        return {"idx": seq[:, :-1], "targets": targets}

    return batch_fn
