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

import torch
from torch import Tensor

from securedc.privacy.calibration import calibrate_noise
from securedc.privacy.mechanism import GaussianMechanism

__all__ = ["dp_prototype_baseline", "dp_prototype_draws", "baseline_delta"]


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
