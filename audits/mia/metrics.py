"""Functional membership-inference metrics: pure arrays in, floats out.

Scores follow one convention everywhere: **higher score = more likely a member**.
``is_member`` is a boolean / {0, 1} vector of the same length.

* ROC and AUC come from scikit-learn (``roc_curve``, ``roc_auc_score``).
* TPR at a fixed low FPR is the metric Carlini et al. argue for ("Membership Inference
  Attacks From First Principles", IEEE S&P 2022): the largest TPR whose FPR does not
  exceed the target. With ``n`` non-members the smallest non-zero FPR is ``1/n``; below
  that the value is the TPR at FPR = 0.
* Balanced accuracy uses the best threshold, ``max_t (TPR(t) + 1 - FPR(t)) / 2``.
* Confidence intervals are percentile bootstraps, resampling members and non-members
  separately (stratified) so each resample has both classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from securedc.audits import names as N

__all__ = [
    "roc_auc",
    "tpr_at_fpr",
    "balanced_accuracy",
    "bootstrap_ci",
    "downsample_roc",
    "attack_metrics",
    "FPR_TARGETS",
]


# scikit-learn is imported on first use: its package import pulls in scipy.stats (~2 s on a
# 2-core CPU), which CLI commands that never score an attack (``--help``, ``inspect``) do not need.
def _roc_auc_score(*args: Any, **kwargs: Any) -> float:
    from sklearn.metrics import roc_auc_score as _auc

    return _auc(*args, **kwargs)


def _roc_curve(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve as _roc

    return _roc(*args, **kwargs)


#: (metric key, FPR) pairs reported for every attack.
FPR_TARGETS: tuple[tuple[str, float], ...] = ((N.TPR_AT_1PCT_FPR, 0.01), (N.TPR_AT_0_1PCT_FPR, 0.001))


def _arrays(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).reshape(-1).astype(bool)
    if s.shape != m.shape:
        raise ValueError(f"scores ({s.shape[0]}) and is_member ({m.shape[0]}) differ in length")
    if m.all() or not m.any():
        raise ValueError("need at least one member and one non-member to compute MIA metrics")
    # Non-finite scores would break sklearn; map them to the extremes (inf = surely member).
    s = np.nan_to_num(s, nan=np.nanmin(s[np.isfinite(s)]) if np.isfinite(s).any() else 0.0,
                      posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    return s, m


def roc_auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve (0.5 = chance).

    Example:
        >>> roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])
        1.0
    """
    s, m = _arrays(scores, is_member)
    return float(_roc_auc_score(m, s))


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def tpr_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """Largest TPR among thresholds whose FPR is ``<= fpr``.

    Example:
        >>> tpr_at_fpr([5, 4, 3, 2, 1, 0], [1, 0, 1, 1, 0, 0], 0.0)
        0.3333333333333333
    """
    s, m = _arrays(scores, is_member)
    f, t, _ = _roc_curve(m, s)
    return _tpr_at(f, t, fpr)


def balanced_accuracy(scores: Any, is_member: Any) -> float:
    """Best-threshold balanced accuracy ``max_t (TPR + TNR) / 2`` (0.5 = chance).

    Example:
        >>> balanced_accuracy([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])
        1.0
    """
    s, m = _arrays(scores, is_member)
    f, t, _ = _roc_curve(m, s)
    return float(np.max((t + 1.0 - f) / 2.0))


def _all_point_metrics(s: np.ndarray, m: np.ndarray) -> dict[str, float]:
    f, t, _ = _roc_curve(m, s, drop_intermediate=False)
    out = {
        N.AUC: float(_roc_auc_score(m, s)),
        N.BALANCED_ACCURACY: float(np.max((t + 1.0 - f) / 2.0)),
    }
    for key, target in FPR_TARGETS:
        out[key] = _tpr_at(f, t, target)
    return out


def bootstrap_ci(
    scores: Any,
    is_member: Any,
    *,
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of AUC, balanced accuracy and TPR at the reported FPRs.

    Members and non-members are resampled separately with replacement (stratified).

    Returns:
        ``{metric: (low, high)}`` for ``auc``, ``balanced_accuracy`` and the
        :data:`FPR_TARGETS` keys.
    """
    s, m = _arrays(scores, is_member)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(m), np.flatnonzero(~m)
    labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        for key, value in _all_point_metrics(s[idx], labels).items():
            samples.setdefault(key, []).append(value)
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    return {k: (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) for k, v in samples.items()}


def downsample_roc(scores: Any, is_member: Any, *, points: int = 200) -> dict[str, list[float]]:
    """ROC curve at ≤ ``points`` log-spaced FPR values (for log-log plots).

    The grid runs from ``1 / num_nonmembers`` to 1; each TPR is the best TPR at FPR ≤ the
    grid value (the step-function ROC), so the curve is monotone.
    """
    s, m = _arrays(scores, is_member)
    f, t, _ = _roc_curve(m, s)
    n_neg = int((~m).sum())
    grid = np.unique(np.concatenate([[0.0], np.logspace(np.log10(1.0 / n_neg), 0.0, max(2, points - 1))]))
    idx = np.searchsorted(f, grid + 1e-12, side="right") - 1
    tpr = np.maximum.accumulate(t[np.clip(idx, 0, len(t) - 1)])
    return {"fpr": [float(v) for v in grid], "tpr": [float(v) for v in tpr]}


def attack_metrics(
    scores: Any,
    is_member: Any,
    *,
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    roc_points: int = 200,
) -> dict[str, Any]:
    """All reported numbers for one attack's scores.

    Returns:
        ``auc``, ``balanced_accuracy``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr``, each
        with ``*_ci_low`` / ``*_ci_high``, plus ``roc`` = ``{"fpr": [...], "tpr": [...]}``.
    """
    s, m = _arrays(scores, is_member)
    point = _all_point_metrics(s, m)
    ci = bootstrap_ci(s, m, resamples=resamples, seed=seed, confidence=confidence)
    out: dict[str, Any] = {}
    for key, value in point.items():
        lo, hi = ci[key]
        out[key] = value
        out[N.ci_low(key)] = min(lo, value)
        out[N.ci_high(key)] = max(hi, value)
    out["roc"] = downsample_roc(s, m, points=roc_points)
    return out

