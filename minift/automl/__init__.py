"""AutoML for fine-tuning: search spaces, random search, successive halving and ASHA."""

from minift.automl.schedulers import (
    ASHA,
    SCHEDULERS,
    SearchResult,
    Trial,
    asha,
    random_search,
    rungs,
    successive_halving,
)
from minift.automl.space import Choice, IntRange, LogUniform, SearchSpace, Uniform, parse_dimension

__all__ = [
    "ASHA",
    "SCHEDULERS",
    "Choice",
    "IntRange",
    "LogUniform",
    "SearchResult",
    "SearchSpace",
    "Trial",
    "Uniform",
    "asha",
    "parse_dimension",
    "random_search",
    "rungs",
    "successive_halving",
]
