"""k-means centres and the ``kmeans`` initialisation of S (non-private only)."""

from __future__ import annotations

import pytest
import torch

from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError, PrivacyError
from securedc.kmeans import KMEANS_AUTO_MIN_PER_CENTRE, auto_real_init, kmeans_centres


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_recovers_separated_clusters_and_is_deterministic() -> None:
    means = torch.tensor([[0.0] * 5, [10.0] * 5, [-10.0] * 5])
    x = torch.cat([m + 0.1 * torch.randn(40, 5, generator=_gen(i)) for i, m in enumerate(means)])
    centres = kmeans_centres(x, 3, generator=_gen(1))
    order = centres[:, 0].argsort()
    torch.testing.assert_close(centres[order], means[means[:, 0].argsort()], atol=0.1, rtol=0)
    assert torch.equal(centres, kmeans_centres(x, 3, generator=_gen(1)))


def test_every_centre_averages_at_least_min_members() -> None:
    """An outlier k-means++ picks as its own cluster is not copied: it is averaged with its nearest points."""
    x = torch.cat([torch.rand(30, 4, generator=_gen(2)), torch.full((1, 4), 50.0)])
    singleton = kmeans_centres(x, 2, generator=_gen(3), min_members=1)
    assert (torch.cdist(singleton, x).min(dim=1).values < 1e-6).any(), "without the floor the outlier is a centre"
    centres = kmeans_centres(x, 2, generator=_gen(3), min_members=4)
    assert (torch.cdist(centres, x).min(dim=1).values > 1e-3).all(), "no centre may equal a single point"
    assert centres.max() < 50.0 and centres.max() > 10.0, "the outlier's centre is the mean of it and 3 neighbours"


def test_shapes_subset_and_bad_k() -> None:
    x = torch.rand(300, 1, 3, 3, generator=_gen(4))
    assert kmeans_centres(x, 7, generator=_gen(5), max_points=50).shape == (7, 1, 3, 3)
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans_centres(x[:3], 4, generator=_gen(0))


def _init(bundle, **kw) -> torch.Tensor:
    cfg = CondenseConfig(**{"ipc": 5, "iterations": 0, **kw})
    c = Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
    return c.fit(c.make_mechanism(bundle.train_images, bundle.train_labels)).images


def _quantisation_error(init: torch.Tensor, bundle, ipc: int) -> float:
    """Mean squared distance of each real image to the nearest initial image of its class."""
    total = 0.0
    for c in range(bundle.num_classes):
        real = bundle.train_images[bundle.train_labels == c].flatten(1)
        total += float(torch.cdist(real, init[c * ipc:(c + 1) * ipc].flatten(1)).min(dim=1).values.square().sum())
    return total / len(bundle.train_labels)


def test_kmeans_init_copies_no_member_and_fits_the_classes_better_than_mix(digits) -> None:
    km = _init(digits, init="kmeans")
    mix = _init(digits, init="mix")
    assert km.shape == (50, *digits.image_shape)
    nearest = torch.cdist(km.flatten(1), digits.train_images.flatten(1)).min(dim=1).values
    assert (nearest > 1e-3).all(), "a k-means centre must not be a training image"
    assert _quantisation_error(km, digits, 5) < 0.8 * _quantisation_error(mix, digits, 5)


def test_auto_uses_kmeans_only_on_large_classes(digits) -> None:
    """Small clusters expose their members (digits: the default audit's MIA gates failed), so ``auto``
    falls back to ``mix`` below the per-centre floor and uses k-means above it."""
    assert CondenseConfig().resolved_init == "kmeans"
    assert auto_real_init(KMEANS_AUTO_MIN_PER_CENTRE * 10, 10) == "kmeans"
    assert auto_real_init(KMEANS_AUTO_MIN_PER_CENTRE * 10 - 1, 10) == "mix"
    assert torch.equal(_init(digits), _init(digits, init="mix")), "digits (131-ish per class, IPC 5) falls back to mix"
    assert torch.equal(_init(digits, ipc=1), _init(digits, ipc=1, init="kmeans")), "IPC 1: one centre per class"


def test_kmeans_init_is_refused_in_dp_mode_and_from_a_bank() -> None:
    with pytest.raises(PrivacyError, match="--init kmeans"):
        CondenseConfig(init="kmeans", privacy=PrivacyConfig(epsilon=1)).validate()
    from securedc.bank import config_for_bank

    with pytest.raises(ConfigError, match="cannot initialise from real images"):
        config_for_bank(CondenseConfig(init="kmeans"), {"privacy": {"private": False}})
