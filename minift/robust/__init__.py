"""Adversarial robustness of fine-tuned classifiers: attacks and adversarial training.

- perturb: the L2 / L-inf ball, its projection and its steepest-ascent step;
- pgd: projected gradient ascent on the input embeddings (Madry et al. 2018);
- hotflip: at most k gradient-guided token swaps (Ebrahimi et al. 2018);
- training: FGM (Miyato et al. 2017), PGD-K and FreeLB (Zhu et al. 2020) as a loss.
"""

from minift.robust.hotflip import hotflip_attack
from minift.robust.perturb import NORMS, ascent_direction, check_radius, project, random_start
from minift.robust.pgd import classifier_losses, pgd_attack, pgd_delta, token_embeddings
from minift.robust.training import (
    ADVERSARIAL,
    AdversarialConfig,
    adversarial_loss,
    adversarial_objective,
    fgm_delta,
)

__all__ = [
    "ADVERSARIAL", "AdversarialConfig", "NORMS", "adversarial_loss", "adversarial_objective",
    "ascent_direction", "check_radius", "classifier_losses", "fgm_delta", "hotflip_attack",
    "pgd_attack", "pgd_delta", "project", "random_start", "token_embeddings",
]  # fmt: skip
