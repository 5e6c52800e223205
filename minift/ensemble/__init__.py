"""Ensembles: combining members' predictions (uniform, fitted weights, stacking), a gate
that weights them per input (mixture of experts), and model soups (weight averaging).

- :mod:`.combine`: uniform_average, fit_weights / weighted_average, Stacker, choose_l2
- :mod:`.gate`: GatingNetwork, fit_gate, mixture
- :mod:`.soup`: uniform_soup, greedy_soup, average_state
"""

from minift.ensemble.combine import (
    Stacker,
    choose_l2,
    fit_weights,
    nll,
    uniform_average,
    weighted_average,
)
from minift.ensemble.gate import GatingNetwork, fit_gate, mixture
from minift.ensemble.soup import average_state, greedy_soup, uniform_soup

__all__ = [
    "GatingNetwork",
    "Stacker",
    "average_state",
    "choose_l2",
    "fit_gate",
    "fit_weights",
    "greedy_soup",
    "mixture",
    "nll",
    "uniform_average",
    "uniform_soup",
    "weighted_average",
]
