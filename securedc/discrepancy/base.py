"""Discrepancy ABC and registry (opacus-style registry + factory, see docs/design.md).

A discrepancy compares the real class distribution with the synthetic one through
*per-sample vectors* φ(x) of network features: the real side enters only through
the per-class mean of φ (docs/design.md), which is exactly what the Gaussian
mechanism privatises. Discrepancies whose real statistic is not such a mean set
``private_ok = False`` and override :meth:`Discrepancy.reduce`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from securedc.errors import PrivacyError
from securedc.functional import class_means
from securedc.registry import Registry

__all__ = ["Discrepancy", "register_discrepancy", "create_discrepancy", "discrepancy_for_run", "list_discrepancies"]

_REGISTRY: Registry["Discrepancy"] = Registry("discrepancy")


def register_discrepancy(name: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`Discrepancy` under ``name`` (kebab-case)."""
    return _REGISTRY.register(name)


def create_discrepancy(name: str, **kwargs: Any) -> "Discrepancy":
    """Instantiate a registered discrepancy by name (``_`` and ``-`` both accepted).

    Raises:
        ConfigError: unknown name (the message lists the choices).

    Example:
        >>> create_discrepancy("mean_embedding").name
        'mean-embedding'
    """
    return _REGISTRY.create(name, **kwargs)


def discrepancy_for_run(name: str, *, private: bool, **kwargs: Any) -> "Discrepancy":
    """A discrepancy for a condensation term: in DP mode, L2-normalised features (so clipping
    does not bias the statistic) and only discrepancies that are means of per-sample vectors.

    Raises:
        PrivacyError: ``private`` and the discrepancy cannot be privatised.
    """
    if private:
        kwargs.setdefault("normalize", True)
    disc = create_discrepancy(name, **kwargs)
    if private and not disc.private_ok:
        raise PrivacyError(
            f"discrepancy {disc.name!r} is not a mean of per-sample vectors and "
            "cannot be privatised; use mean-embedding, mmd or characteristic with --epsilon"
        )
    return disc


def list_discrepancies() -> list[str]:
    """Names of all registered discrepancies."""
    return sorted(_REGISTRY)


class Discrepancy(abc.ABC):
    """Distance between real and synthetic class distributions of features.

    Args:
        normalize: L2-normalise each feature vector first (bounded per-sample
            vectors; used in DP mode so clipping does not distort the statistic).

    Privacy:
        The real data enters only through :meth:`real_vectors`, one row per example.
    """

    name: ClassVar[str]
    private_ok: ClassVar[bool] = True

    def __init__(self, *, normalize: bool = False) -> None:
        self.normalize = normalize
        #: public centre subtracted before normalising (set per release by a term, e.g. in DP mode)
        self.center: Tensor | None = None
        #: ``[f, k]`` orthonormal public basis the centred features are projected on (DP subspace), or None
        self.basis: Tensor | None = None
        #: ``[C]`` noise std of one coordinate of a DP real statistic (set per release in DP mode)
        self.noise_std: Tensor | None = None

    def centred(self, features: Tensor) -> Tensor:
        """Features minus the public :attr:`center`, in the coordinates of :attr:`basis` when set."""
        if self.center is not None:
            features = features - self.center.to(features)
        if self.basis is not None:
            features = features @ self.basis.to(features)
        return features

    def prepare(self, features: Tensor) -> Tensor:
        features = self.centred(features)
        if self.normalize:
            return features / (features.norm(dim=1, keepdim=True) + 1e-8)
        return features

    @abc.abstractmethod
    def resample(self, *, feature_dim: int, generator: torch.Generator) -> None:
        """Draw this step's randomness (frequencies, projections) from ``generator``."""

    @abc.abstractmethod
    def vectors(self, features: Tensor) -> Tensor:
        """Per-sample vectors φ ``[n, d]`` of features ``[n, f]``; differentiable."""

    def real_vectors(self, features: Tensor) -> Tensor:
        """φ of real features; the per-class mean of these rows is the real statistic."""
        return self.vectors(self.prepare(features))

    def reduce(self, vectors: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        """Exact real statistic ``[C, d]`` (non-private path); the class mean by default."""
        return class_means(vectors, labels, num_classes)

    def syn_statistic(self, features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        """The synthetic side's statistic, differentiable in ``features``."""
        return self.reduce(self.vectors(self.prepare(features)), labels, num_classes)

    def gradient_scale(self, syn_features: Tensor, syn_labels: Tensor, num_classes: int) -> Tensor:
        """Detached per-class loss factors ``[C]`` giving normalised-feature discrepancies the
        image-gradient scale of raw ones.

        Unit-normalising features divides the image gradient by roughly ``||f||²``, which grows
        with resolution and architecture (≈ 24 on 8×8 digits, ≈ 660 on 28×28 FMNIST for ConvNet-3),
        so one image learning rate could not serve both. Multiplying class c's loss by the mean
        squared norm of its *synthetic* features restores the raw scale (measured: normalised DM's
        initial gradient norm equals raw DM's within 2 % on both). It reads only synthetic images
        (public, or post-processing of DP releases), so it costs no privacy, and it is per class so
        class subsets (distributed ranks) stay independent. All ones without normalisation.
        """
        if not self.normalize:
            return syn_features.new_ones(num_classes)
        sq = self.centred(syn_features.detach()).pow(2).sum(dim=1, keepdim=True)
        return class_means(sq, syn_labels, num_classes).squeeze(1)

    @staticmethod
    def present_classes(syn_labels: Tensor, num_classes: int) -> Tensor:
        """Mask ``[C]`` of the classes that have synthetic images (only those enter the loss)."""
        return torch.bincount(syn_labels, minlength=num_classes) > 0

    def signal_weights(self, real_stat: Tensor) -> Tensor:
        """Per-class James–Stein factors ``λ_c = max(0, 1 − d·τ_c² / ‖m_c‖²)`` of a DP statistic.

        A DP class statistic ``m_c`` is the true one plus Gaussian noise of known std ``τ_c`` per
        coordinate (σ·C / (q·N̂_c), public or released quantities), so ``‖m_c‖² − d·τ_c²`` estimates
        the squared norm of its signal and ``λ_c`` the share of ``m_c`` that is signal. Weighting
        class c's loss by ``λ_c`` lets releases that are mostly noise barely move S (post-processing,
        no privacy cost). All ones when :attr:`noise_std` is unset (exact statistics).

        References:
            James & Stein, "Estimation with Quadratic Loss", 1961.
        """
        if self.noise_std is None:
            return real_stat.new_ones(real_stat.shape[0])
        energy = real_stat.detach().pow(2).sum(dim=1).clamp_min(1e-12)
        noise = real_stat.shape[1] * self.noise_std.to(real_stat).pow(2)
        return (1 - noise / energy).clamp_min(0)

    def weighted_class_sum(
        self, per_class: Tensor, syn_features: Tensor, syn_labels: Tensor, present: Tensor, real_stat: Tensor
    ) -> Tensor:
        """``Σ`` of per-class losses (one entry per present class) weighted by :meth:`gradient_scale`
        and, for DP statistics, by :meth:`signal_weights`."""
        weights = self.gradient_scale(syn_features, syn_labels, present.numel()) * self.signal_weights(real_stat)
        return (per_class * weights[present]).sum()

    def loss(self, real_stat: Tensor, syn_features: Tensor, syn_labels: Tensor) -> Tensor:
        """Discrepancy summed over classes; default ``Σ_c ||m_c^T - m_c^S||²`` (times :meth:`gradient_scale`)."""
        syn_stat = self.syn_statistic(syn_features, syn_labels, real_stat.shape[0])
        present = self.present_classes(syn_labels, real_stat.shape[0])
        per_class = ((real_stat - syn_stat)[present] ** 2).sum(dim=1)
        return self.weighted_class_sum(per_class, syn_features, syn_labels, present, real_stat)
