"""Real-side throughput knobs: chunking, bf16 autocast, the pooling layer, the default lr."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from securedc.batching import auto_chunk, autocast_context, bf16_supported, resolve_precision
from securedc.condenser import Condenser, ProgressEvent
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError
from securedc.models import seeded_model
from securedc.models.pool import AvgPool2x2
from securedc.privacy.mechanism import ExactMechanism


def test_avg_pool_2x2_matches_avg_pool2d_forward_and_backward() -> None:
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 5, 8, 8), (2, 4, 9, 7), (1, 128, 32, 32)]:
        x = torch.randn(shape, generator=g, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        a, b = AvgPool2x2()(x), F.avg_pool2d(x2, 2)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        w = torch.randn(a.shape, generator=g)
        (a * w).sum().backward()
        (b * w).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad, atol=1e-6, rtol=1e-5)
    assert not list(AvgPool2x2().parameters()) and not list(AvgPool2x2().buffers())


def test_auto_chunk_is_cache_sized_on_cpu_and_unbounded_elsewhere() -> None:
    assert auto_chunk((1, 28, 28)) == 32
    assert auto_chunk((3, 32, 32)) == 24
    assert auto_chunk((1, 8, 8)) == 392
    assert auto_chunk((3, 512, 512)) == 8
    assert auto_chunk((1, 28, 28), device="meta") > 10**6


def test_precision_resolution_and_validation() -> None:
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")
    with pytest.raises(ConfigError, match="real_precision"):
        CondenseConfig(real_precision="fp8").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="real_chunk"):
        CondenseConfig(real_chunk=-1).validate()
    assert torch.is_autocast_enabled("cpu") is False
    with autocast_context("bf16"):
        assert torch.is_autocast_enabled("cpu")


def _real_stats(bundle, **kw) -> list[torch.Tensor]:
    """The statistics one step releases for the same sample under different settings."""
    cfg = CondenseConfig(ipc=2, iterations=1, **{"batch_real": 64, **kw})
    c = Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
    mech = c.make_mechanism(bundle.train_images, bundle.train_labels)
    assert isinstance(mech, ExactMechanism)
    captured: dict[str, list[torch.Tensor]] = {}
    release = mech.release

    def spy(vector_fn, **kwargs):
        captured["stats"] = release(vector_fn, **kwargs)
        return captured["stats"]

    mech.release = spy  # type: ignore[method-assign]
    c.fit(mech)
    return captured["stats"]


@pytest.mark.parametrize("discrepancy", ["mean-embedding", "mmd", "characteristic"])
def test_chunked_real_side_equals_one_batch(fmnist_small, discrepancy) -> None:
    """Chunk size changes float rounding only: same sample, same network, same statistic."""
    one = _real_stats(fmnist_small, discrepancy=discrepancy, real_chunk=10_000, real_precision="fp32")
    for chunk in (7, 32):
        many = _real_stats(fmnist_small, discrepancy=discrepancy, real_chunk=chunk, real_precision="fp32")
        for a, b in zip(one, many):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bf16_real_side_is_close_to_fp32(fmnist_small) -> None:
    # 16 images per class: bf16 is emulated (slow) on CPUs without native bf16 instructions
    fp32 = _real_stats(fmnist_small, real_precision="fp32", batch_real=16)[0]
    bf16 = _real_stats(fmnist_small, real_precision="bf16", batch_real=16)[0]
    assert bf16.dtype == torch.float32
    rel = float((fp32 - bf16).norm() / fp32.norm())
    assert 0 < rel < 0.02, rel  # bf16 really ran, and class means agree to ~1 %


def test_chunked_fit_is_deterministic_and_close_to_unchunked(digits) -> None:
    def run(**kw):
        cfg = CondenseConfig(ipc=2, iterations=5, batch_real=32, real_precision="fp32", **kw)
        c = Condenser(cfg, num_classes=10, image_shape=digits.image_shape, mean=digits.mean, std=digits.std)
        return c.fit(c.make_mechanism(digits.train_images, digits.train_labels)).images

    a, b = run(real_chunk=5), run(real_chunk=5)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, run(real_chunk=0), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("private", [False, True])
def test_chunked_synthetic_side_gives_the_same_loss_and_image_gradient(fmnist_small, private) -> None:
    """The synthetic side's forward and backward run chunk by chunk; only rounding may differ."""
    from securedc.terms import StepContext
    from securedc.terms.distribution import DistributionTerm

    x, y = fmnist_small.train_images[:30], fmnist_small.train_labels[:30]
    net = seeded_model("convnet", seed=3, in_channels=1, num_classes=10, image_size=(28, 28)).eval()
    term = DistributionTerm(private=private)
    real = term.discrepancy.reduce(term.discrepancy.real_vectors(net.embed(fmnist_small.train_images[30:90]).detach()),
                                   fmnist_small.train_labels[30:90], 10)
    results = []
    for chunk in (0, 7):
        ctx = StepContext(step=0, network=net, generator=torch.Generator().manual_seed(1), num_classes=10,
                          private=private, synthetic_images=x, synthetic_labels=y, model_factory=lambda s: net,
                          chunk=chunk)
        term.prepare(ctx)
        syn = x.clone().requires_grad_(True)
        loss = term.loss(ctx, real, syn, y)
        loss.backward()
        results.append((loss.detach(), syn.grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-3)
    assert float(results[0][1].abs().sum()) > 0


def test_default_lr_is_dm_lr_in_normalised_units() -> None:
    std = (0.353,)
    assert CondenseConfig(init="real").resolved_lr_img(std) == pytest.approx(0.353**2)
    assert CondenseConfig().resolved_lr_img(std) == pytest.approx(0.353**2)  # auto -> kmeans, normalised-unit rule
    assert CondenseConfig(init="noise").resolved_lr_img(std) == 1.0
    assert CondenseConfig(init="mix").resolved_lr_img(std) == pytest.approx(0.353**2)
    assert CondenseConfig(privacy=PrivacyConfig(epsilon=1.0)).resolved_lr_img(std) == 1.0  # DP -> noise init
    assert CondenseConfig(optimizer="adam").resolved_lr_img(std) == 0.01
    assert CondenseConfig(lr_img=0.3).resolved_lr_img(std) == 0.3
    assert CondenseConfig(init="real").resolved_lr_img((0.2, 0.3, 0.4)) == pytest.approx(0.09)


def test_progress_event_carries_current_images(digits) -> None:
    cfg = CondenseConfig(ipc=1, iterations=3, batch_real=8)
    c = Condenser(cfg, num_classes=10, image_shape=digits.image_shape, mean=digits.mean, std=digits.std)
    seen: list[ProgressEvent] = []
    snaps: list[torch.Tensor] = []

    def cb(ev: ProgressEvent) -> None:
        seen.append(ev)
        assert ev.images is not None and not ev.images.requires_grad
        snaps.append(ev.images.clone())

    r = c.fit(c.make_mechanism(digits.train_images, digits.train_labels), callback=cb)
    assert [e.step for e in seen] == [1, 2, 3]
    torch.testing.assert_close(snaps[-1].clamp(0, 1), r.images)
    assert not torch.equal(snaps[0], snaps[-1])


def test_convnet_uses_fast_pool_and_same_state_dict_keys() -> None:
    net = seeded_model("convnet", seed=0, in_channels=1, num_classes=10, image_size=(28, 28))
    assert sum(isinstance(m, AvgPool2x2) for m in net.modules()) == 3
    assert all("pool" not in k for k in net.state_dict())
