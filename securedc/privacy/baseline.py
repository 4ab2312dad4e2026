"""The DP baseline a private release is judged against: class prototypes from the same budget.

A private condensed set should be worth more than the simplest release the same (ε, δ) buys:
the per-class mean images of all members, released once through the Gaussian mechanism
(:meth:`~securedc.privacy.mechanism.GaussianMechanism.release_prototypes`, counts included),
each repeated ``ipc`` times. The utility gate of a DP release compares against it (docs/audits.md);
a random real subset — the baseline of a non-private release — is no private alternative, since
it publishes members.

The baseline is computed by the data owner inside the audit with fresh secret randomness and is
never released; only its accuracy reaches the owner record.

Example:
    >>> import torch
    >>> x = torch.rand(40, 1, 4, 4); y = torch.arange(4).repeat(10)
    >>> bx, by = dp_prototype_baseline(x, y, ipc=2, num_classes=4, epsilon=8.0, delta=1e-5)
    >>> tuple(bx.shape), by.tolist()
    ((8, 1, 4, 4), [0, 0, 1, 1, 2, 2, 3, 3])

References:
    Dwork & Roth, "The Algorithmic Foundations of Differential Privacy", 2014 (Gaussian mechanism).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from securedc.privacy.calibration import calibrate_noise
from securedc.privacy.mechanism import GaussianMechanism

__all__ = ["dp_prototype_baseline", "dp_prototype_draws", "baseline_delta", "combined_prototype_sigma",
           "paired_prototype_baseline", "PAIRED_SIGMA_TOLERANCE"]

#: a run's own DP prototypes stand in for the baseline when their combined noise multiplier is
#: within this relative tolerance of the single full-budget release's (:func:`paired_prototype_baseline`)
PAIRED_SIGMA_TOLERANCE = 0.10


def dp_prototype_baseline(
    images: Tensor,
    labels: Tensor,
    *,
    ipc: int,
    num_classes: int,
    epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> tuple[Tensor, Tensor]:
    """DP class prototypes spending the whole (ε, δ) in one release, ``ipc`` copies per class.

    Args:
        images, labels: the members (the data the release was condensed from).
        ipc: images per class of the compared release.
        num_classes: C.
        epsilon, delta: the release's budget.
        accountant: opacus accountant used to calibrate the single release.

    Returns:
        ``(images [C·ipc, *shape] in [0, 1], labels [C·ipc])``.
    """
    if not math.isfinite(epsilon):
        raise ValueError("the DP prototype baseline needs a finite epsilon")
    sigma = calibrate_noise(
        target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1, accountant=accountant
    )
    mech = GaussianMechanism(images, labels, num_classes=num_classes, clip_bounds=[1.0])
    protos, _ = mech.release_prototypes(noise_multiplier=sigma, with_counts=True)
    out = protos.repeat_interleave(ipc, dim=0)
    return out, torch.arange(num_classes).repeat_interleave(ipc)


def baseline_delta(delta: float | None, num_members: int) -> float:
    """δ of the baseline: the release's, or the default δ for ``num_members`` examples (as a run without ``--delta``)."""
    from securedc.config import default_delta

    return float(delta) if delta is not None else default_delta(num_members)


def dp_prototype_draws(
    images: Tensor,
    labels: Tensor,
    *,
    ipc: int,
    num_classes: int,
    epsilon: float,
    delta: float,
    draws: int,
) -> list[tuple[Tensor, Tensor]]:
    """``draws`` independent draws of :func:`dp_prototype_baseline` (at least one), one per evaluation
    model: the gates compare with the baseline's expected accuracy, not one draw's."""
    return [dp_prototype_baseline(images, labels, ipc=ipc, num_classes=num_classes, epsilon=epsilon, delta=delta)
            for _ in range(max(1, draws))]


def combined_prototype_sigma(privacy: Mapping[str, Any]) -> float | None:
    """Noise multiplier of a run's DP class-mean prototypes: the phase-0 release (σ_p) combined by inverse
    variance with the prototype top-up (σ_B) when there was one; ``None`` without prototypes. When the
    prototype rounds released sub-class centres (``prototype_clusters > 1``) the class means are those
    of the first round alone, at ``σ_p·sqrt(prototype_rounds)``.

    Example:
        >>> round(combined_prototype_sigma({"prototype_noise_multiplier": 5.0, "top_up_noise_multiplier": 5.0}), 3)
        3.536
    """
    sp, sb = privacy.get("prototype_noise_multiplier"), privacy.get("top_up_noise_multiplier")
    if not sp:
        return None
    if int(privacy.get("prototype_clusters") or 1) > 1:
        sp = float(sp) * math.sqrt(int(privacy.get("prototype_rounds") or 1))
    inverse = 1.0 / float(sp) ** 2 + (1.0 / float(sb) ** 2 if sb else 0.0)
    return inverse ** -0.5


def paired_prototype_baseline(
    prototypes: Tensor | None,
    privacy: Mapping[str, Any] | None,
    *,
    ipc: int,
    epsilon: float,
    delta: float,
    accountant: str = "rdp",
) -> tuple[Tensor, Tensor] | None:
    """The release's own DP prototypes as its baseline, when they carry (almost) the whole budget.

    A run that released its class prototypes with noise multiplier σ_c (phase 0 and, in the
    low-SNR regime, the top-up: :func:`combined_prototype_sigma`) holds one draw of the DP
    prototype baseline's mechanism whenever σ_c is within :data:`PAIRED_SIGMA_TOLERANCE` of the
    σ of a single release spending the whole (ε, δ) (digits at ε = 1: 4.10 vs 4.06 at δ = 1e-5; 3.83
    vs 3.52 at the δ = 1e-4 the card command derives, since phase 0 is calibrated at the provisional
    δ = 1e-5 before the released N fixes δ — the paired reference is then that much weaker). Comparing the
    release with *that* draw (a paired comparison: same noise, S was initialised from it) removes
    the draw-to-draw spread of the baseline — several accuracy points on small data — from the
    utility gate, which then asks whether condensation kept what its prototypes hold. The
    prototypes are released quantities (post-processing, no privacy cost).

    Args:
        prototypes: ``[C, *shape]`` the run's DP prototypes (its bank's), or ``None``.
        privacy: the run's privacy section (``prototype_noise_multiplier``, ``top_up_noise_multiplier``).
        ipc: copies per class.
        epsilon, delta: the release's budget (δ as for :func:`dp_prototype_baseline`).
        accountant: opacus accountant of the full-budget calibration.

    Returns:
        ``(images [C·ipc, *shape], labels [C·ipc])``, or ``None`` when there are no prototypes or they
        carry noticeably less than the whole budget (then the gate uses independent full-budget draws).
    """
    sigma_c = combined_prototype_sigma(privacy or {})
    if prototypes is None or sigma_c is None or not math.isfinite(epsilon):
        return None
    full = calibrate_noise(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1, accountant=accountant)
    if sigma_c > (1 + PAIRED_SIGMA_TOLERANCE) * full:
        return None
    classes = prototypes.shape[0]
    return prototypes.detach().float().cpu().repeat_interleave(ipc, dim=0), torch.arange(classes).repeat_interleave(ipc)
