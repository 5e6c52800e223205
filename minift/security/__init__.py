"""Security of fine-tuning data: backdoor poisoning and its defences, and secrets in text.

- poison: BadNets-style trigger poisoning of a fraction of the rows, attack success rate;
- onion: the perplexity-based trigger filter ONION (Qi et al. 2021);
- spectral: spectral signatures on pooled features (Tran et al. 2018);
- scrub, plant: a scrubber for e-mails, IPs, keys and tokens, and planted fakes to score it;
- canary: the exposure of a planted canary (Carlini et al. 2019).
"""

from minift.security.canary import candidates, exposure, make_canary
from minift.security.onion import onion_clean, onion_flags, onion_threshold, perplexities, suspicion
from minift.security.plant import KINDS, fake_secret, plant_secrets
from minift.security.poison import (
    TRIGGER,
    attack_success_rate,
    check_rate,
    insert_trigger,
    poison_rows,
    triggered_rows,
)
from minift.security.scrub import PATTERNS, Finding, find_secrets, score_scrubber, scrub
from minift.security.spectral import spectral_filter, spectral_scores

__all__ = [
    "KINDS", "PATTERNS", "TRIGGER", "Finding", "attack_success_rate", "candidates", "check_rate",
    "exposure", "make_canary",
    "fake_secret", "find_secrets", "insert_trigger", "onion_clean", "onion_flags",
    "onion_threshold", "perplexities", "plant_secrets", "poison_rows", "score_scrubber",
    "scrub", "spectral_filter", "spectral_scores", "suspicion", "triggered_rows",
]  # fmt: skip
