"""Membership-inference audit of a condensed release (``securedc.audits.mia``).

Threat model: the attacker holds the released condensed set and can train models on
it; members = real examples the condenser could access; non-members = held-out real
examples of the same distribution (a split of the training data reserved by the
audit, never the test set).

Attacks (one file each, registered by name): ``loss`` (Yeom et al. CSF 2018),
``neighbour`` (nearest synthetic image in pixel and feature space), ``lira``
(Carlini et al. S&P 2022, online + offline, fixed variance), ``rmia`` (Zarifzadeh et
al. ICML 2024, offline). Metrics in :mod:`securedc.audits.mia.metrics`.
"""

from securedc.audits.mia import lira, loss, neighbour, rmia  # noqa: F401  (registration)
from securedc.audits.mia.base import AttackContext, MIAttack, create_attack, list_attacks, register_attack
from securedc.audits.mia.metrics import (
    attack_metrics,
    balanced_accuracy,
    bootstrap_ci,
    downsample_roc,
    roc_auc,
    tpr_at_fpr,
)
from securedc.audits.mia.runner import DEFAULT_MIA_EVAL, THREAT_MODEL, run_mia

__all__ = [
    "run_mia",
    "MIAttack",
    "AttackContext",
    "register_attack",
    "create_attack",
    "list_attacks",
    "roc_auc",
    "tpr_at_fpr",
    "balanced_accuracy",
    "bootstrap_ci",
    "downsample_roc",
    "attack_metrics",
    "THREAT_MODEL",
    "DEFAULT_MIA_EVAL",
]
