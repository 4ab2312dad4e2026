"""Release scheduling of a condensation run: public seeds, due releases, bank draws and contexts.

A run of K optimisation steps makes R releases; release r is made at step ⌊r·K/R⌋
(:func:`~securedc.bank.release_step`) and is the ONLY access to the real data. Every other step
draws one of the releases made so far from a public generator keyed by ``(seed, k)``. Each
release's public randomness (network, term randomness, DSA parameters) comes from its seed
:func:`step_seed` ``(seed, r)``, so a resumed run reproduces the uninterrupted one bit for bit.

Example:
    >>> drawn_release(0, 5, made=3) in range(3)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from securedc.augment import DSA
from securedc.bank import StatisticsBank, release_step
from securedc.config import CondenseConfig
from securedc.errors import ConfigError, PrivacyError
from securedc.models import seeded_model
from securedc.privacy import GaussianMechanism, Mechanism, PrivacyAccountant, PrivacyPlan
from securedc.terms import StepContext, Term

__all__ = ["ReleaseSchedule", "step_seed", "drawn_release", "release_network", "run_bank", "SCHEDULE_SALT"]

#: Salt of the public generator that picks a release for a step that makes none.
SCHEDULE_SALT = 0x5EED_BA4C


def step_seed(seed: int, step: int) -> int:
    """Public seed of release (or step) ``step`` derived from the master seed (stable across versions).

    Example:
        >>> step_seed(0, 1) != step_seed(1, 0)
        True
    """
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


def drawn_release(seed: int, step: int, *, made: int) -> int:
    """The release (of the ``made`` so far) that step ``step`` uses when it makes none (public)."""
    pick = torch.Generator().manual_seed(step_seed(seed ^ SCHEDULE_SALT, step))
    return int(torch.randint(made, (1,), generator=pick))


def release_network(
    config: CondenseConfig,
    seed: int,
    *,
    image_shape: tuple[int, ...],
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> nn.Module:
    """A fresh ``config.model`` network for one release (weights from ``seed``), frozen, in eval mode."""
    net = seeded_model(
        config.model,
        seed=seed,
        in_channels=image_shape[0],
        num_classes=num_classes,
        image_size=image_shape[1:],
        mean=mean,
        std=std,
    ).to(device)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def run_bank(
    bank: StatisticsBank | None,
    *,
    mechanism: Mechanism | None,
    config: CondenseConfig,
    plan: PrivacyPlan | None,
    num_classes: int,
    sensitivity: float,
    device: torch.device,
) -> StatisticsBank:
    """The bank a run fills (a new one for its R releases unless ``bank`` is given), on ``device``.

    A run reads the real data through ``mechanism`` or re-condenses from a complete saved
    ``bank`` (no real data, no privacy cost), never both. A private run's empty bank carries
    the DP class prototypes and the noise std of its releases.

    Raises:
        ConfigError: neither a mechanism nor a complete bank, or both.
        PrivacyError: ``mechanism`` and ``config`` disagree about privacy.
    """
    if mechanism is None:
        if bank is None or not bank.full:
            raise ConfigError("fit needs the real data's mechanism or a complete statistics bank")
    elif mechanism.private != config.privacy.private:
        raise PrivacyError("mechanism and configuration disagree about privacy")
    if mechanism is not None and bank is not None:
        raise ConfigError("give a mechanism or a saved bank, not both")
    if bank is None:
        bank = StatisticsBank(
            capacity=plan.releases if plan is not None else config.resolved_releases,
            num_classes=num_classes,
            max_bytes=int(config.bank_memory_gb * 2**30),
        )
    if plan is not None and len(bank) == 0:
        bank.prototypes, bank.noise_std = plan.prototypes, plan.noise_std(sensitivity)
        bank.centres = plan.centres
    bank.to(device)
    return bank


class ReleaseSchedule:
    """Makes the release due at a step, or draws one from the bank, with its public context.

    Args:
        seed: the run's master seed.
        steps: K, the optimisation steps of the run.
        terms: the objective's terms (their per-sample vectors and reducers make a release).
        dsa: differentiable augmentation, or ``None``.
        make_network: ``seed -> frozen network`` of one release.
        num_classes: C.
        private: whether the run is differentially private.
        real_precision: precision of the real side's network forward.
        real_chunk: real images per forward pass.
        device: where releases are computed.
    """

    def __init__(
        self,
        *,
        seed: int,
        steps: int,
        terms: Sequence[Term],
        dsa: DSA | None,
        make_network: Callable[[int], nn.Module],
        num_classes: int,
        private: bool,
        real_precision: str,
        real_chunk: int,
        device: torch.device,
    ) -> None:
        self.seed, self.steps = seed, steps
        self.terms, self.dsa, self.make_network = list(terms), dsa, make_network
        self.num_classes, self.private = num_classes, private
        self.real_precision, self.real_chunk, self.device = real_precision, real_chunk, device

    def context(
        self, step: int, release: int, seed: int, images: Tensor, labels: Tensor, bank: StatisticsBank
    ) -> tuple[StepContext, Any]:
        """Release ``release``'s public context: network, term randomness and DSA parameters from ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        ctx = StepContext(
            step=step,
            network=self.make_network(seed),
            generator=gen,
            num_classes=self.num_classes,
            private=self.private,
            synthetic_images=images.detach(),
            synthetic_labels=labels,
            model_factory=self.make_network,
            real_precision=self.real_precision,
            release=release,
            noise_std=bank.noise_std,
            chunk=self.real_chunk,
            subspace_images=bank.released_images() if self.private else None,
        )
        for term in self.terms:
            term.prepare(ctx)
        params = self.dsa.sample(self.num_classes, generator=gen) if self.dsa is not None else None
        return ctx, params

    def next(
        self,
        step: int,
        mechanism: Mechanism | None,
        bank: StatisticsBank,
        images: Tensor,
        labels: Tensor,
        accountant: PrivacyAccountant | None,
    ) -> tuple[int, StepContext, Any]:
        """Make the release due at ``step`` (the only real-data access) or draw one from the bank.

        Returns:
            ``(release index, its context, its DSA parameters)``; a new release is added to
            ``bank`` and, in DP mode, accounted in ``accountant``.
        """
        due = (
            mechanism is not None
            and not bank.full
            and step >= release_step(len(bank), releases=bank.capacity, steps=self.steps)
        )
        if not due:
            release = drawn_release(self.seed, step, made=len(bank))
            ctx, params = self.context(step, release, bank.seed(release), images, labels, bank)
            return release, ctx, params
        assert mechanism is not None
        release = len(bank)
        seed = step_seed(self.seed, release)
        ctx, params = self.context(step, release, seed, images, labels, bank)

        def vector_fn(x: Tensor, y: Tensor) -> list[Tensor]:
            if params is not None:
                x = self.dsa(x, params, y)
            parts: list[list[Tensor]] = [[] for _ in self.terms]
            for xc, yc in zip(x.split(self.real_chunk), y.split(self.real_chunk)):
                for k, term in enumerate(self.terms):
                    parts[k].append(term.real_vectors(ctx, xc, yc))
            return [torch.cat(p) for p in parts]

        with torch.no_grad():
            stats = mechanism.release(
                vector_fn, seed=seed, reducers=[t.reducer() for t in self.terms], device=self.device
            )
        bank.add(seed, stats)
        if accountant is not None:
            assert isinstance(mechanism, GaussianMechanism)
            accountant.step(noise_multiplier=mechanism.accounted_noise_multiplier, sample_rate=mechanism.sample_rate)
        return release, ctx, params
