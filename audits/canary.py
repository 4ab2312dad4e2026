"""Empirical privacy: one-run canary audit → ε lower bound.

Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023
(arXiv:2305.08846). m canaries are each included in the training data with
probability ½ (independently, seeded); the condenser runs once; every canary is scored
from the released set only; the auditor guesses IN for the k highest and OUT for the
k lowest scores (abstaining on the rest) and counts the correct guesses v out of
r = 2k. If the condenser is (ε, δ)-DP, the number of correct guesses is stochastically
dominated as in the paper's Theorem 5.2 (δ > 0 case):

    P[W ≥ v] ≤ P[Bin(r, q) ≥ v] + 2·m·δ·max_{i=1..v} (1/i)·P[v > Bin(r, q) ≥ v − i],
    q = e^ε / (1 + e^ε),

and the ε lower bound at confidence 1 − p is the largest ε for which this p-value is
still < p, found by bisection (the paper's Algorithm 2 / Appendix D code,
``get_eps_audit``). A correct DP mechanism audits at ε̂ ≤ ε except with probability
1 − confidence.

Canaries (``canary_kind``):

* ``mislabelled``: real training images with a different, random label;
* ``inverted``: ``1 − x`` of real images with a random label (out of distribution);
* ``pattern``: fixed uniform random images with a random label (out of distribution).

Score of a canary: minus the pixel distance to the nearest synthetic image of its
(canary) label — a canary that was copied into, or strongly shaped, the release
scores high. Canaries are drawn from ``train_images`` and removed from the real
training set, so an excluded canary is never seen by the condenser.

Honest-use note: DP must hold for *every* dataset, so auditing on a small training set
(``max_train``) is valid and is the stronger test — a non-private real-init
condensation copies ipc of the n_c images of a class, so its per-example leakage (and
hence ε̂) shrinks as n_c grows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from securedc.audits import names as N
from securedc.audits.base import Audit, AuditResult, register_audit
from securedc.audits.context import AuditContext
from securedc.audits.mia.neighbour import nearest_distance
from securedc.errors import ConfigError, DataError

__all__ = ["CanaryAudit", "run_canary_audit", "epsilon_lower_bound", "audit_p_value", "make_canaries", "CANARY_KINDS"]

logger = logging.getLogger(__name__)

CANARY_KINDS = ("mislabelled", "inverted", "pattern")


def audit_p_value(num_canaries: int, num_guesses: int, num_correct: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[≥ ``num_correct`` correct of ``num_guesses``] under (ε, δ)-DP.

    Steinke, Nasr & Jagielski NeurIPS 2023, Theorem 5.2 (``p_value_DP_audit`` in their
    Appendix D).
    """
    m, r, v = num_canaries, num_guesses, num_correct
    if not (0 <= v <= r <= m):
        raise ConfigError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if v == 0:
        return 1.0
    from scipy import stats  # lazy: scipy.stats' import costs ~2 s on a 2-core CPU

    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    alpha, total = 0.0, 0.0
    pmf = stats.binom.pmf(list(range(v - 1, -1, -1)), r, q)  # v-1, v-2, ..., 0
    for i in range(1, v + 1):
        total += float(pmf[i - 1])  # P[v > Bin >= v - i]
        if total > i * alpha:
            alpha = total / i
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(
    num_guesses: int, num_correct: int, *, num_canaries: int, delta: float, confidence: float = 0.95
) -> float:
    """ε lower bound from a one-run audit (Steinke et al. NeurIPS 2023, ``get_eps_audit``).

    The largest ε (bisection, 1e-6 precision) whose p-value :func:`audit_p_value` is below
    ``1 - confidence``; 0 if even ε = 0 cannot be rejected.

    Example:
        >>> epsilon_lower_bound(10, 5, num_canaries=100, delta=0.0)
        0.0
        >>> round(epsilon_lower_bound(100, 100, num_canaries=100, delta=0.0), 2)
        3.49
    """
    if not (0 < confidence < 1):
        raise ConfigError(f"confidence must be in (0, 1) (got {confidence})")
    if not (0 <= delta <= 1):
        raise ConfigError(f"delta must be in [0, 1] (got {delta})")
    p = 1.0 - confidence
    m, r, v = num_canaries, num_guesses, num_correct
    if audit_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    eps_min, eps_max = 0.0, 1.0
    while audit_p_value(m, r, v, eps_max, delta) < p:
        eps_max *= 2
        if eps_max > 1e3:  # unreachable for r >= 1 in practice; guards an endless loop
            return eps_max
    while eps_max - eps_min > 1e-6:
        eps = (eps_min + eps_max) / 2
        if audit_p_value(m, r, v, eps, delta) < p:
            eps_min = eps
        else:
            eps_max = eps
    return eps_min


def make_canaries(
    images: Tensor, labels: Tensor, *, num_canaries: int, num_classes: int, kind: str, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Build canaries from the training set.

    Returns:
        ``(canary_x, canary_y, source_index)``; ``source_index`` are the training images used
        (they must be removed from the real training set; ``-1`` for ``pattern``).
    """
    n = images.shape[0]
    if num_canaries >= n:
        raise DataError(f"num_canaries={num_canaries} must be smaller than the training set ({n})")
    src = torch.randperm(n, generator=generator)[:num_canaries]
    shift = torch.randint(1, num_classes, (num_canaries,), generator=generator)
    if kind == "mislabelled":
        return images[src].clone(), (labels[src] + shift) % num_classes, src
    if kind == "inverted":
        return 1.0 - images[src], (labels[src] + shift) % num_classes, src
    if kind == "pattern":
        x = torch.rand((num_canaries, *images.shape[1:]), generator=generator)
        y = torch.randint(0, num_classes, (num_canaries,), generator=generator)
        return x, y, torch.full((num_canaries,), -1, dtype=torch.long)
    raise ConfigError(f"canary_kind must be one of {CANARY_KINDS} (got {kind!r})")


def _stratified_subset(labels: Tensor, total: int, generator: torch.Generator) -> Tensor:
    classes = torch.unique(labels)
    per = max(1, total // classes.numel())
    keep = [
        (labels == c).nonzero().flatten()[torch.randperm(int((labels == c).sum()), generator=generator)[:per]]
        for c in classes.tolist()
    ]
    return torch.cat(keep)


def canary_scores(canary_x: Tensor, canary_y: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
    """−distance from each canary to the nearest synthetic image of the canary's label (higher = IN)."""
    out = torch.empty(canary_x.shape[0])
    for c in torch.unique(canary_y).tolist():
        sel = canary_y == c
        ref = syn_x[syn_y == c]
        if ref.shape[0] == 0:
            ref = syn_x
        out[sel] = -nearest_distance(canary_x[sel], ref)
    return out


def run_canary_audit(
    train_images: Tensor,
    train_labels: Tensor,
    *,
    condense_fn: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    claimed_epsilon: float,
    delta: float,
    num_canaries: int = 100,
    guesses: int | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    canary_kind: str = "mislabelled",
    max_train: int | None = None,
) -> AuditResult:
    """One-run canary audit of a condensation procedure (Steinke et al. NeurIPS 2023).

    Args:
        train_images, train_labels: real training data the canaries are added to.
        condense_fn: ``(train_x, train_y, seed) -> (syn_x, syn_y)``; the same condensation
            configuration as the release.
        num_classes: number of classes.
        mean, std: public normalisation (kept for API symmetry; scoring is in pixel space).
        claimed_epsilon: the accountant's ε (``inf`` for non-private runs).
        delta: the accountant's δ (used in the bound).
        num_canaries: m.
        guesses: total guesses r (half IN for the top scores, half OUT for the bottom);
            default ``m // 5`` rounded to even, at least 2.
        seed: seeds canary construction, inclusion and condensation.
        confidence: confidence of the lower bound.
        canary_kind: ``mislabelled``, ``inverted`` or ``pattern``.
        max_train: optionally subsample the real training set (class-stratified) to this
            size first — a valid and stronger audit (see module docstring).

    Returns:
        ``AuditResult(name="canary")`` with ``epsilon_lower_bound``, ``claimed_epsilon``,
        ``num_canaries``, ``guesses``, ``correct``; ``passed = ε̂ <= claimed ε``.
    """
    t0 = time.perf_counter()
    if canary_kind not in CANARY_KINDS:
        raise ConfigError(f"canary_kind must be one of {CANARY_KINDS} (got {canary_kind!r})")
    if num_canaries < 2:
        raise ConfigError(f"num_canaries must be >= 2 (got {num_canaries})")
    if math.isnan(claimed_epsilon) or claimed_epsilon < 0:
        raise ConfigError(f"claimed_epsilon must be >= 0 or inf (got {claimed_epsilon})")
    r = guesses if guesses is not None else max(2, (num_canaries // 5) // 2 * 2)
    if not (1 <= r <= num_canaries):
        raise ConfigError(f"guesses must be in [1, num_canaries={num_canaries}] (got {r})")
    gen = torch.Generator().manual_seed(seed)
    x, y = train_images.float(), train_labels.long()
    cx, cy, src = make_canaries(x, y, num_canaries=num_canaries, num_classes=num_classes, kind=canary_kind, generator=gen)
    keep = torch.ones(x.shape[0], dtype=torch.bool)
    keep[src[src >= 0]] = False
    x, y = x[keep], y[keep]
    if max_train is not None and max_train < x.shape[0]:
        idx = _stratified_subset(y, max_train, gen)
        x, y = x[idx], y[idx]
    included = torch.rand(num_canaries, generator=gen) < 0.5
    run_x = torch.cat([x, cx[included]])
    run_y = torch.cat([y, cy[included]])
    order = torch.randperm(run_x.shape[0], generator=gen)  # canaries are not identifiable by position
    syn_x, syn_y = condense_fn(run_x[order], run_y[order], seed)
    scores = canary_scores(cx, cy, syn_x.detach().float().cpu(), syn_y.long().cpu())
    k_in = (r + 1) // 2
    k_out = r - k_in
    ranked = torch.argsort(scores, descending=True, stable=True)
    guess_in, guess_out = ranked[:k_in], ranked[ranked.numel() - k_out :] if k_out else ranked[:0]
    correct = int(included[guess_in].sum()) + int((~included[guess_out]).sum())
    eps_hat = epsilon_lower_bound(r, correct, num_canaries=num_canaries, delta=delta, confidence=confidence)
    # the most this audit can ever show (every guess right): a claimed ε at or above it cannot be refuted
    ceiling = epsilon_lower_bound(r, r, num_canaries=num_canaries, delta=delta, confidence=confidence)
    passed = eps_hat <= claimed_epsilon
    notes = [
        "One-run audit (Steinke, Nasr & Jagielski, NeurIPS 2023): each canary is added with probability 1/2, "
        "the condenser runs once, canaries are scored from the released set only (distance to the nearest "
        "synthetic image of the canary's label), and correct IN/OUT guesses on the extreme scores are turned "
        f"into an ε lower bound at {100 * confidence:g} % confidence (Theorem 5.2 with δ = {delta:g}).",
        f"{num_canaries} {canary_kind} canaries, {int(included.sum())} included; {r} guesses "
        f"({k_in} IN, {k_out} OUT), {correct} correct → ε̂ = {eps_hat:.3f} (claimed ε = {claimed_epsilon:g}).",
        "ε̂ is a lower bound: a small ε̂ does not prove privacy; ε̂ above the claimed ε means a privacy bug.",
        f"with {r} guesses of {num_canaries} canaries the largest ε̂ this audit can show is {ceiling:.2f}"
        + (f": it cannot test the claimed ε = {claimed_epsilon:g} (more canaries raise the ceiling)"
           if math.isfinite(claimed_epsilon) and ceiling <= claimed_epsilon else ""),
    ]
    if max_train is not None:
        notes.append(f"the audit condensed a stratified subset of {x.shape[0]} real images plus the included canaries")
    if not passed:
        notes.append(f"FAILED: the empirical lower bound {eps_hat:.3f} exceeds the claimed ε {claimed_epsilon:g}")
    metrics = {
        N.EPSILON_LOWER_BOUND: float(eps_hat),
        N.CLAIMED_EPSILON: float(claimed_epsilon),
        N.NUM_CANARIES: float(num_canaries),
        "guesses": float(r),
        "correct": float(correct),
        "confidence": float(confidence),
        "delta": float(delta),
        N.EPSILON_CEILING: float(ceiling),
    }
    details = {
        "canary_kind": canary_kind,
        "included": int(included.sum()),
        "train_size": int(x.shape[0]),
        "guess_in": int(k_in),
        "guess_out": int(k_out),
        "scores_in": [float(s) for s in scores[included]],
        "scores_out": [float(s) for s in scores[~included]],
        "method": "Steinke, Nasr & Jagielski, Privacy Auditing with One (1) Training Run, NeurIPS 2023, Thm 5.2",
    }
    logger.info("canary audit: %d/%d correct, eps_hat=%.3f", correct, r, eps_hat)
    return AuditResult(
        name="canary", metrics=metrics, passed=passed, details=details, seconds=time.perf_counter() - t0, notes=notes
    )


@register_audit(N.CANARY)
class CanaryAudit(Audit):
    """The one-run canary audit of a release: an empirical lower bound on its ε (runs when canaries > 0).

    Args:
        **options: further keyword arguments of :func:`run_canary_audit`.

    Example:
        >>> from securedc.audits import create_audit
        >>> create_audit("canary").name
        'canary'
    """

    higher_is_better = False

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.settings.canaries > 0

    def describe(self, ctx: AuditContext) -> str:
        return f"canary audit: {ctx.settings.canaries} canaries, one condensation of {ctx.steps} steps"

    def measure(self, ctx: AuditContext) -> AuditResult:
        from securedc.config import default_delta

        privacy = ctx.config.privacy
        delta = privacy.delta
        if delta is None:  # the release's own δ when private, so the canary run and its bound use one δ
            recorded = (ctx.privacy or {}).get("delta") if ctx.private else None
            delta = float(recorded) if recorded else default_delta(int(ctx.members[1].numel()))
        return run_canary_audit(
            ctx.members[0], ctx.members[1], condense_fn=ctx.condense_fn(delta=delta if ctx.private else None),
            claimed_epsilon=privacy.epsilon,
            delta=delta, num_canaries=ctx.settings.canaries, seed=ctx.config.seed, **ctx.meta, **self.options,
        )
