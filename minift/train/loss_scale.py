"""Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, "Mixed Precision Training").

float16 has 5 exponent bits: its smallest normal number is 2^-14 (about 6.1e-5) and its
smallest subnormal 2^-24 (about 6e-8). Many gradients of a language model are smaller than
that, so computed in fp16 they flush to zero and those weights stop learning. Multiplying
the loss by S before the backward pass multiplies every gradient by S (the chain rule is
linear), lifting them into fp16's range; dividing by S before the optimizer step undoes it:

    g = (1/S) * d(S * loss)/d(theta)

Too large an S overflows instead (fp16's largest number is 65504), so S is adjusted while
training:

    an inf or NaN in any gradient -> skip this step, S <- S * backoff (1/2), reset the count
    growth_interval clean steps   -> S <- S * growth (2)

the rule torch.amp.GradScaler also follows (its defaults: S_0 = 2^16, interval 2000), and
which the tests check decision by decision on the same gradient sequence. bf16 has fp32's
8 exponent bits and needs no scaling.

:func:`underflow_fraction` measures the problem: the share of non-zero gradients that
become zero when cast to fp16, at a given scale.
"""

from __future__ import annotations

import torch


class LossScaler:
    """scale(loss).backward(); unscale_(opt); [clip]; step(opt); update(). enabled=False
    makes every method a pass-through, so the trainer calls the same four lines always."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1):
            raise ValueError(
                "need init_scale > 0, growth_factor > 1 and 0 < backoff_factor < 1, got "
                f"{init_scale}, {growth_factor}, {backoff_factor}"
            )
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.enabled = enabled
        self.clean_steps = 0  # consecutive steps without an overflow
        self.found_inf: bool | None = None  # set by unscale_, read by step and update
        self.skipped = 0  # steps skipped so far

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value if self.enabled else loss

    @staticmethod
    def _grads(optimizer) -> list[torch.Tensor]:
        return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def unscale_(self, optimizer) -> None:
        """Divide the gradients by S in place and note whether any is inf or NaN. Call it
        before clipping, so the clipping threshold applies to the true gradient."""
        if not self.enabled:
            return
        if self.found_inf is not None:
            raise RuntimeError("unscale_ was already called since the last update()")
        grads = self._grads(optimizer)
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        self.found_inf = not finite
        for g in grads:
            g.mul_(1.0 / self.scale_value)

    def step(self, optimizer) -> bool:
        """Take the optimizer step unless a gradient overflowed; returns whether it did."""
        if not self.enabled:
            optimizer.step()
            return True
        if self.found_inf is None:
            self.unscale_(optimizer)
        if self.found_inf:
            self.skipped += 1
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Adjust S from this step's outcome: halve on overflow, double after
        growth_interval clean steps in a row."""
        if not self.enabled:
            return
        if self.found_inf is None:
            raise RuntimeError("update() needs unscale_() or step() first in the same step")
        if self.found_inf:
            self.scale_value *= self.backoff_factor
            self.clean_steps = 0
        else:
            self.clean_steps += 1
            if self.clean_steps == self.growth_interval:
                self.scale_value *= self.growth_factor
                self.clean_steps = 0
        self.found_inf = None

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale_value = float(state["scale"])
        self.clean_steps, self.skipped = int(state["clean_steps"]), int(state["skipped"])


def underflow_fraction(grads: list[torch.Tensor] | torch.Tensor, scale: float = 1.0) -> float:
    """Share of the non-zero gradient entries that become exactly zero when scale * g is
    cast to float16 (magnitudes at or below 2^-25, half of fp16's smallest subnormal)."""
    if isinstance(grads, torch.Tensor):
        grads = [grads]
    nonzero = lost = 0
    for g in grads:
        g = g.detach().double().flatten()
        keep = g != 0
        nonzero += int(keep.sum())
        lost += int(((g * scale).half() == 0)[keep].sum())
    if nonzero == 0:
        raise ValueError("no non-zero gradients to measure (was backward() called?)")
    return lost / nonzero
