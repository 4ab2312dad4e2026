"""The distribution-discrepancy term: a registered discrepancy on the step network's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from securedc.batching import autocast_context
from securedc.discrepancy.base import discrepancy_for_run
from securedc.errors import ConfigError
from securedc.functional import noise_images
from securedc.subspace import release_basis, subspace_dim
from securedc.terms.base import StepContext, Term, register_term

if TYPE_CHECKING:
    from securedc.config import CondenseConfig

__all__ = ["DistributionTerm", "public_center"]


def public_center(network: nn.Module, image_shape: Sequence[int], *, generator: torch.Generator, n: int = 64) -> Tensor:
    """Mean feature of ``n`` public noise images (:func:`~securedc.functional.noise_images`).

    ReLU features of a random network share one dominant direction: on digits the per-class means
    of unit-normalised features have norm 0.998 and differ between classes by only 0.03, so the
    Gaussian noise of a DP release swamps the class signal. Subtracting this public centre before
    normalising spreads the per-sample vectors over the sphere (between-class deviation 0.40,
    against 0.42 with the true, private data mean), a 14x larger signal at the same sensitivity.
    It depends only on the release's public network and generator, so it costs no privacy and is
    regenerated exactly when an old release is reused.
    """
    return _center_of(network, image_shape, center_seed(generator), n=n)


def center_seed(generator: torch.Generator) -> int:
    """The public seed of :func:`public_center`'s noise images: one draw from ``generator``."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _center_of(network: nn.Module, image_shape: Sequence[int], seed: int, *, n: int = 64) -> Tensor:
    images = noise_images((n, *image_shape), generator=torch.Generator().manual_seed(seed))
    device = next(network.parameters()).device
    with torch.no_grad():
        return network.embed(images.to(device)).float().mean(0)


@register_term("distribution")
class DistributionTerm(Term):
    """``d(P_S, P_T)`` measured by a discrepancy on embeddings of a random network.

    Args:
        discrepancy: registered discrepancy name.
        private: DP mode; refuses discrepancies that are not means of per-sample
            vectors and L2-normalises features so clipping does not bias the statistic.
        subspace: DP mode: k > 0 projects each release's centred features on the top-k principal
            directions of its network's features of the run's DP prototypes (``ctx.subspace_images``;
            :mod:`securedc.subspace`) before normalising, so the release's noise has k coordinates
            instead of the network's feature width. 0 = full features.
        discrepancy_kwargs: forwarded to the discrepancy.
        weight, clip: see :class:`Term`.

    Privacy:
        Real examples enter only through :meth:`real_vectors` (one row each).

    Memory:
        DP mode caches each release's public centre, and with ``subspace`` its basis:
        ``R × feature_dim × (1 + k)`` floats (R = 100, 2 048 features, k = 64: 53 MB).

    References:
        Chen & Selvan, "A Discrepancy-Based Perspective on Dataset Condensation", 2025.
        Zheng et al., "Improving Noise Efficiency in Privacy-preserving Dataset Distillation", ICCV 2025
        (the subspace).
    """

    def __init__(
        self,
        *,
        discrepancy: str = "mean-embedding",
        private: bool = False,
        discrepancy_kwargs: dict[str, Any] | None = None,
        subspace: int = 0,
        weight: float = 1.0,
        clip: float = 1.0,
    ) -> None:
        super().__init__(weight=weight, clip=clip)
        if subspace < 0 or (subspace and not private):
            raise ConfigError(f"subspace must be 0, or > 0 in a private run (got {subspace})")
        self.private = bool(private)
        self.subspace = int(subspace)
        self.discrepancy = discrepancy_for_run(discrepancy, private=private, **(discrepancy_kwargs or {}))
        # DP mode: each release's public centre (and subspace basis), computed once — a step that
        # reuses a release regenerates the same network and would recompute the same values
        self._centers: dict[tuple[int, int], tuple[Tensor, Tensor | None]] = {}

    @classmethod
    def from_config(cls, config: "CondenseConfig") -> "DistributionTerm | None":
        if config.dist_weight <= 0:
            return None
        return cls(
            discrepancy=config.discrepancy,
            private=config.privacy.private,
            discrepancy_kwargs=config.discrepancy_kwargs,
            subspace=config.privacy.subspace,
            weight=config.dist_weight,
            clip=config.privacy.clip,
        )

    def prepare(self, ctx: StepContext) -> None:
        k = self._subspace_dim(ctx)
        self.discrepancy.resample(feature_dim=k or ctx.network.feature_dim, generator=ctx.generator)
        if self.private:
            # the release's network is a function of its public seed, and so is this draw
            key = (ctx.release, center_seed(ctx.generator))
            if key not in self._centers:
                center = _center_of(ctx.network, ctx.synthetic_images.shape[1:], key[1])
                basis = release_basis(ctx.network, ctx.subspace_images, k) if k else None
                self._centers[key] = (center, basis)
            self.discrepancy.center, self.discrepancy.basis = self._centers[key]
        self.discrepancy.noise_std = ctx.noise_std

    def _subspace_dim(self, ctx: StepContext) -> int:
        """k of this release's subspace (0 = full features)."""
        if not self.subspace:
            return 0
        if ctx.subspace_images is None:
            raise ConfigError("--subspace needs the DP prototypes of the run (a private run with a prototype share > 0)")
        return subspace_dim(self.subspace, images=len(ctx.subspace_images), feature_dim=ctx.network.feature_dim)

    def real_vectors(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        with autocast_context(ctx.real_precision, x.device):
            features = ctx.network.embed(x)
        return self.discrepancy.real_vectors(features.float()).detach()

    def reducer(self):
        return self.discrepancy.reduce

    def loss(self, ctx: StepContext, real_stat: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
        return self.discrepancy.loss(real_stat, ctx.embed(ctx.network, syn_x), syn_y)

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "discrepancy": self.discrepancy.name}
        return {**out, "subspace": self.subspace} if self.subspace else out
