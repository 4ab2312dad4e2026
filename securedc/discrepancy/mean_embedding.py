"""Mean-embedding discrepancy (distribution matching, DM)."""

from __future__ import annotations

import torch
from torch import Tensor

from securedc.discrepancy.base import Discrepancy, register_discrepancy

__all__ = ["MeanEmbedding"]


@register_discrepancy("mean-embedding")
class MeanEmbedding(Discrepancy):
    """Squared distance of per-class mean embeddings under a random network.

    ``d(S, T) = Σ_c || E_{x∈T_c} f(x) - E_{s∈S_c} f(s) ||²`` with a freshly initialised
    network f every step — an integral probability metric over random feature maps.
    φ(x) = f(x) (optionally L2-normalised), so the statistic is a plain class mean.

    Privacy:
        DP-compatible: the real statistic is a mean of per-sample vectors.

    Example:
        >>> d = MeanEmbedding()
        >>> d.resample(feature_dim=4, generator=torch.Generator().manual_seed(0))
        >>> f = torch.randn(6, 4); y = torch.tensor([0, 0, 0, 1, 1, 1])
        >>> float(d.loss(d.reduce(d.real_vectors(f), y, 2), f, y))
        0.0

    References:
        Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023, arXiv:2110.04181.
    """

    def resample(self, *, feature_dim: int, generator: torch.Generator) -> None:
        """Nothing to draw: the randomness is the step's network itself."""

    def vectors(self, features: Tensor) -> Tensor:
        return features
