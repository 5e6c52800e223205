"""A search space over any recipe's config: named dimensions, each sampled independently.

    lr      LogUniform(1e-4, 3e-2)    log lr ~ U(log low, log high): every decade as likely
    r       IntRange(2, 16)           uniform over the integers, both ends included
    method  Choice(lora, dora, ...)   uniform over the options

Log-uniform is the usual prior for scale parameters such as learning rates (Bergstra and
Bengio 2012, "Random Search for Hyper-Parameter Optimization", which also shows why random
search beats a grid: only a few dimensions matter, and a grid wastes trials repeating
their values). Dimensions parse from the command line's short forms:
``lr=1e-4:3e-2:log``, ``dropout=0:0.3``, ``r=2..16``, ``method=lora,dora,adapter``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from minift.errors import UserError


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high:
            raise UserError(
                f"log-uniform range [{self.low}, {self.high}] is empty or not positive; "
                "need 0 < low < high"
            )

    def sample(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise UserError(f"uniform range [{self.low}, {self.high}] is empty; need low < high")

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise UserError(f"integer range {self.low}..{self.high} is empty; need low <= high")

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Choice:
    options: tuple

    def __post_init__(self) -> None:
        if not self.options:
            raise UserError("a choice needs at least one option")

    def sample(self, rng: random.Random) -> Any:
        return self.options[rng.randrange(len(self.options))]


Dimension = LogUniform | Uniform | IntRange | Choice


class SearchSpace:
    def __init__(self, dims: dict[str, Dimension]) -> None:
        if not dims:
            raise UserError("the search space has no dimensions")
        self.dims = dict(dims)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {name: dim.sample(rng) for name, dim in self.dims.items()}

    @classmethod
    def parse(cls, specs: list[str]) -> SearchSpace:
        return cls(dict(parse_dimension(s) for s in specs))


def parse_dimension(spec: str) -> tuple[str, Dimension]:
    """``name=low:high[:log]``, ``name=low..high`` (integers) or ``name=a,b,c``."""
    name, sep, body = spec.partition("=")
    if not sep or not name or not body:
        raise UserError(
            f"cannot read search dimension {spec!r}; write name=low:high[:log], "
            "name=low..high or name=a,b,c"
        )
    try:
        if ".." in body:
            low, high = body.split("..")
            return name, IntRange(int(low), int(high))
        if ":" in body:
            parts = body.split(":")
            low, high = float(parts[0]), float(parts[1])
            log = len(parts) == 3 and parts[2] == "log"
            if len(parts) > 3 or (len(parts) == 3 and not log):
                raise ValueError
            return name, LogUniform(low, high) if log else Uniform(low, high)
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot read numbers in search dimension {spec!r}") from None
    options = tuple(o for o in body.split(",") if o)
    return name, Choice(options)
