"""Adversarial-discrepancy term: torchattacks PGD on real digits, DP composition, CLI parsing, effect on robustness."""

from __future__ import annotations

import math

import pytest
import torch

from securedc.config import AdversarialConfig, CondenseConfig, EvalConfig, PrivacyConfig
from securedc.condenser import Condenser
from securedc.terms import StepContext, build_terms, list_terms
from securedc.terms.adversarial import AdversarialTerm, pgd_perturb


def _ctx(digits, *, step: int = 0, seed: int = 0) -> tuple[StepContext, Condenser]:
    cfg = CondenseConfig(ipc=2, iterations=1, batch_real=8, adversarial=AdversarialConfig(eps=0.1, steps=3))
    c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
    syn = digits.train_images[:20].clone()
    ctx = StepContext(step=step, network=c.make_network(seed), generator=torch.Generator().manual_seed(seed),
                      num_classes=10, private=False, synthetic_images=syn, synthetic_labels=digits.train_labels[:20],
                      model_factory=c.make_network)
    return ctx, c


def test_registered_after_distribution_and_enabled_by_eps():
    names = list_terms()
    assert names.index("distribution") < names.index("adversarial")
    assert [t.name for t in build_terms(CondenseConfig())] == ["distribution"]
    terms = build_terms(CondenseConfig(adversarial=AdversarialConfig(eps=8 / 255, weight=2.0)))
    assert [t.name for t in terms][-1] == "adversarial"
    adv = terms[-1]
    assert isinstance(adv, AdversarialTerm) and adv.weight == 2.0 and adv.alpha == pytest.approx(2 / 255)


def test_pgd_perturb_in_ball_deterministic_and_rng_neutral(digits):
    ctx, _ = _ctx(digits)
    x, y = digits.train_images[:32], digits.train_labels[:32]
    state = torch.get_rng_state()
    with torch.no_grad():  # the mechanism computes vectors without autograd
        a = pgd_perturb(ctx.network, x, y, eps=0.1, alpha=0.025, steps=3, seed=5)
    b = pgd_perturb(ctx.network, x, y, eps=0.1, alpha=0.025, steps=3, seed=5)
    c = pgd_perturb(ctx.network, x, y, eps=0.1, alpha=0.025, steps=3, seed=6)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - x).abs().max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().max() > 0.05
    loss = torch.nn.functional.cross_entropy
    assert loss(ctx.network(a), y) > loss(ctx.network(x), y)  # PGD raises the attacked loss


@pytest.mark.parametrize("mode", ["robust-features", "perturbed"])
def test_real_vectors_and_loss(digits, mode):
    ctx, _ = _ctx(digits)
    term = AdversarialTerm(eps=0.1, steps=3, mode=mode, extractor_epochs=2)
    term.prepare(ctx)
    x, y = digits.train_images[:40], digits.train_labels[:40]
    with torch.no_grad():
        v = term.real_vectors(ctx, x, y)
    clean = term.discrepancy.real_vectors(ctx.network.embed(x))
    assert v.shape == clean.shape and not v.requires_grad
    assert not torch.allclose(v, clean)
    stat = term.reducer()(v, y, 10)
    syn = ctx.synthetic_images.clone().requires_grad_(True)
    loss = term.loss(ctx, stat, syn, ctx.synthetic_labels)
    loss.backward()
    assert loss > 0 and syn.grad.abs().sum() > 0


@pytest.mark.parametrize("mode,attack_network", [("perturbed", "random"), ("perturbed", "synthetic"),
                                                 ("robust-features", "random")])
def test_vectors_do_not_depend_on_other_examples(digits, mode, attack_network):
    """Issue 12 finding 1: an example's adversarial vector is a function of that example (and public
    parameters) only. Real DSA-augmented digits, real torchattacks PGD: removing one example or permuting
    the batch leaves every other example's vector unchanged."""
    ctx, c = _ctx(digits)
    term = AdversarialTerm(eps=0.1, steps=5, mode=mode, attack_network=attack_network, retrain_every=5,
                           retrain_epochs=2, extractor_epochs=2, perturb_real=True)
    term.prepare(ctx)
    params = c.dsa.sample(10, generator=torch.Generator().manual_seed(1))
    x, y = digits.train_images[:120], digits.train_labels[:120]

    def vectors(idx):
        with torch.no_grad():
            return term.real_vectors(ctx, c.dsa(x[idx], params, y[idx]), y[idx])

    full = vectors(torch.arange(120))
    for victim in (0, 57):
        keep = torch.tensor([i for i in range(120) if i != victim])
        torch.testing.assert_close(vectors(keep), full[keep], atol=1e-5, rtol=0)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(vectors(perm), full[perm], atol=1e-5, rtol=0)
    # chunking (the condenser's real_chunk) does not matter either
    torch.testing.assert_close(torch.cat([vectors(torch.arange(0, 50)), vectors(torch.arange(50, 120))]), full,
                               atol=1e-5, rtol=0)


def test_keyed_pgd_start_is_per_example(digits):
    from securedc.terms.adversarial import keyed_uniform_start

    x = digits.train_images[:16]
    a = keyed_uniform_start(x, eps=0.1, seed=7)
    assert a.abs().max() <= 0.1 and a.std() > 0.03
    torch.testing.assert_close(keyed_uniform_start(x[5:9], eps=0.1, seed=7), a[5:9], atol=0, rtol=0)
    assert not torch.equal(keyed_uniform_start(x, eps=0.1, seed=8), a)


def test_minmax_and_synthetic_attack_network(digits):
    ctx, _ = _ctx(digits)
    term = AdversarialTerm(eps=0.1, steps=2, mode="perturbed", attack_network="synthetic", perturb_synthetic=True,
                           retrain_every=5, retrain_epochs=3)
    state = torch.get_rng_state()
    term.prepare(ctx)
    assert term._attacker(ctx) is not ctx.network and not term._attacker(ctx).training
    x, y = digits.train_images[:20], digits.train_labels[:20]
    v1 = term.real_vectors(ctx, x, y)
    ctx2, _ = _ctx(digits)
    term2 = AdversarialTerm(eps=0.1, steps=2, mode="perturbed", attack_network="synthetic", perturb_synthetic=True,
                            retrain_every=5, retrain_epochs=3)
    term2.prepare(ctx2)
    assert torch.equal(v1, term2.real_vectors(ctx2, x, y))
    syn = ctx.synthetic_images.clone().requires_grad_(True)
    term.loss(ctx, term.reducer()(v1, y, 10), syn, ctx.synthetic_labels).backward()
    assert syn.grad.abs().sum() > 0
    assert torch.equal(state, torch.get_rng_state())
    assert term.describe()["attack_network"] == "synthetic"


def test_condense_with_term_is_deterministic(digits):
    cfg = CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=AdversarialConfig(eps=0.1, steps=2))
    outs = []
    for _ in range(2):
        c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
        outs.append(c.fit(c.make_mechanism(digits.train_images, digits.train_labels)))
    assert torch.equal(outs[0].images, outs[1].images)
    assert [t["name"] for t in outs[0].terms] == ["distribution", "adversarial"]


def test_dp_composes_both_terms(digits):
    """--epsilon 8 --adv-eps 8/255: one mechanism, both clip bounds, sensitivity sqrt(C1^2 + C2^2)."""
    from opacus.accountants import RDPAccountant

    from securedc.api import condense

    clip = 0.5
    cfg = CondenseConfig(iterations=3, batch_real=8, privacy=PrivacyConfig(epsilon=8.0, clip=clip),
                         adversarial=AdversarialConfig(eps=8 / 255, steps=2))
    out = condense(digits, ipc=1, config=cfg, epsilon=8.0, adv_eps=8 / 255)
    priv = out.manifest()["privacy"]
    assert priv["private"] is True
    assert priv["clip_bounds"] == {"distribution": clip, "adversarial": clip}
    assert priv["sensitivity"] == pytest.approx(math.sqrt(clip**2 + clip**2))
    acc = RDPAccountant()
    # phase 0: the class-prototype release (it carries the counts; no separate count release)
    assert priv["count_noise_multiplier"] is None
    acc.step(noise_multiplier=priv["prototype_noise_multiplier"], sample_rate=1.0)
    for _ in range(priv["steps"]):
        acc.step(noise_multiplier=priv["noise_multiplier"], sample_rate=priv["sample_rate"])
    assert acc.get_epsilon(delta=priv["delta"]) == pytest.approx(priv["epsilon"], rel=1e-6)
    assert priv["epsilon"] <= 8.0 + 1e-6
    assert out.images.min() >= 0 and out.images.max() <= 1


@pytest.mark.parametrize("value", ["8/0", "-1", "abc"])
def test_cli_rejects_bad_adv_eps(tmp_path, cli, value):
    out = tmp_path / "out"
    proc = cli("condense", "--iterations", "1", "--eval-models", "0", "--out", str(out), f"--adv-eps={value}")
    assert proc.exit_code == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "adv-eps" in lines[0], proc.stderr
    assert not out.exists() or not any(out.iterdir())


def _pgd_accuracy(digits, adv: AdversarialConfig, seeds: tuple[int, ...]) -> float:
    """Mean PGD-20 accuracy (eps 0.1) of fresh models trained on S condensed with ``adv``."""
    from securedc.evaluate import accuracy, train_model

    eval_cfg = EvalConfig(models=2, epochs=100, dsa="none")
    scores = []
    for seed in seeds:
        cfg = CondenseConfig(ipc=10, iterations=40, batch_real=32, seed=seed, adversarial=adv)
        c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
        r = c.fit(c.make_mechanism(digits.train_images, digits.train_labels))
        for k in range(eval_cfg.models):
            m = train_model(r.images, r.labels, num_classes=10, mean=digits.mean, std=digits.std,
                            config=eval_cfg, seed=100 * seed + k)
            xa = pgd_perturb(m, digits.test_images, digits.test_labels, eps=0.1, alpha=0.025, steps=20, seed=0)
            scores.append(accuracy(m, xa, digits.test_labels))
    return sum(scores) / len(scores)


@pytest.mark.slow
def test_term_changes_pgd_accuracy_on_digits(digits):
    """The term changes the result. Measured on digits (2026-12-01, robust-feature matching under the
    fast-AT extractor): a strong term (eps 0.3, weight 10) gives 0.554 vs plain DM's 0.522 (seed 0).
    (On 2026-11-28 the then-default perturbed variant lowered it, 0.29 vs 0.53.)"""
    plain = _pgd_accuracy(digits, AdversarialConfig(), (0,))
    strong = _pgd_accuracy(digits, AdversarialConfig(eps=0.3, steps=3, alpha=0.15, weight=10.0), (0,))
    assert abs(strong - plain) > 0.01, (plain, strong)


@pytest.mark.slow
def test_term_raises_pgd_accuracy_on_digits(digits):
    """Issue 14's goal: higher PGD accuracy of standard training on S with the term (mean over 4 seeds).

    Measured 2026-12-01 (PGD-20 @ 0.1, 2 models per seed): plain DM 0.522 / 0.542 / 0.506 / 0.511,
    robust-feature matching under the fast-AT extractor 0.556 / 0.544 / 0.530 / 0.536 (mean +2.1
    points; with a PGD-3 extractor +1.6). This test was a strict xfail before robust-feature matching;
    the variants tried earlier, against the plain DM of that time (0.554), are listed in docs/audits.md
    (Robustness). Passed again 2026-12-02 (166 s on the 2-core host)."""
    seeds = (0, 1, 2, 3)
    plain = _pgd_accuracy(digits, AdversarialConfig(), seeds)
    adv = _pgd_accuracy(digits, AdversarialConfig(eps=0.15, steps=3, attack_network="synthetic"), seeds)
    assert adv > plain + 0.01, (plain, adv)


@pytest.mark.parametrize("mode", ["robust-features", "perturbed"])
def test_dp_mode_centres_on_public_noise_features(digits, mode):
    """DP mode: the term's features are centred on its embedder's mean feature of public noise images
    (the distribution term's public_center), a function of the release's public seed only: two runs of
    prepare from the same context give the same centre, a non-private term has none."""
    from securedc.terms.distribution import public_center

    def prepared(private: bool) -> tuple[AdversarialTerm, StepContext]:
        ctx, _ = _ctx(digits, seed=3)
        term = AdversarialTerm(eps=0.1, steps=2, mode=mode, private=private, extractor_epochs=1)
        term.prepare(ctx)
        return term, ctx

    a, ctx = prepared(True)
    b, _ = prepared(True)
    assert a.discrepancy.center is not None and torch.equal(a.discrepancy.center, b.discrepancy.center)
    assert prepared(False)[0].discrepancy.center is None
    # the centre is the embedder's public-noise mean, drawn from the term's own keyed generator
    local = torch.Generator().manual_seed(a._seed)
    a.discrepancy.resample(feature_dim=a._embedder(ctx).feature_dim, generator=local)
    expected = public_center(a._embedder(ctx), (1, 8, 8), generator=local)
    torch.testing.assert_close(a.discrepancy.center, expected)
    x, y = digits.train_images[:30], digits.train_labels[:30]
    with torch.no_grad():
        v = a.real_vectors(ctx, x, y)
    assert torch.allclose(v.norm(dim=1), torch.ones(30), atol=1e-4)  # normalised after centring
