"""``run_mia``: run every requested membership-inference attack on a release.

Threat model: the attacker holds the released condensed set S and can train models
on it; members = real examples the condenser could access; non-members = held-out
real examples of the same distribution (a split of the training data reserved by the
audit, never the test set). Shadow attacks (LiRA, RMIA) also assume the attacker can
run the same condensation configuration on same-distribution data.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from securedc.audits import names as N
from securedc.audits.base import AuditResult
from securedc.audits.mia.base import AttackContext, create_attack
from securedc.audits.mia.metrics import attack_metrics
from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError

__all__ = ["run_mia", "THREAT_MODEL", "DEFAULT_MIA_EVAL"]

logger = logging.getLogger(__name__)

THREAT_MODEL = (
    "Threat model: the attacker holds the released condensed set and can train models on it; "
    "members = real examples the condenser could access; non-members = held-out real examples of the "
    "same distribution (a split of the training data reserved by the audit, never the test set). "
    "Shadow attacks (LiRA, RMIA) also run the same condensation configuration on random halves of the "
    "audit's candidate pool."
)

#: cheap default protocol for attack models (the caller may pass the full evaluation protocol)
DEFAULT_MIA_EVAL = EvalConfig(models=2, epochs=100, dsa="none")

_HEADLINE = N.MIA_HEADLINE


def _check_pair(pair: tuple[Tensor, Tensor], name: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise DataError(f"{name} must be a pair (images [N, C, H, W], labels [N])")
    x, y = pair
    if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise DataError(f"{name}: need >= 2 images [N, C, H, W] with labels [N] (got {tuple(x.shape)}, {tuple(y.shape)})")
    return x.float(), y.long()


def _balanced_pick(labels: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """``k`` indices spread evenly over classes (round-robin over shuffled class lists)."""
    if k >= labels.shape[0]:
        return torch.randperm(labels.shape[0], generator=gen)
    per_class = [
        (labels == c).nonzero().flatten()[torch.randperm(int((labels == c).sum()), generator=gen)]
        for c in torch.unique(labels).tolist()
    ]
    picked: list[int] = []
    depth = 0
    while len(picked) < k:
        for idx in per_class:
            if depth < idx.numel() and len(picked) < k:
                picked.append(int(idx[depth]))
        depth += 1
    return torch.tensor(picked, dtype=torch.long)


def run_mia(
    images: Tensor,
    labels: Tensor,
    *,
    members: tuple[Tensor, Tensor],
    nonmembers: tuple[Tensor, Tensor],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    shadow_fn: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]] | None = None,
    shadows: int = 2,
    eval_config: EvalConfig | None = None,
    seed: int = 0,
    attacks: Sequence[str] = ("loss", "neighbour", "lira", "rmia"),
    max_targets: int = 500,
    bootstrap: int = 200,
    population: int = 2000,
) -> AuditResult:
    """Membership-inference audit of a released condensed set.

    Args:
        images, labels: the release S.
        members: real (x, y) the condenser could access.
        nonmembers: held-out real (x, y) of the same distribution (not the test set).
        num_classes, mean, std: dataset metadata.
        shadow_fn: ``(train_x, train_y, seed) -> (syn_x, syn_y)`` running the release's
            condensation config; ``None`` (or ``shadows=0``) skips LiRA and RMIA.
        shadows: number of shadow condensations (even numbers pair complementary halves).
        eval_config: protocol for models trained on S and on shadow sets
            (default :data:`DEFAULT_MIA_EVAL`).
        seed: seeds target sampling, models, shadows and the bootstrap.
        attacks: registered attack names.
        max_targets: members and non-members are each subsampled (class-balanced) to this.
        bootstrap: bootstrap resamples for the 95 % CIs.
        population: at most this many non-target non-members form RMIA's population z.

    Returns:
        ``AuditResult(name="mia")``; ``metrics`` holds the worst case over attacks
        (max AUC, max TPR@FPR, max upper CI …) and ``details["attacks"]`` everything per
        attack, including a downsampled ROC curve.
    """
    t0 = time.perf_counter()
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError("release must be non-empty images [N, C, H, W] with labels [N]")
    if max_targets < 2:
        raise ConfigError(f"max_targets must be >= 2 (got {max_targets})")
    if shadows < 0:
        raise ConfigError(f"shadows must be >= 0 (got {shadows}); use 0 to skip LiRA/RMIA")
    mx, my = _check_pair(members, "members")
    nx, ny = _check_pair(nonmembers, "nonmembers")
    chosen = [create_attack(name) for name in attacks]
    cfg = eval_config or DEFAULT_MIA_EVAL
    gen = torch.Generator().manual_seed(seed)
    m_idx = _balanced_pick(my, min(max_targets, mx.shape[0]), gen)
    n_idx = _balanced_pick(ny, min(max_targets, nx.shape[0]), gen)
    m_rest = torch.ones(mx.shape[0], dtype=torch.bool)
    m_rest[m_idx] = False
    n_rest = torch.ones(nx.shape[0], dtype=torch.bool)
    n_rest[n_idx] = False
    pop_idx = n_rest.nonzero().flatten()
    if pop_idx.numel() > population:  # RMIA's reference population z (never a target, never in a shadow)
        pop_idx = pop_idx[torch.randperm(pop_idx.numel(), generator=gen)[:population]]
    ctx = AttackContext(
        release_images=images.detach().float().cpu(),
        release_labels=labels.detach().long().cpu(),
        target_images=torch.cat([mx[m_idx], nx[n_idx]]),
        target_labels=torch.cat([my[m_idx], ny[n_idx]]),
        is_member=torch.cat([torch.ones(m_idx.numel(), dtype=torch.bool), torch.zeros(n_idx.numel(), dtype=torch.bool)]),
        population_images=nx[pop_idx],
        population_labels=ny[pop_idx],
        extra_member_images=mx[m_rest],
        extra_member_labels=my[m_rest],
        num_classes=num_classes,
        mean=tuple(mean),
        std=tuple(std),
        eval_config=cfg,
        shadow_fn=shadow_fn,
        shadows=shadows,
        seed=seed,
    )
    if all(a.needs_shadows for a in chosen) and not ctx.has_shadows:  # refused before any model is trained
        raise ConfigError(f"no MIA attack could run (requested {list(attacks)}); add 'loss' or 'neighbour'")
    notes = [THREAT_MODEL]
    per_attack: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    invalid: list[str] = []
    tp = time.perf_counter()
    # the models trained on S and the shadow condensations, side by side; attacks score from them
    ctx.prefetch(shadows=any(a.needs_shadows for a in chosen))
    prefetch_seconds = time.perf_counter() - tp
    for attack in chosen:
        if attack.needs_shadows and not ctx.has_shadows:
            skipped.append(attack.name)
            continue
        ta = time.perf_counter()
        named = attack.scores(ctx)
        dt = time.perf_counter() - ta
        for score_name, scores in named.items():
            if bool(torch.isnan(scores).any()):  # a diverged model: no evidence, not "surely non-member"
                invalid.append(score_name)
            result = attack_metrics(scores.numpy(), ctx.is_member.numpy(), resamples=bootstrap, seed=seed)
            result["reference"] = attack.reference
            result["seconds"] = round(dt, 3)
            per_attack[score_name] = result
        logger.info("MIA attack %s done in %.1f s", attack.name, dt)
    if skipped:
        notes.append(
            f"skipped {', '.join(skipped)}: no shadow condensations (shadow_fn is None or shadows = 0); "
            "a thorough audit runs them with --audit-shadows K"
        )
    notes.append(
        f"{m_idx.numel()} member and {n_idx.numel()} non-member targets; with n non-members the smallest "
        f"measurable non-zero FPR is 1/n = {1 / n_idx.numel():.4f}, so TPR at 0.1 % FPR below that is the TPR at FPR 0."
    )
    notes.append("95 % CIs: stratified percentile bootstrap "
                 f"({bootstrap} resamples), widened to include the point estimate.")
    worst = max(per_attack, key=lambda k: (per_attack[k][N.AUC], per_attack[k][N.TPR_AT_1PCT_FPR]))
    metrics: dict[str, float] = {}
    for key in _HEADLINE:
        metrics[key] = max(float(v[key]) for v in per_attack.values())
        metrics[N.ci_high(key)] = max(float(v[N.ci_high(key)]) for v in per_attack.values())
        metrics[f"worst_attack_{key}"] = float(per_attack[worst][key])
    if invalid:  # the headline is unknown, so every gate reading it fails
        notes.append(f"INVALID: NaN scores from {', '.join(invalid)} (a diverged target or shadow model); "
                     "the headline metrics are NaN and the MIA gates fail")
        for key in list(metrics):
            metrics[key] = math.nan
    metrics["num_attacks"] = float(len(per_attack))
    details: dict[str, Any] = {
        "attacks": per_attack,
        "worst_attack": worst,
        "num_members": int(m_idx.numel()),
        "num_nonmembers": int(n_idx.numel()),
        "num_population": int(ctx.population_images.shape[0]),
        "shadows": int(shadows if ctx.has_shadows else 0),
        "skipped": skipped,
        "eval_config": {"models": cfg.models, "epochs": cfg.epochs, "dsa": cfg.dsa, "model": cfg.model},
        "threat_model": THREAT_MODEL,
        "models_and_shadows_seconds": round(prefetch_seconds, 3),
    }
    return AuditResult(
        name=N.MIA, metrics=metrics, passed=None, details=details, seconds=time.perf_counter() - t0, notes=notes
    )


