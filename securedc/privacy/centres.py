"""DP sub-class prototypes: per-class centres from a few differentially private Lloyd rounds.

One DP mean image per class is a poor start for ``ipc`` synthetic images: every copy starts at the
same blurred average and the DM loop must find the class's modes from noisy statistics. Non-private,
k-means centres fix this (:mod:`securedc.kmeans`). This module gives the private counterpart: the
prototype share of ε buys ``L`` Gaussian releases instead of one,

* round 1: the per-class sums of ``(x − ½, w)`` over all members (the class mean and, with
  ``w > 0``, the count), as :meth:`~securedc.privacy.mechanism.GaussianMechanism.release_prototypes`;
* rounds 2..L: one Lloyd step per class on average-pooled images (``pool × pool`` blocks, which
  lowers the sensitivity ``½·sqrt(D)`` by ``pool``): every member is assigned to the nearest of
  ``K`` released centres (post-processing of earlier rounds, plus the member itself), and the
  ``[K, D' + 1]`` sums of ``(x' − ½, w')`` per cluster get Gaussian noise. Round 2 starts from the
  round-1 class mean plus ``K`` random directions of length :data:`SPLIT_RADIUS` (secret randomness).

Each example lies in one class and one cluster, so every round is one Gaussian mechanism with the
sensitivity of a single row, ``Δ = sqrt(B² + w²)``. ``L`` rounds at noise multiplier ``σ_p·sqrt(L)``
compose to exactly one release at ``σ_p`` (RDP: ``L·α / (2σ_p²L)``; the privacy-loss distribution of
a Gaussian mechanism composes to a Gaussian one, Dong, Roth & Su 2022), so the accountant composes
the ``L`` rounds and ε is the one the prototype share was calibrated for.

Whether round 2 splits a class is decided after round 1 from released numbers only
(:func:`choose_clusters`): with small classes or heavy noise a centre would be mostly noise, and the
later rounds release the class sums again (combined by inverse variance, exactly one release at σ_p).

Simulated on public benchmark data (Fashion-MNIST classes 0, 2, 6, 9; ipc 10; mean squared distance
of a member to its nearest centre, in pixels²): class mean 41.2–48.8, exact k-means 21.2–23.7, three
DP rounds at 14 × 14 with σ_p = 4.97 (10 % of ε = 8) 29.0–35.5, with σ_p = 10 31.8–36.8; three rounds
beat five and eight (more rounds, more noise per round), pooling 2 beat 1 and 4. DP ε = 8 runs
(R = 50, q = 0.1, prototype share 0.1, K = 1 000; 3 ConvNet-3 × 300 epochs, no augmentation) started from
these centres reached 80.9 % and 80.5 % against 79.4 % from the class means
(``benchmarks/results/dp_bank_fmnist_centres.md``).

References:
    Lloyd, "Least squares quantization in PCM", IEEE T-IT 1982.
    Su et al., "Differentially private k-means clustering", CODASPY 2016 (DP Lloyd iterations).
    Dong, Roth & Su, "Gaussian Differential Privacy", JRSS-B 2022.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from securedc.kmeans import KMEANS_AUTO_MIN_PER_CENTRE

__all__ = [
    "PROTOTYPE_ROUNDS",
    "SPLIT_RADIUS",
    "MIN_MEMBERS_PER_CENTRE",
    "MAX_CENTRE_NOISE",
    "centre_pool",
    "pooled_dim",
    "pooled",
    "round_sensitivity",
    "split_centres",
    "cluster_sums",
    "centres_from_sums",
    "choose_clusters",
    "upsampled",
]

#: DP rounds the prototype share buys when sub-class centres may be released (1 class-mean round +
#: 2 Lloyd rounds); the simulation above found 3 better than 5 or 8.
PROTOTYPE_ROUNDS = 3
#: length (in pooled, centred pixel units) of the random directions that split the class mean into
#: ``K`` starting centres; small against the spread of a class (distances of ~4–7 on Fashion-MNIST at 14 × 14).
SPLIT_RADIUS = 0.5
#: :func:`choose_clusters` splits a class only when every class has at least this many (released)
#: members per centre — the same floor as the non-private ``auto`` k-means init
#: (:data:`securedc.kmeans.KMEANS_AUTO_MIN_PER_CENTRE`).
MIN_MEMBERS_PER_CENTRE = KMEANS_AUTO_MIN_PER_CENTRE
#: :func:`choose_clusters` splits only when the noise std per pooled pixel of a centre of average
#: size, ``σ_r·Δ / (N̂_min / K)``, is at most this (pixels in [0, 1]). Fashion-MNIST at ε = 8 with a 0.1
#: share: 0.11; the simulation still improved on the class mean at 0.23 (σ_p = 10).
MAX_CENTRE_NOISE = 0.25


def centre_pool(image_shape: tuple[int, ...]) -> int:
    """Pooling factor of the Lloyd rounds: 2 when height and width are even and ≥ 16, else 1.

    Example:
        >>> centre_pool((1, 28, 28)), centre_pool((1, 8, 8)), centre_pool((3, 32, 32))
        (2, 1, 2)
    """
    h, w = int(image_shape[-2]), int(image_shape[-1])
    return 2 if h % 2 == 0 and w % 2 == 0 and min(h, w) >= 16 else 1


def pooled_dim(image_shape: tuple[int, ...]) -> int:
    """D', the length of an image's pooled vector at :func:`centre_pool`.

    Example:
        >>> pooled_dim((1, 28, 28)), pooled_dim((1, 8, 8))
        (196, 64)
    """
    pool = centre_pool(image_shape)
    return math.prod(image_shape) // (pool * pool)


def pooled(images: Tensor, pool: int) -> Tensor:
    """``[N, D']`` flattened ``pool × pool`` average-pooled images, centred on ½ (each value in [−½, ½])."""
    x = images.double()
    if pool > 1:
        x = F.avg_pool2d(x, pool)
    return x.flatten(1) - 0.5


def round_sensitivity(dim: int, *, with_counts: bool) -> tuple[float, float]:
    """``(Δ, w)`` of a release over ``dim`` centred values: ``B = ½·sqrt(dim)`` bounds a row's pixel part
    (nothing is clipped), ``w = B / 2`` is the count column (0 without counts), ``Δ = sqrt(B² + w²)``.

    Example:
        >>> [round(v, 3) for v in round_sensitivity(196, with_counts=True)]
        [7.826, 3.5]
    """
    bound = 0.5 * math.sqrt(dim)
    weight = bound / 2 if with_counts else 0.0
    return math.sqrt(bound**2 + weight**2), weight


def split_centres(mean: Tensor, clusters: int, directions: Tensor) -> Tensor:
    """``[K, D']`` starting centres: the pooled class mean plus ``K`` directions scaled to :data:`SPLIT_RADIUS`."""
    d = directions.view(clusters, -1).double()
    return mean.double().view(1, -1) + SPLIT_RADIUS * d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cluster_sums(points: Tensor, centres: Tensor, *, weight: float) -> Tensor:
    """SECRET ``[K, D' + 1]`` per-cluster sums of ``(x', w)`` with members assigned to their nearest centre."""
    k, dim = centres.shape
    assign = torch.cdist(points, centres).argmin(1)
    sums = torch.zeros(k, dim + 1, dtype=torch.float64)
    sums[:, :dim].index_add_(0, assign, points)
    sums[:, dim] = weight * torch.bincount(assign, minlength=k).double()
    return sums


def centres_from_sums(noisy: Tensor, previous: Tensor, *, weight: float, count_std: float) -> Tensor:
    """Post-processing of a Lloyd round: ``[K, D']`` centres ``sum / count`` per cluster.

    A cluster's size is its noisy count column ``/ w`` (cluster sizes are never public, so Lloyd
    rounds always release them, whatever the class counts). A cluster whose noisy size is below
    ``3·count_std`` (or 1) keeps its previous centre: noise divided by a near-zero count would throw
    the centre far off.
    """
    dim = noisy.shape[1] - 1
    counts = noisy[:, dim] / weight
    ok = counts > max(1.0, 3.0 * count_std)
    centres = noisy[:, :dim] / counts.clamp_min(1.0).unsqueeze(1)
    return torch.where(ok.unsqueeze(1), centres, previous.double())


def choose_clusters(ipc: int, *, min_count: float, noise_multiplier: float, dim: int) -> int:
    """``K`` of the Lloyd rounds: ``ipc`` when every class is large and a centre not mostly noise, else 1.

    Reads released or public numbers only: the smallest (released) class count, the round's noise
    multiplier and the pooled dimension. ``K = ipc`` when ``min_count ≥``
    :data:`MIN_MEMBERS_PER_CENTRE`·ipc and the noise std per pooled pixel of an average centre,
    ``σ_r·Δ·ipc / min_count``, is at most :data:`MAX_CENTRE_NOISE`.

    Example:
        >>> choose_clusters(10, min_count=6000, noise_multiplier=8.6, dim=196)
        10
        >>> choose_clusters(10, min_count=145, noise_multiplier=1.3, dim=64)
        1
    """
    if ipc < 2 or min_count < MIN_MEMBERS_PER_CENTRE * ipc:
        return 1
    delta, _ = round_sensitivity(dim, with_counts=True)
    return ipc if noise_multiplier * delta * ipc / min_count <= MAX_CENTRE_NOISE else 1


def upsampled(centres: Tensor, image_shape: tuple[int, ...], pool: int) -> Tensor:
    """``[K, *image_shape]`` images in [0, 1] from ``[K, D']`` pooled centred centres (bilinear upsampling)."""
    c, h, w = image_shape
    x = (centres.float() + 0.5).view(-1, c, h // pool, w // pool)
    if pool > 1:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.clamp(0, 1)
