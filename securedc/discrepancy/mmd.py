"""Multi-bandwidth Gaussian-kernel MMD via random Fourier features."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from securedc.discrepancy.base import Discrepancy, register_discrepancy
from securedc.errors import ConfigError

__all__ = ["MMD"]


@register_discrepancy("mmd")
class MMD(Discrepancy):
    """Squared MMD with a mixture of Gaussian kernels on (unit-normalised) embeddings.

    The kernel ``k(a, b) = mean_σ exp(-||a - b||² / (2σ²))`` is written with random
    Fourier features φ (Rahimi & Recht), so ``MMD² ≈ ||mean φ(T_c) - mean φ(S_c)||²``:
    the real side is a mean of bounded per-sample vectors (``||φ(x)||² ≤ 2``) and can
    be privatised as in DP-MERF. Bandwidths are fixed (public), never fitted on data.

    Args:
        bandwidths: kernel bandwidths σ on unit-norm features.
        num_features: random features per bandwidth.
        normalize: L2-normalise embeddings first (default True: fixed bandwidths need a known scale).
        scale: multiplies the loss (after :meth:`~Discrepancy.gradient_scale`) so DM's image
            learning rate works: the initial image-gradient norm is 0.8× mean-embedding's on
            Fashion-MNIST and 2.2× on digits (ConvNet-3, real init).

    Privacy:
        DP-compatible (mean of per-sample vectors).

    References:
        Zhang et al., "M3D: Dataset Condensation by Minimizing Maximum Mean Discrepancy", AAAI 2024, arXiv:2312.15927.
        Harder et al., "DP-MERF: Differentially Private Mean Embeddings with Random Features", AISTATS 2021, arXiv:2002.11603.
        Rahimi & Recht, "Random Features for Large-Scale Kernel Machines", NeurIPS 2007.
    """

    def __init__(
        self,
        *,
        bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0),
        num_features: int = 512,
        normalize: bool = True,
        scale: float = 0.4,
    ) -> None:
        super().__init__(normalize=normalize)
        if not bandwidths or any(b <= 0 for b in bandwidths):
            raise ConfigError(f"mmd bandwidths must be positive (got {list(bandwidths)})")
        if num_features < 1:
            raise ConfigError(f"mmd num_features must be >= 1 (got {num_features})")
        self.bandwidths = tuple(float(b) for b in bandwidths)
        self.num_features = num_features
        self.scale = scale
        self._weights: Tensor | None = None
        self._phases: Tensor | None = None

    def resample(self, *, feature_dim: int, generator: torch.Generator) -> None:
        k, d = len(self.bandwidths), self.num_features
        w = torch.randn(k, feature_dim, d, generator=generator)
        inv_bw = torch.tensor([1.0 / b for b in self.bandwidths])[:, None, None]
        self._weights = (w * inv_bw).permute(1, 0, 2).reshape(feature_dim, k * d)
        self._phases = torch.rand(k * d, generator=generator) * (2 * math.pi)

    def vectors(self, features: Tensor) -> Tensor:
        if self._weights is None or self._phases is None:
            raise RuntimeError("call resample() before vectors()")
        w, b = self._weights.to(features), self._phases.to(features)
        norm = math.sqrt(2.0 / (self.num_features * len(self.bandwidths)))
        return torch.cos(features @ w + b) * norm

    def loss(self, real_stat: Tensor, syn_features: Tensor, syn_labels: Tensor) -> Tensor:
        return super().loss(real_stat, syn_features, syn_labels) * self.scale
