"""Names shared by the audits, the certification gates and the report: one spelling each.

An audit returns an :class:`~securedc.audits.base.AuditResult` whose ``metrics`` keys are read
by :mod:`securedc.audits.certify` (gates), :mod:`securedc.audits.report` (tables) and the audit
pipeline (the owner record's headline numbers). Producers and readers use these constants, so a
renamed metric cannot silently drop out of a gate. The meaning of each metric is documented
with the audit that produces it (docs/audits.md gives the overview).

Example:
    >>> ci_high(TPR_AT_1PCT_FPR), baseline(PGD20_ACC)
    ('tpr_at_1pct_fpr_ci_high', 'baseline_pgd20_acc')
"""

from __future__ import annotations

__all__ = [
    "UTILITY", "MIA", "CANARY", "ROBUSTNESS",
    "CONDENSED_ACC", "RANDOM_ACC", "CONDENSED_STD", "RANDOM_STD", "DP_BASELINE_ACC", "DP_BASELINE_STD",
    "per_architecture",
    "AUC", "BALANCED_ACCURACY", "TPR_AT_1PCT_FPR", "TPR_AT_0_1PCT_FPR", "MIA_HEADLINE", "ci_low", "ci_high",
    "EPSILON_LOWER_BOUND", "CLAIMED_EPSILON", "NUM_CANARIES", "EPSILON_CEILING",
    "CLEAN_ACC", "FGSM_ACC", "PGD20_ACC", "PGD100_ACC", "AUTOATTACK_ACC", "NOISE_ACC", "ROBUST_METRICS",
    "baseline", "dp_baseline",
]

# ---------------------------------------------------------------- audit names (keys of the results dict)
UTILITY = "utility"
MIA = "mia"
CANARY = "canary"
ROBUSTNESS = "robustness"

# ---------------------------------------------------------------- utility: test accuracy in [0, 1]
CONDENSED_ACC = "condensed_acc"
RANDOM_ACC = "random_acc"
CONDENSED_STD = "condensed_std"
RANDOM_STD = "random_std"
#: accuracy of the DP prototype baseline of the same budget (private releases only)
DP_BASELINE_ACC = "dp_baseline_acc"
DP_BASELINE_STD = "dp_baseline_std"


def per_architecture(metric: str, arch: str) -> str:
    """Key of a utility metric for one architecture (``condensed_acc_mlp``)."""
    return f"{metric}_{arch}"


# ---------------------------------------------------------------- membership inference
AUC = "auc"
BALANCED_ACCURACY = "balanced_accuracy"
TPR_AT_1PCT_FPR = "tpr_at_1pct_fpr"
TPR_AT_0_1PCT_FPR = "tpr_at_0.1pct_fpr"
#: metrics reported for every attack, and as the worst case over attacks
MIA_HEADLINE = (AUC, BALANCED_ACCURACY, TPR_AT_1PCT_FPR, TPR_AT_0_1PCT_FPR)


def ci_low(metric: str) -> str:
    """Key of the lower end of a metric's 95 % bootstrap confidence interval."""
    return f"{metric}_ci_low"


def ci_high(metric: str) -> str:
    """Key of the upper end of a metric's 95 % bootstrap confidence interval."""
    return f"{metric}_ci_high"


# ---------------------------------------------------------------- canary audit
EPSILON_LOWER_BOUND = "epsilon_lower_bound"
CLAIMED_EPSILON = "claimed_epsilon"
NUM_CANARIES = "num_canaries"
#: the largest ε̂ the canary audit could show (every guess right): a claimed ε above it is not tested
EPSILON_CEILING = "epsilon_ceiling"

# ---------------------------------------------------------------- robustness: accuracy under attack in [0, 1]
CLEAN_ACC = "clean_acc"
FGSM_ACC = "fgsm_acc"
PGD20_ACC = "pgd20_acc"
PGD100_ACC = "pgd100_acc"
AUTOATTACK_ACC = "autoattack_acc"
NOISE_ACC = "noise_acc"
#: metrics the ``robustness-pgd`` gate may compare (``Policy.robust_metric``)
ROBUST_METRICS = (FGSM_ACC, PGD20_ACC, PGD100_ACC, AUTOATTACK_ACC)


def baseline(metric: str) -> str:
    """Key of a robustness metric measured on the baseline (random real subset) models."""
    return f"baseline_{metric}"


def dp_baseline(metric: str) -> str:
    """Key of a robustness metric measured on models trained on the DP prototype baseline (private releases)."""
    return f"dp_baseline_{metric}"
