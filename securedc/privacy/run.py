"""Setup of a condensation run's mechanism; for a private run its plan, accountant and DP resume.

A non-private run reads the real data through the exact mechanism (:func:`run_mechanism`).
A fresh private run calibrates its plan (:func:`~securedc.privacy.calibration.plan_private_run`:
q, the count and prototype releases, δ, σ). A resumed one takes the plan, the released counts
and the SECRET key of the random streams from the checkpoint instead (no new access to the
data) and refuses a configuration that would change the mechanism (σ, q, R).

Example:
    >>> import torch
    >>> from securedc.config import CondenseConfig, PrivacyConfig
    >>> cfg = CondenseConfig(iterations=4, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))
    >>> x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 2
    >>> mech, plan = run_mechanism(cfg, [1.0], x, y, num_classes=2, classes=[0, 1], noise_seed=0)
    >>> new_accountant(plan, mech).epsilon() < 8.0
    True
    >>> epsilon_due(new_accountant(plan, mech), 3, steps=4) is not None
    True
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from securedc.checkpoint import load_checkpoint
from securedc.config import REAL_DATA_INITS
from securedc.errors import DataError, PrivacyError
from securedc.privacy.accountant import PrivacyAccountant
from securedc.privacy.calibration import TOP_UP_SNR, PrivacyPlan, plan_private_run
from securedc.privacy.mechanism import ExactMechanism, GaussianMechanism, Mechanism
from securedc.privacy.streams import SecretStreams

if TYPE_CHECKING:
    from securedc.config import CondenseConfig

__all__ = ["run_mechanism", "restore_private", "check_resumable", "new_accountant", "epsilon_due"]

logger = logging.getLogger(__name__)


def run_mechanism(
    config: CondenseConfig,
    clip_bounds: Sequence[float],
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    classes: Sequence[int],
    image_shape: tuple[int, ...] | None = None,
    noise_seed: int | None = None,
    resume_from: str | Path | None = None,
    feature_dim: int | None = None,
) -> tuple[Mechanism, PrivacyPlan | None]:
    """The mechanism ``config`` asks for over the real data, and a private run's plan (else ``None``).

    A private run gets the Gaussian mechanism and a new plan, or with ``resume_from`` the
    checkpoint's plan, counts and key; a non-private run gets the exact mechanism.

    Args:
        config: the run's configuration (private or not).
        clip_bounds: the terms' clip bounds C_k (DP only).
        images, labels: the real training set (only the mechanism keeps them).
        num_classes: C.
        classes: the classes condensed.
        image_shape: the ``(channels, height, width)`` the run expects, or ``None`` (not checked).
        noise_seed: DP only: SECRET key of sampling and noise; ``None`` draws 128 bits from the OS.
        resume_from: DP only: the checkpoint the run resumes from.
        feature_dim: DP only: the distribution term's feature dimension, for the prototype
            top-up rule (:func:`~securedc.privacy.calibration.plan_private_run`); ``None`` = no top-up.

    Raises:
        DataError: images not of ``image_shape``, or ``--ipc`` larger than a class with real/mix
            initialisation (non-private).
        PrivacyError: a private run without iterations, or a resume that would change the mechanism.
    """
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise DataError(f"real images have shape {tuple(images.shape[1:])}, expected {image_shape}")
    if not config.privacy.private:
        mech = ExactMechanism(images, labels, num_classes=num_classes, batch_per_class=config.batch_real,
                              classes=classes)
        counts = mech.class_counts
        if config.resolved_init in REAL_DATA_INITS and int(counts.min()) < config.ipc:
            raise DataError(f"--ipc {config.ipc} is larger than the smallest class ({int(counts.min())} images)")
        return mech, None
    if config.iterations < 1:
        raise PrivacyError("a private run needs --iterations >= 1")
    clips = list(clip_bounds)
    if resume_from is not None:
        gm = GaussianMechanism(images, labels, num_classes=num_classes, clip_bounds=clips, classes=classes)
        return gm, restore_private(config, load_checkpoint(resume_from)[1], gm, source=resume_from)
    gm = GaussianMechanism(
        images, labels, num_classes=num_classes, clip_bounds=clips, classes=classes, noise_seed=noise_seed
    )
    plan = plan_private_run(config.privacy, gm, releases=config.resolved_releases, feature_dim=feature_dim,
                            max_expected_per_class=config.batch_real, ipc=config.ipc)
    logger.info("DP: epsilon=%g delta=%g q=%.4f R=%d sigma=%.4f counts=%s", plan.target_epsilon, plan.delta,
                plan.sample_rate, plan.releases, plan.noise_multiplier, plan.counts)
    if plan.top_up_noise_multiplier is not None:
        logger.info("DP: bank signal-to-noise %.2f < %g: prototype top-up sigma_B=%.4f, releases add sigma'=%.4f "
                    "(accounted as the planned sigma)", plan.bank_snr, TOP_UP_SNR, plan.top_up_noise_multiplier,
                    plan.release_sigma)
    return gm, plan


def restore_private(
    config: CondenseConfig, meta: Mapping[str, Any], mechanism: GaussianMechanism, *, source: Any
) -> PrivacyPlan:
    """Configure ``mechanism`` from a DP checkpoint's record: its plan, released counts and secret key.

    Returns:
        The checkpoint's privacy plan.

    Raises:
        PrivacyError: ``meta`` is not a private run's, or ``config`` would change the mechanism.
    """
    if not meta.get("privacy_plan") or not meta.get("secret"):
        raise PrivacyError(f"{source} is not a checkpoint of a private run; cannot resume with --epsilon")
    plan = PrivacyPlan.from_dict(meta["privacy_plan"], estimated_counts=meta["secret"]["counts"])
    check_resumable(config, plan)
    mechanism.streams = SecretStreams.from_state_dict(meta["secret"])
    counts = torch.tensor(plan.estimated_counts, dtype=torch.float64)
    mechanism.configure(
        sample_rate=plan.sample_rate, noise_multiplier=plan.release_sigma, expected_counts=counts * plan.sample_rate,
        accounted_noise_multiplier=plan.noise_multiplier,
    )
    return plan


def check_resumable(config: CondenseConfig, plan: PrivacyPlan) -> None:
    """Refuse a DP resume whose configuration would change the private mechanism.

    Raises:
        PrivacyError: naming each setting that differs from the checkpoint's plan.
    """
    p = config.privacy
    wanted = {
        "releases": config.resolved_releases,
        "target_epsilon": p.epsilon,
        "accountant": p.accountant,
        "counts": p.counts,
        **({"delta": p.delta} if p.delta is not None else {}),
        **({"sample_rate": p.sample_rate} if p.sample_rate is not None else {}),
    }
    have = plan.to_dict()
    changed = [f"{k} {have[k]} -> {v}" for k, v in wanted.items() if have[k] != v]
    if changed:
        raise PrivacyError(
            "resuming would change the private mechanism (" + ", ".join(changed) + "); the checkpoint's "
            f"releases used sigma={plan.noise_multiplier:.4g}, q={plan.sample_rate:g}, R={plan.releases}: "
            "resume with the original --iterations/--releases/--epsilon"
        )


def new_accountant(plan: PrivacyPlan | None, mechanism: Mechanism | None) -> PrivacyAccountant | None:
    """A private run's accountant with the one-off count and prototype releases (every prototype round)
    composed; else ``None``."""
    if mechanism is None or not mechanism.private:
        return None
    assert plan is not None  # set by make_mechanism
    accountant = PrivacyAccountant(plan.accountant, delta=plan.delta)
    for sigma0, q, steps in plan.one_off_releases():
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma0, sample_rate=q)
    return accountant


def epsilon_due(accountant: PrivacyAccountant | None, step: int, *, steps: int) -> float | None:
    """ε spent after step ``step`` (0-based) of ``steps`` when it is logged (about 50 times a run,
    and at the end), else ``None`` (also for a non-private run: ``accountant`` is ``None``)."""
    if accountant is None or (step + 1 != steps and (step + 1) % max(1, steps // 50) != 0):
        return None
    return accountant.epsilon()
