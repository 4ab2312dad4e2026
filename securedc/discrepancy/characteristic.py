"""Characteristic-function distance with amplitude and phase terms (NCFM-style)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from securedc.discrepancy.base import Discrepancy, register_discrepancy
from securedc.errors import ConfigError

__all__ = ["CharacteristicFunction"]


@register_discrepancy("characteristic")
class CharacteristicFunction(Discrepancy):
    """Distance of empirical characteristic functions at sampled frequencies.

    With Φ_P(t) = E_P[exp(i tᵀf(x))] and frequencies t ~ N(0, τ² I) drawn each step,
    ``|Φ_T - Φ_S|² = (|Φ_T| - |Φ_S|)² + 2|Φ_T||Φ_S|(1 - cos(θ_T - θ_S))``; NCFM weights
    the amplitude part by α and the phase part by 1 - α. The real side is the class
    mean of φ(x) = [cos tᵀf(x), sin tᵀf(x)] / sqrt(K), a unit-norm per-sample vector.

    Args:
        num_frequencies: K frequencies per step.
        tau: frequency scale on unit-norm features.
        alpha: amplitude weight in [0, 1] (phase gets 1 - α).
        normalize: L2-normalise embeddings first (default True).
        scale: multiplies the loss (after :meth:`~Discrepancy.gradient_scale`) so DM's image
            learning rate works: the initial image-gradient norm is 0.7× mean-embedding's on
            Fashion-MNIST and 3.1× on digits (ConvNet-3, real init).

    Privacy:
        DP-compatible (mean of per-sample vectors of norm 1).

    References:
        Wang et al., "Dataset Distillation with Neural Characteristic Function: A Minmax
        Perspective" (NCFM), CVPR 2025, arXiv:2502.20653.
    """

    def __init__(
        self,
        *,
        num_frequencies: int = 1024,
        tau: float = 4.0,
        alpha: float = 0.5,
        normalize: bool = True,
        scale: float = 0.2,
    ) -> None:
        super().__init__(normalize=normalize)
        if num_frequencies < 1 or tau <= 0 or not (0 <= alpha <= 1):
            raise ConfigError(
                f"characteristic needs num_frequencies >= 1, tau > 0, alpha in [0, 1] "
                f"(got {num_frequencies}, {tau}, {alpha})"
            )
        self.num_frequencies, self.tau, self.alpha, self.scale = num_frequencies, tau, alpha, scale
        self._freq: Tensor | None = None

    def resample(self, *, feature_dim: int, generator: torch.Generator) -> None:
        self._freq = torch.randn(feature_dim, self.num_frequencies, generator=generator) * self.tau

    def vectors(self, features: Tensor) -> Tensor:
        if self._freq is None:
            raise RuntimeError("call resample() before vectors()")
        arg = features @ self._freq.to(features)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1) / math.sqrt(self.num_frequencies)

    def loss(self, real_stat: Tensor, syn_features: Tensor, syn_labels: Tensor) -> Tensor:
        k = self.num_frequencies
        syn_stat = self.syn_statistic(syn_features, syn_labels, real_stat.shape[0])
        present = self.present_classes(syn_labels, real_stat.shape[0])
        real, syn = real_stat[present] * math.sqrt(k), syn_stat[present] * math.sqrt(k)
        re_t, im_t, re_s, im_s = real[:, :k], real[:, k:], syn[:, :k], syn[:, k:]
        amp_t = torch.sqrt(re_t**2 + im_t**2 + 1e-12)
        amp_s = torch.sqrt(re_s**2 + im_s**2 + 1e-12)
        amplitude = (amp_t - amp_s) ** 2
        phase = 2 * (amp_t * amp_s - (re_t * re_s + im_t * im_s))
        per_class = (self.alpha * amplitude + (1 - self.alpha) * phase).mean(dim=1)
        return self.weighted_class_sum(per_class, syn_features, syn_labels, present, real_stat) * self.scale * 2
