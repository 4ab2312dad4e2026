"""Audit pipeline: reserve non-members, run every audit on a release, certify.

Order of an audited ``securedc condense`` (docs/audits.md):

1. :func:`split_members` reserves an expected ``holdout_fraction`` of the training data as
   *non-members* **before** condensing (each example's side decided by a keyed hash of its own
   bytes, so neighbouring datasets have neighbouring member sets); the condenser sees only the members.
2. condense on the members (the caller does this).
3. :func:`run_audits`: utility (also the owner's evaluation: models are trained once),
   membership inference (LOSS, neighbour, LiRA, RMIA; shadows re-run the same
   :class:`~securedc.config.CondenseConfig` on random halves of the audit pool), the
   one-run canary audit (one more condensation of the members plus canaries), and the
   robustness audit when ``adversarial.eps > 0``.
4. :func:`~securedc.audits.certify.certify` turns the results into gates.

Cost control (:class:`AuditConfig`): the shadow and canary condensations use
``min(T, audit_iterations)`` steps (default 100, a *quick* audit; ``audit_iterations=0``
re-runs the release's full T for a thorough one). In DP mode every such run is calibrated to
the same (ε, δ), so the canary audit still tests the claimed ε. With 2 shadows and 100
canaries the default audit of a digits release adds three short condensations and a few
small models.

The split is a pure function of (data, holdout_fraction, seed): an audited ``securedc condense``
records them in the owner record beside the release (``NAME.owner.json``, ``audit.split``; never
in the release itself, see :mod:`securedc.owner`) so ``securedc audit`` recreates exactly the same
members and non-members.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from securedc.audits.base import AuditResult, create_audit, registered_audits
from securedc.audits.context import AuditConfig, AuditContext, make_condense_fn
from securedc.audits.certify import Certification, Policy, certify
from securedc.config import CondenseConfig, EvalConfig
from securedc.data.split import SPLIT_METHOD, missing_classes, record_split
from securedc.errors import ConfigError, DataError

__all__ = ["AuditConfig", "AuditOutcome", "split_indices", "split_members", "split_record", "run_audits",
           "make_condense_fn", "headline"]

logger = logging.getLogger(__name__)


@dataclass
class AuditOutcome:
    """Everything an audit produced."""

    results: dict[str, AuditResult]
    certification: Certification
    seconds: float
    split: dict[str, Any] = field(default_factory=dict)


def split_indices(
    images: Tensor, labels: Tensor, *, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Member / non-member index split (sorted indices), a pure function of its inputs.

    Each example is a non-member with probability ``holdout_fraction``, decided by a keyed hash
    of its own bytes (:func:`securedc.data.split.record_split`, domain ``"members"``): adding or
    removing one example moves no other example between the sides, so the members of neighbouring
    datasets are neighbours and the release's (ε, δ) holds for the whole training set. (A per-class
    permutation would not do: one example more changes the permutation of its class and of every
    later class.) Classes are balanced in expectation, not exactly.

    Raises:
        ConfigError: ``holdout_fraction`` outside ``(0, 1)``.
        DataError: a class with fewer than 2 examples or without a member, or no non-member.

    Example:
        >>> x, y = torch.linspace(0, 1, 400).reshape(100, 1, 2, 2), torch.arange(100) % 2
        >>> m, n = split_indices(x, y, holdout_fraction=0.2)
        >>> 10 < len(n) < 30, sorted(m.tolist() + n.tolist()) == list(range(100))
        (True, True)
    """
    if not (0 < holdout_fraction < 1):
        raise ConfigError(f"holdout_fraction must be in (0, 1) (got {holdout_fraction}); e.g. 0.2")
    labels = labels.cpu()
    counts = torch.bincount(labels)
    small = [c for c in torch.unique(labels).tolist() if counts[c] < 2]
    if small:
        raise DataError(f"class {small[0]} has {int(counts[small[0]])} training image(s); the audit needs >= 2 per "
                        "class (one member, one non-member) or run with --no-audit")
    mem, non = record_split(images, labels, fraction=holdout_fraction, seed=seed, domain="members")
    empty = missing_classes(labels, mem)
    if empty or not len(non):
        what = f"class {empty[0]} has no member" if empty else "no example is a non-member"
        raise DataError(f"{what} after the {holdout_fraction:g} holdout split (each example's side is a function "
                        "of its own bytes); use more data, another --seed, or --no-audit")
    return mem, non


def split_members(
    train_images: Tensor, train_labels: Tensor, *, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Reserve an expected ``holdout_fraction`` of the training data as non-members (:func:`split_indices`).

    Returns:
        ``((member_x, member_y), (nonmember_x, nonmember_y))``. Condense on the members only.
    """
    m, n = split_indices(train_images, train_labels, holdout_fraction=holdout_fraction, seed=seed)
    return (train_images[m], train_labels[m]), (train_images[n], train_labels[n])


def split_record(
    members: Tensor, nonmembers: Tensor, *, holdout_fraction: float, seed: int, fingerprint: str
) -> dict[str, Any]:
    """What the owner record stores so ``securedc audit`` can recreate the split (:func:`split_indices`' output).

    The record holds the data fingerprint and a hash of the member indices, both computed from
    the private data: it belongs in the owner record (:mod:`securedc.owner`), never in a release.
    """
    digest = hashlib.sha256(members.to(torch.int64).numpy().tobytes()).hexdigest()
    return {"holdout_fraction": holdout_fraction, "seed": int(seed), "method": SPLIT_METHOD,
            "dataset_fingerprint": fingerprint, "num_members": int(members.numel()),
            "num_nonmembers": int(nonmembers.numel()), "members_sha256": digest}


def run_audits(
    images: Tensor,
    labels: Tensor,
    *,
    members: tuple[Tensor, Tensor],
    nonmembers: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: CondenseConfig,
    eval_config: EvalConfig,
    audit: AuditConfig | None = None,
    policy: Policy | None = None,
    progress: Callable[[str], None] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    prototypes: Tensor | None = None,
    privacy: dict[str, Any] | None = None,
    soft_labels: Tensor | None = None,
) -> AuditOutcome:
    """Run every registered audit that applies (utility, MIA, canary, robustness when adversarial), then certify.

    Args:
        images, labels: the release S (condensed from ``members`` only).
        members, nonmembers: from :func:`split_members`.
        test: real test data (accuracy only; never used as non-members).
        num_classes, mean, std: dataset metadata.
        config: the release's condensation config (shadows and canary runs reuse it).
        eval_config: the evaluation protocol (``--eval-models``/``--eval-epochs``); the utility
            audit uses it so the owner record's evaluation comes from the same models.
        audit: how much to audit (:class:`AuditConfig`).
        policy: certification thresholds.
        progress: called with a short message before each audit (CLI status line).
        options: keyword options per audit name, passed to its class (e.g. ``{"utility": {...}}``,
            forwarded by :class:`~securedc.audits.utility_audit.UtilityAudit` to ``run_utility_audit``).
        prototypes, privacy: the release's own DP class prototypes and its privacy section, when
            auditing right after condensing (:attr:`AuditContext.prototypes`): a private release
            whose prototypes carry the whole budget is compared with them (paired baseline).
        soft_labels: the release's soft labels, when it has them (:attr:`AuditContext.soft_labels`).

    Returns:
        :class:`AuditOutcome`.
    """
    audit = (audit or AuditConfig()).validate()
    say = progress or (lambda msg: logger.info("%s", msg))
    t0 = time.perf_counter()
    ctx = AuditContext(images=images, labels=labels, members=members, nonmembers=nonmembers, test=test,
                       num_classes=num_classes, mean=tuple(mean), std=tuple(std), config=config,
                       eval_config=eval_config, settings=audit, prototypes=prototypes, privacy=privacy,
                       soft_labels=soft_labels)
    results: dict[str, AuditResult] = {}
    for name in registered_audits():
        auditor = create_audit(name, **(options or {}).get(name, {}))
        if auditor.applies(ctx):
            say(auditor.describe(ctx))
            results[name] = auditor.measure(ctx)
    cert = certify(results, policy, claimed_epsilon=config.privacy.epsilon, adversarial=config.adversarial.enabled)
    return AuditOutcome(results=results, certification=cert, seconds=time.perf_counter() - t0)


def headline(outcome: AuditOutcome) -> dict[str, Any]:
    """Headline numbers for the owner record's ``audit`` section (JSON-ready; measured on real data)."""
    out: dict[str, Any] = {}
    r = outcome.results
    if "utility" in r:
        out["utility"] = {k: r["utility"].metrics[k] for k in ("condensed_acc", "random_acc") if k in r["utility"].metrics}
    if "mia" in r:
        out["mia"] = {k: r["mia"].metrics[k] for k in ("auc", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci_high",
                                                      "tpr_at_0.1pct_fpr") if k in r["mia"].metrics}
    if "canary" in r:
        out["canary"] = {k: r["canary"].metrics[k] for k in ("epsilon_lower_bound", "num_canaries")
                         if k in r["canary"].metrics}
    if "robustness" in r:
        out["robustness"] = {k: v for k, v in r["robustness"].metrics.items() if k.endswith("_acc")}
    for section in out.values():
        for k, v in list(section.items()):
            section[k] = float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else str(v)
    out["seconds"] = round(outcome.seconds, 2)
    return out
