"""The (DP-)gradient-matching term: opacus per-sample gradients, DC distance, differentiability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError
from securedc.models import seeded_model
from securedc.terms import GradientTerm, StepContext, build_terms
from securedc.terms.gradient import gradient_match_distance


def _net(bundle, seed: int = 0):
    net = seeded_model(
        "convnet", seed=seed, in_channels=1, num_classes=10, image_size=(8, 8), mean=bundle.mean, std=bundle.std
    )
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _ctx(net, syn_x, syn_y) -> StepContext:
    return StepContext(
        step=0, network=net, generator=torch.Generator().manual_seed(0), num_classes=10, private=True,
        synthetic_images=syn_x.detach(), synthetic_labels=syn_y, model_factory=lambda s: net,
    )


def _reference_rows(net, params_of, x, y) -> torch.Tensor:
    """Per-example backward loop (reference only)."""
    rows = []
    for i in range(x.shape[0]):
        params = params_of(net)
        loss = F.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("layers", [("classifier",), ("",)])
def test_per_sample_gradients_equal_a_per_example_loop(digits, layers) -> None:
    net = _net(digits)
    x, y = digits.train_images[:6], digits.train_labels[:6]
    term = GradientTerm(layers=layers)
    ctx = _ctx(net, x, y)
    term.prepare(ctx)
    rows = term.real_vectors(ctx, x, y)
    assert rows.shape == (6, term.dim) and not rows.requires_grad

    import copy

    ref_net = copy.deepcopy(net)
    names = [n for n, p in ref_net.named_parameters() if p.ndim >= 2 and any(n.startswith(pre) for pre in layers)]
    for n, p in ref_net.named_parameters():
        p.requires_grad_(n in names)
    ref = _reference_rows(ref_net, lambda m: [dict(m.named_parameters())[n] for n in names], x, y)
    assert torch.allclose(rows, ref, atol=1e-5, rtol=1e-4)
    if layers == ("classifier",):
        assert term.dim == 10 * net.feature_dim
    # the step network itself is untouched (frozen, no grad_sample, no hooks)
    assert not any(p.requires_grad for p in net.parameters())
    assert not any(hasattr(p, "grad_sample") for p in term._module.parameters())
    assert not net._forward_hooks and not net.classifier._forward_hooks


def test_loss_is_zero_at_the_real_gradient_and_gradient_reaches_images(digits) -> None:
    net = _net(digits, seed=3)
    x, y = digits.train_images[:40], digits.train_labels[:40]
    term = GradientTerm()
    ctx = _ctx(net, x, y)
    term.prepare(ctx)
    rows = term.real_vectors(ctx, x, y)
    real_stat = torch.zeros(10, term.dim).index_add(0, y, rows) / torch.bincount(y, minlength=10).clamp_min(1)[:, None]
    # S = the real batch itself: its mean-loss gradient per class is the mean of per-sample gradients
    assert float(term.loss(ctx, real_stat, x, y)) == pytest.approx(0.0, abs=1e-3)

    syn = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    syn_y = torch.arange(10).repeat_interleave(2)
    loss = term.loss(ctx, real_stat, syn, syn_y)
    assert loss > 0.1
    (g,) = torch.autograd.grad(loss, syn)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_loss_decreases_under_optimisation(digits) -> None:
    net = _net(digits, seed=5)
    x, y = digits.train_images[:100], digits.train_labels[:100]
    term = GradientTerm()
    ctx = _ctx(net, x, y)
    term.prepare(ctx)
    rows = term.real_vectors(ctx, x, y)
    real_stat = torch.zeros(10, term.dim).index_add(0, y, rows) / torch.bincount(y, minlength=10).clamp_min(1)[:, None]
    syn = torch.full((10, 1, 8, 8), 0.5).add_(0.1 * torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    syn.requires_grad_(True)
    syn_y = torch.arange(10)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    losses = []
    for _ in range(12):
        loss = term.loss(ctx, real_stat, syn, syn_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-3:]) < 0.9 * losses[0], losses


def test_distance_is_dc_layerwise_cosine() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    # rows: cos = 1 and -1 -> (1-1) + (1+1) = 2
    assert float(gradient_match_distance([a], [b])) == pytest.approx(2.0, abs=1e-5)


def test_from_config_and_errors(digits) -> None:
    assert all(t.name != "gradient" for t in build_terms(CondenseConfig(grad_weight=0.0)))
    cfg = CondenseConfig(grad_weight=0.5, privacy=PrivacyConfig(epsilon=8.0, clip=2.0))
    (term,) = [t for t in build_terms(cfg) if t.name == "gradient"]
    assert term.weight == 0.5 and term.clip == 2.0 and term.describe()["layers"] == ["classifier"]
    with pytest.raises(ConfigError):
        GradientTerm(layers=())
    bad = GradientTerm(layers=("nope",))
    with pytest.raises(ConfigError, match="no matrix parameter"):
        bad.prepare(_ctx(_net(digits), digits.train_images[:2], digits.train_labels[:2]))
    empty = GradientTerm()
    ctx = _ctx(_net(digits), digits.train_images[:2], digits.train_labels[:2])
    empty.prepare(ctx)
    assert empty.real_vectors(ctx, digits.train_images[:0], digits.train_labels[:0]).shape == (0, empty.dim)
