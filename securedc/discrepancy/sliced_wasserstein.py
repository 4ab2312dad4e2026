"""Sliced Wasserstein-2 distance between class feature distributions (non-private only)."""

from __future__ import annotations

import torch
from torch import Tensor

from securedc.discrepancy.base import Discrepancy, register_discrepancy
from securedc.errors import ConfigError

__all__ = ["SlicedWasserstein"]


@register_discrepancy("sliced-wasserstein")
class SlicedWasserstein(Discrepancy):
    """Mean over random directions of the squared W2 distance of 1-D projections.

    φ(x) = the projections of f(x) on P random unit directions; the real statistic is
    the per-class *quantiles* of those projections at ``num_quantiles`` levels, compared
    with the synthetic quantiles at the same levels (differentiable via sorting).

    Privacy:
        NOT DP-compatible: quantiles are not a mean of per-sample vectors, so this
        discrepancy is refused with ``--epsilon`` (``private_ok = False``).

    References:
        Bonneel et al., "Sliced and Radon Wasserstein Barycenters of Measures", JMIV 2015.
        Chen & Selvan, "A Discrepancy-Based Perspective on Dataset Condensation", 2025.
    """

    private_ok = False

    def __init__(
        self,
        *,
        num_projections: int = 256,
        num_quantiles: int = 32,
        normalize: bool = False,
        scale: float = 80.0,
    ) -> None:
        super().__init__(normalize=normalize)
        if num_projections < 1 or num_quantiles < 1:
            raise ConfigError("sliced-wasserstein needs num_projections >= 1 and num_quantiles >= 1")
        self.num_projections, self.num_quantiles, self.scale = num_projections, num_quantiles, scale
        self._dirs: Tensor | None = None

    def resample(self, *, feature_dim: int, generator: torch.Generator) -> None:
        dirs = torch.randn(feature_dim, self.num_projections, generator=generator)
        self._dirs = dirs / dirs.norm(dim=0, keepdim=True)

    def vectors(self, features: Tensor) -> Tensor:
        if self._dirs is None:
            raise RuntimeError("call resample() before vectors()")
        return features @ self._dirs.to(features)

    def reduce(self, vectors: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        levels = (torch.arange(self.num_quantiles, dtype=vectors.dtype, device=vectors.device) + 0.5) / self.num_quantiles
        rows = []
        for c in range(num_classes):
            v = vectors[labels == c]
            if v.shape[0] == 0:
                rows.append(vectors.new_zeros(self.num_quantiles * vectors.shape[1]))
            else:
                rows.append(torch.quantile(v, levels, dim=0).reshape(-1))
        return torch.stack(rows)

    def loss(self, real_stat: Tensor, syn_features: Tensor, syn_labels: Tensor) -> Tensor:
        syn_stat = self.syn_statistic(syn_features, syn_labels, real_stat.shape[0])
        present = self.present_classes(syn_labels, real_stat.shape[0])
        diff = (real_stat - syn_stat)[present] ** 2
        return self.weighted_class_sum(diff.mean(dim=1), syn_features, syn_labels, present, real_stat) * self.scale
