"""Audit pipeline: reserve non-members, run every audit on a release, certify.

Order of an audited ``securedc condense`` (docs/audits.md):

1. :func:`split_members` reserves a stratified ``holdout_fraction`` of the training data as
   *non-members* **before** condensing; the condenser sees only the members.
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

The split is a pure function of (labels, holdout_fraction, seed): an audited ``securedc condense``
records them in the owner record beside the release (``NAME.owner.json``, ``audit.split``; never
in the release itself, see :mod:`securedc.owner`) so ``securedc audit`` recreates exactly the same
members and non-members.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from securedc.audits.base import AuditResult
from securedc.audits.certify import Certification, Policy, certify
from securedc.config import CondenseConfig, EvalConfig
from securedc.errors import ConfigError, DataError

__all__ = ["AuditConfig", "AuditOutcome", "split_indices", "split_members", "split_record", "run_audits",
           "make_condense_fn", "headline"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How much auditing to do (defaults = the quick CPU audit run by ``securedc condense``).

    Attributes:
        holdout_fraction: share of each class of the training data reserved as non-members.
        shadows: shadow condensations for LiRA/RMIA (``--audit-shadows``; 0 skips them).
        canaries: canaries of the one-run audit (``--audit-canaries``; 0 skips it).
        audit_iterations: steps of each shadow/canary condensation, capped at the release's T;
            0 = the release's T (thorough).
        architectures: utility architectures (the first is the main evaluation model).
        mia_eval: protocol of the attack models (``None`` = ``DEFAULT_MIA_EVAL`` of the MIA module, 2 models
            × 100 epochs without augmentation, capped at the evaluation protocol's models and epochs).
        max_targets: members and non-members scored by the MIA (each; at most half of the non-members,
            the other half is the reference population of LiRA/RMIA).
        robustness_quick: quick robustness audit (no AutoAttack, fewer test images).
    """

    holdout_fraction: float = 0.2
    shadows: int = 2
    canaries: int = 100
    audit_iterations: int = 100
    architectures: tuple[str, ...] = ("convnet", "mlp")
    mia_eval: EvalConfig | None = None
    max_targets: int = 500
    robustness_quick: bool = True

    def problems(self) -> list[str]:
        out = []
        if not (0 < self.holdout_fraction < 1):
            out.append(f"holdout fraction must be in (0, 1) (got {self.holdout_fraction}); e.g. 0.2")
        if self.shadows < 0:
            out.append(f"--audit-shadows must be >= 0 (got {self.shadows})")
        if self.canaries < 0:
            out.append(f"--audit-canaries must be >= 0 (got {self.canaries})")
        if self.audit_iterations < 0:
            out.append(f"--audit-iterations must be >= 0 (got {self.audit_iterations}); 0 = the release's T")
        if not self.architectures:
            out.append("the utility audit needs at least one architecture")
        if self.max_targets < 2:
            out.append(f"max_targets must be >= 2 (got {self.max_targets})")
        return out

    def validate(self) -> "AuditConfig":
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def iterations_for(self, config: CondenseConfig) -> int:
        """Steps of a shadow / canary condensation for a release made with ``config``."""
        if self.audit_iterations == 0:
            return config.iterations
        return max(1, min(config.iterations, self.audit_iterations))


@dataclass
class AuditOutcome:
    """Everything an audit produced."""

    results: dict[str, AuditResult]
    certification: Certification
    seconds: float
    split: dict[str, Any] = field(default_factory=dict)


def split_indices(labels: Tensor, *, holdout_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Stratified member / non-member index split (sorted indices), a pure function of its inputs.

    Each class keeps ``round(n_c * (1 - holdout_fraction))`` members (at least 1) and the rest
    (at least 1) become non-members.

    Example:
        >>> m, n = split_indices(torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), holdout_fraction=0.2)
        >>> len(m), len(n), sorted(set(m.tolist()) | set(n.tolist())) == list(range(10))
        (8, 2, True)
    """
    if not (0 < holdout_fraction < 1):
        raise ConfigError(f"holdout_fraction must be in (0, 1) (got {holdout_fraction}); e.g. 0.2")
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(int(seed) * 7_919 + 104_729)
    mem, non = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < 2:
            raise DataError(f"class {c} has {idx.numel()} training image(s); the audit needs >= 2 per class "
                            "(one member, one non-member) or run with --no-audit")
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        keep = min(idx.numel() - 1, max(1, round(idx.numel() * (1 - holdout_fraction))))
        mem.append(idx[:keep])
        non.append(idx[keep:])
    return torch.cat(mem).sort().values, torch.cat(non).sort().values


def split_members(
    train_images: Tensor, train_labels: Tensor, *, holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Reserve a stratified ``holdout_fraction`` of the training data as non-members.

    Returns:
        ``((member_x, member_y), (nonmember_x, nonmember_y))``. Condense on the members only.
    """
    m, n = split_indices(train_labels, holdout_fraction=holdout_fraction, seed=seed)
    return (train_images[m], train_labels[m]), (train_images[n], train_labels[n])


def split_record(train_labels: Tensor, *, holdout_fraction: float, seed: int, fingerprint: str) -> dict[str, Any]:
    """What the owner record stores so ``securedc audit`` can recreate the split.

    The record holds the data fingerprint and a hash of the member indices, both computed from
    the private data: it belongs in the owner record (:mod:`securedc.owner`), never in a release.
    """
    m, n = split_indices(train_labels, holdout_fraction=holdout_fraction, seed=seed)
    digest = hashlib.sha256(m.to(torch.int64).numpy().tobytes()).hexdigest()
    return {"holdout_fraction": holdout_fraction, "seed": int(seed), "dataset_fingerprint": fingerprint,
            "num_members": int(m.numel()), "num_nonmembers": int(n.numel()), "members_sha256": digest}


def make_condense_fn(
    config: CondenseConfig,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    iterations: int | None = None,
) -> Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]:
    """``(train_x, train_y, seed) -> (syn_x, syn_y)`` re-running ``config`` (shadow / canary runs).

    Args:
        config: the release's configuration (DP runs are re-calibrated to the same (ε, δ)
            for the given data size and steps).
        iterations: steps (default: ``config.iterations``).
    """
    from securedc.condenser import Condenser

    steps = config.iterations if iterations is None else iterations

    def condense_fn(x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        cfg = dataclasses.replace(config, seed=int(seed), iterations=steps, checkpoint_every=0)
        condenser = Condenser(cfg, num_classes=num_classes, image_shape=image_shape, mean=mean, std=std)
        result = condenser.fit(condenser.make_mechanism(x, y))
        return result.images, result.labels

    return condense_fn


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
) -> AuditOutcome:
    """Run utility, MIA, canary (and robustness when adversarial) audits, then certify.

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

    Returns:
        :class:`AuditOutcome`.
    """
    audit = (audit or AuditConfig()).validate()
    say = progress or (lambda msg: logger.info("%s", msg))
    t0 = time.perf_counter()
    image_shape = tuple(images.shape[1:])
    meta = dict(num_classes=num_classes, mean=tuple(mean), std=tuple(std))
    steps = audit.iterations_for(config)
    results: dict[str, AuditResult] = {}

    from securedc.audits.utility import run_utility_audit

    say(f"utility: {eval_config.models} model(s) × {len(audit.architectures)} architecture(s) on S and on a random subset")
    results["utility"] = run_utility_audit(
        images, labels, members[0], members[1], test[0], test[1], eval_config=eval_config, seed=config.seed,
        architectures=audit.architectures, device=config.device, **meta,
    )

    from securedc.audits.mia import run_mia

    shadow_fn = make_condense_fn(config, image_shape=image_shape, iterations=steps, **meta) if audit.shadows else None
    say(f"membership inference: {audit.shadows} shadow condensation(s) of {steps} steps")
    # at most half of the non-members are targets: the rest is the population LiRA/RMIA compare against
    targets = max(2, min(audit.max_targets, int(nonmembers[1].numel()) // 2))
    mia_eval = audit.mia_eval
    if mia_eval is None:  # DEFAULT_MIA_EVAL (2 models, 100 epochs, no DSA), never more than the evaluation protocol
        from securedc.audits.mia import DEFAULT_MIA_EVAL

        mia_eval = dataclasses.replace(DEFAULT_MIA_EVAL, models=min(DEFAULT_MIA_EVAL.models, eval_config.models),
                                       epochs=min(DEFAULT_MIA_EVAL.epochs, eval_config.epochs))
    results["mia"] = run_mia(
        images, labels, members=members, nonmembers=nonmembers, shadow_fn=shadow_fn, shadows=audit.shadows,
        eval_config=mia_eval, seed=config.seed, max_targets=targets, **meta,
    )
    claimed = config.privacy.epsilon
    if audit.canaries:
        from securedc.audits.canary import run_canary_audit

        say(f"canary audit: {audit.canaries} canaries, one condensation of {steps} steps")
        from securedc.config import default_delta

        delta = config.privacy.delta if config.privacy.delta is not None else default_delta(int(members[1].numel()))
        results["canary"] = run_canary_audit(
            members[0], members[1],
            condense_fn=make_condense_fn(config, image_shape=image_shape, iterations=steps, **meta),
            claimed_epsilon=claimed, delta=delta, num_canaries=audit.canaries, seed=config.seed, **meta,
        )
    adversarial = config.adversarial.enabled
    if adversarial:
        from securedc.audits.robustness import run_robustness_audit
        from securedc.evaluate import random_subset

        ipc = int(torch.bincount(labels.cpu(), minlength=num_classes).max())
        say(f"robustness: attacks at eps={config.adversarial.eps:.4g} on models trained on S and on a random subset")
        results["robustness"] = run_robustness_audit(
            images, labels, test[0], test[1], eps=config.adversarial.eps, eval_config=eval_config,
            baseline=random_subset(members[0], members[1], ipc, seed=config.seed + 1), seed=config.seed,
            quick=audit.robustness_quick, autoattack=not audit.robustness_quick, **meta,
        )
    cert = certify(results, policy, claimed_epsilon=claimed, adversarial=adversarial)
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
