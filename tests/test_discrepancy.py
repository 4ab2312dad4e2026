"""Contract tests for every registered discrepancy (torchattacks-style: one test, all names)."""

from __future__ import annotations

import itertools

import pytest
import torch

from securedc.discrepancy import create_discrepancy, list_discrepancies
from securedc.discrepancy.base import _REGISTRY, register_discrepancy
from securedc.errors import ConfigError
from securedc.functional import class_means
from securedc.models import seeded_model

NAMES = list_discrepancies()


def test_registered_names_are_pinned() -> None:
    assert set(NAMES) == {"mean-embedding", "mmd", "characteristic", "sliced-wasserstein"}


def test_unknown_and_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        create_discrepancy("wasserstein-42")
    with pytest.raises(ConfigError, match="registered twice"):
        register_discrepancy("mmd")(type("X", (), {}))
    assert set(_REGISTRY) == set(NAMES)


@pytest.fixture(scope="module")
def features(digits):
    net = seeded_model("convnet", seed=0, in_channels=1, num_classes=10, image_size=(8, 8), mean=digits.mean, std=digits.std)
    with torch.no_grad():
        f = net.embed(digits.train_images[:300])
    return f, digits.train_labels[:300]


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, features) -> None:
    f, y = features
    d = create_discrepancy(name)
    d.resample(feature_dim=f.shape[1], generator=torch.Generator().manual_seed(1))
    real = d.reduce(d.real_vectors(f), y, 10)
    # zero (up to float error) when S is the real batch itself
    assert float(d.loss(real, f, y)) == pytest.approx(0.0, abs=1e-4)
    # non-negative and positive for a different set; gradient reaches S
    syn = (f[:50] + torch.randn(50, f.shape[1]) * f.std()).requires_grad_(True)
    loss = d.loss(real, syn, y[:50])
    assert float(loss) > 0
    loss.backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0
    # same generator -> same vectors; different -> different (except parameter-free DM)
    d2 = create_discrepancy(name)
    d2.resample(feature_dim=f.shape[1], generator=torch.Generator().manual_seed(1))
    assert torch.equal(d2.real_vectors(f[:10]), d.real_vectors(f[:10]))
    d3 = create_discrepancy(name)
    d3.resample(feature_dim=f.shape[1], generator=torch.Generator().manual_seed(2))
    if name != "mean-embedding":
        assert not torch.equal(d3.real_vectors(f[:10]), d.real_vectors(f[:10]))


@pytest.mark.parametrize("name", [n for n in NAMES if create_discrepancy(n).private_ok])
def test_private_statistic_is_a_class_mean_of_bounded_vectors(name, features) -> None:
    """docs/design.md: the real side is the per-class mean of per-sample vectors."""
    f, y = features
    d = create_discrepancy(name, normalize=True)
    d.resample(feature_dim=f.shape[1], generator=torch.Generator().manual_seed(0))
    v = d.real_vectors(f)
    assert v.shape[0] == f.shape[0]
    assert torch.allclose(d.reduce(v, y, 10), class_means(v, y, 10))
    assert float(v.norm(dim=1).max()) <= 2.0 + 1e-4  # bounded -> clipping at C >= 2 is lossless


def test_sliced_wasserstein_refused_in_dp_mode() -> None:
    from securedc.config import CondenseConfig, PrivacyConfig
    from securedc.errors import PrivacyError
    from securedc.terms import build_terms

    with pytest.raises(PrivacyError, match="cannot be privatised"):
        build_terms(CondenseConfig(discrepancy="sliced-wasserstein", privacy=PrivacyConfig(epsilon=1.0)))


def test_mmd_matches_exact_kernel_double_loop() -> None:
    """RFF MMD² approximates the exact multi-bandwidth Gaussian-kernel MMD² (reference: double loop)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 6, generator=gen)
    b = torch.randn(30, 6, generator=gen) + 0.7
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    bws = (0.5, 1.0)
    d = create_discrepancy("mmd", bandwidths=bws, num_features=20000, scale=1.0, normalize=False)
    d.resample(feature_dim=6, generator=gen)

    def k(x, z):
        return sum(torch.exp(-((x - z) ** 2).sum() / (2 * bw**2)) for bw in bws) / len(bws)

    def mean_k(xs, zs):
        return sum(float(k(x, z)) for x, z in itertools.product(xs, zs)) / (len(xs) * len(zs))

    exact = mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b)
    zeros = torch.zeros(30, dtype=torch.int64)
    approx = float(d.loss(d.real_vectors(a).mean(0, keepdim=True), b, zeros))
    assert approx == pytest.approx(exact, rel=0.1, abs=2e-3)


@pytest.mark.parametrize("bundle", ["digits", "fmnist_small"])
def test_normalised_discrepancies_keep_the_raw_gradient_scale(bundle, request) -> None:
    """One image learning rate serves every discrepancy and resolution (gradient_scale).

    Without it, unit-normalised features shrank the image gradient ~1/||f||²: MMD's was 0.8× DM's
    on digits but 0.011× on Fashion-MNIST, so MMD/CF images barely moved there.
    """
    b = request.getfixturevalue(bundle)
    c, h, w = b.image_shape
    net = seeded_model("convnet", seed=3, in_channels=c, num_classes=10, image_size=(h, w), mean=b.mean, std=b.std)
    x, y = b.train_images[:600], b.train_labels[:600]
    syn0 = b.train_images[600:700]
    sy = b.train_labels[600:700]

    def grad_norm(d) -> float:
        d.resample(feature_dim=net.feature_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            real = d.reduce(d.real_vectors(net.embed(x)), y, 10)
        syn = syn0.clone().requires_grad_(True)
        d.loss(real, net.embed(syn), sy).backward()
        return float(syn.grad.norm())

    raw = grad_norm(create_discrepancy("mean-embedding"))
    assert grad_norm(create_discrepancy("mean-embedding", normalize=True)) == pytest.approx(raw, rel=0.1)
    for name in ("mmd", "characteristic"):
        assert 0.3 < grad_norm(create_discrepancy(name)) / raw < 5.0, name
    scale = create_discrepancy("mmd").gradient_scale(net.embed(syn0).detach(), sy, 10)
    assert scale.shape == (10,) and bool((scale > 1).all())
