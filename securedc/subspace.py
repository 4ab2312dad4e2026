"""The DP subspace: release each distribution statistic in a k-dimensional public subspace.

A DP release of the distribution term adds Gaussian noise of std τ to every one of the d
coordinates of a class statistic, so the noise energy is ``d·τ²`` while the class signal lives in a
few directions. Projecting every per-sample vector on a k-dimensional subspace *before* clipping and
noising leaves the sensitivity unchanged (the projected, re-normalised vectors still have norm 1)
and cuts the noise energy to ``k·τ²``. The subspace must not depend on the private data beyond what
was already released: Dosser (Zheng et al., ICCV 2025, "Subspace Error Reduction") learns it by PCA
of the release network's features of *public auxiliary images*.

securedc takes the auxiliary images from the run's own phase-0 release instead: the DP class
prototypes or sub-class centres (:mod:`securedc.privacy.centres`) are already released and paid
for, so the principal directions of their features under a release's network are post-processing
and cost no privacy, and no public dataset is needed. The basis is a deterministic function of
the release's public network and of the released prototypes, so a step that reuses a release, a
resumed run and a re-condensation from a saved bank (which stores the prototypes) regenerate it
exactly; it is never stored.

Measured on Fashion-MNIST (ConvNet-3, 2 048 features, one random network, the between-class
deviation of the unit-normalised class means against the noise energy ``k·τ²`` of an ε = 1 bank
release, q = 0.1, σ = 5.1; ``benchmarks/results/subspace_snr.md``): full features 1.2; k = 64 directions
of 100 sub-class centres 54 (100 k-means centres stand in for the DP ones); k = 64 directions of 2 000
held-out training images 49.
End to end the gain did not show (ε = 1, R = 50, K = 1 500, two secret keys, each shared by a pair of
runs: 76.8 / 76.6 % with k = 64 against 76.6 / 76.8 % without, ``benchmarks/results/dp_subspace_fmnist_eps1*.md``): S is fitted to all R
releases at once, which already averages their noise, and the projection drops what lies outside the
k directions. Off by default (``PrivacyConfig.subspace = 0``).

References:
    Zheng et al., "Improving Noise Efficiency in Privacy-preserving Dataset Distillation"
    (Dosser), ICCV 2025, arXiv:2508.01749.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["subspace_dim", "principal_basis", "release_basis"]


def subspace_dim(requested: int, *, images: int, feature_dim: int) -> int:
    """The subspace's dimension: ``requested``, at most the rank of ``images`` centred feature rows
    (``images − 1``) and at most ``feature_dim``; 0 when no basis can be formed.

    Example:
        >>> subspace_dim(64, images=100, feature_dim=2048), subspace_dim(64, images=10, feature_dim=2048)
        (64, 9)
    """
    if requested <= 0 or images < 2:
        return 0
    return min(int(requested), images - 1, int(feature_dim))


def principal_basis(rows: Tensor, k: int) -> Tensor:
    """The top-``k`` principal directions ``[d, k]`` of ``rows`` ``[n, d]`` (orthonormal columns).

    Exact (``torch.linalg.svd`` of the centred rows, no random sketch), and each direction's sign is
    fixed so that its largest-magnitude entry is positive: the basis is a function of ``rows`` alone,
    so statistics stored in one run stay valid when another process recomputes it.

    Example:
        >>> basis = principal_basis(torch.randn(20, 6, generator=torch.Generator().manual_seed(0)), 3)
        >>> basis.shape, bool(torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-5))
        (torch.Size([6, 3]), True)
    """
    rows = rows.double()
    _, _, vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
    basis = vh[:k].T
    pivot = basis.abs().argmax(dim=0)  # a unit column's largest entry is never 0
    return (basis * torch.sign(basis[pivot, torch.arange(k)])).float()


def release_basis(network: nn.Module, images: Tensor, k: int) -> Tensor:
    """The subspace of one release: principal directions of ``network``'s features of ``images``.

    Args:
        network: the release's public network (``embed`` gives features).
        images: ``[n, *image_shape]`` public or already released images (the DP prototypes).
        k: the dimension (:func:`subspace_dim`).

    Returns:
        ``[feature_dim, k]`` float32 on the network's device.
    """
    device = next(network.parameters()).device
    with torch.no_grad():
        features = network.embed(images.to(device)).float()
    return principal_basis(features, k)  # centred on the rows' mean: the public centre does not matter
