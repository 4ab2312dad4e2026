"""DP class prototypes (phase 0), signal weights of noisy statistics, and the private utility gate."""

from __future__ import annotations

import math

import pytest
import torch

from securedc.audits import names as N
from securedc.audits.base import AuditResult
from securedc.audits.certify import certify, load_policy
from securedc.bank import config_for_bank
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, EvalConfig, PrivacyConfig
from securedc.discrepancy import create_discrepancy
from securedc.errors import ConfigError
from securedc.init import initial_images
from securedc.privacy.baseline import dp_prototype_baseline
from securedc.privacy.calibration import epsilon_of
from securedc.privacy.mechanism import GaussianMechanism


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 6, "releases": 3, "batch_real": 16, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


@pytest.mark.parametrize("with_counts", [True, False])
def test_prototype_sums_of_neighbours_differ_in_one_class_by_at_most_the_sensitivity(digits, with_counts) -> None:
    x, y = digits.train_images[:300], digits.train_labels[:300]
    full = GaussianMechanism(x, y, num_classes=10, clip_bounds=[1.0])
    for victim in (0, 17, 123):
        keep = torch.arange(300) != victim
        nb = GaussianMechanism(x[keep], y[keep], num_classes=10, clip_bounds=[1.0])
        a, sens = full.prototype_sums(with_counts=with_counts)
        b, _ = nb.prototype_sums(with_counts=with_counts)
        diff = (a - b).norm(dim=1)
        others = [c for c in range(10) if c != int(y[victim])]
        assert float(diff[others].max()) == 0.0
        assert 0 < float(diff[int(y[victim])]) <= sens + 1e-9
    # the worst case is reached by an all-white (or all-black) image with the count column
    x2 = torch.ones(2, 1, 8, 8)
    worst, sens = GaussianMechanism(x2, torch.tensor([0, 1]), num_classes=2, clip_bounds=[1.0]).prototype_sums(
        with_counts=with_counts)
    assert float(worst[0].norm()) == pytest.approx(sens)


def test_prototypes_are_accounted_and_estimate_the_class_means(digits) -> None:
    # batch_real 256: the rule's q is not capped, the bank is strong enough for no prototype top-up
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5), batch_real=256)
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=2)
    plan = c.plan
    # prototype_clusters auto: three rounds (class means, then sub-class centres or the class means again)
    assert [k for k, _, _ in mech.accesses] == ["prototypes"] * 3
    protos = plan.prototypes
    assert protos.shape == (10, 1, 8, 8) and bool((protos >= 0).all() and (protos <= 1).all())
    true = torch.stack([digits.train_images[digits.train_labels == k].mean(0) for k in range(10)])
    # noisy but close: nearest true class mean of each prototype is its own class
    dist = torch.cdist(protos.flatten(1), true.flatten(1))
    assert dist.argmin(dim=1).tolist() == list(range(10))
    res = c.fit(mech)
    p = res.privacy
    assert p["prototype_noise_multiplier"] == plan.prototype_noise_multiplier
    assert epsilon_of([tuple(h) for h in p["accountant_history"]], delta=1e-5) == pytest.approx(p["epsilon"], rel=1e-9)
    assert p["epsilon"] <= 8.0 and "prototypes" in p["mechanism"]
    # the released counts came with the prototypes: close to the truth
    counts = torch.bincount(digits.train_labels).double()
    assert torch.allclose(torch.tensor(plan.estimated_counts, dtype=torch.float64), counts, atol=40)


def test_private_init_starts_from_prototypes_plus_public_noise(digits) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=2)
    init = initial_images(c.config, mech, c.plan.prototypes, centres=c.plan.centres, classes=list(range(10)),
                          image_shape=(1, 8, 8), resuming=False)
    assert c.config.resolved_init == "prototype"
    per_class = init.view(10, 2, 1, 8, 8)
    resid = per_class - c.plan.prototypes[:, None]
    assert float(resid.abs().mean()) < 0.2  # public noise of std 0.2 (clamped) around the prototype
    assert not torch.equal(per_class[:, 0], per_class[:, 1])  # the noise makes the copies differ
    noise_cfg = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, prototype_share=0.0))
    assert noise_cfg.config.resolved_init == "noise"


def test_prototype_init_is_refused_without_privacy() -> None:
    with pytest.raises(ConfigError, match="init"):
        CondenseConfig(init="prototype").validate()
    with pytest.raises(ConfigError, match="prototype_share"):
        PrivacyConfig(epsilon=1.0, prototype_share=1.0).validate()


def test_bank_carries_prototypes_and_noise_scale(digits, bank_roundtrip) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=4))
    bank, meta = bank_roundtrip(c, res)
    assert torch.equal(bank.prototypes, res.bank.prototypes) and torch.equal(bank.noise_std, res.bank.noise_std)
    assert meta["prototypes"] is True
    cfg = config_for_bank(CondenseConfig(ipc=3, iterations=4, releases=3, batch_real=16), meta)
    assert cfg.resolved_init == "prototype"
    c2 = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
    out = c2.fit(None, bank=bank, bank_privacy=meta["privacy"])
    assert out.images.shape == (30, 1, 8, 8)


def test_signal_weights_estimate_the_signal_share() -> None:
    disc = create_discrepancy("mean-embedding")
    gen = torch.Generator().manual_seed(0)
    d, tau = 4096, 0.01
    signal = torch.randn(3, d, generator=gen) * torch.tensor([[0.0], [0.01], [0.1]])
    noisy = signal + tau * torch.randn(3, d, generator=gen)
    assert disc.signal_weights(noisy).tolist() == [1.0, 1.0, 1.0]  # exact statistics: no weighting
    disc.noise_std = torch.full((3,), tau)
    w = disc.signal_weights(noisy)
    assert float(w[0]) < 0.05 and abs(float(w[1]) - 0.5) < 0.05 and float(w[2]) > 0.98


def test_private_utility_gate_judges_against_the_dp_baseline() -> None:
    def result(cond, base, rnd=0.93):
        return {N.UTILITY: AuditResult(N.UTILITY, {N.CONDENSED_ACC: cond, N.RANDOM_ACC: rnd, N.DP_BASELINE_ACC: base})}

    pol = load_policy(require_mia=False, require_canary=False)
    good = certify(result(0.86, 0.87), pol, claimed_epsilon=8.0, adversarial=False)
    assert good.certified and "DP prototype baseline" in good.gates[0].reason and "margin 0.02" in good.gates[0].reason
    garbage = certify(result(0.149, 0.87), pol, claimed_epsilon=8.0, adversarial=False)
    assert not garbage.certified and garbage.gates[0].threshold == pytest.approx(0.85)
    missing = certify({N.UTILITY: AuditResult(N.UTILITY, {N.CONDENSED_ACC: 0.9, N.RANDOM_ACC: 0.9})}, pol,
                      claimed_epsilon=8.0, adversarial=False)
    assert not missing.certified and "not measured" in missing.gates[0].reason
    # the non-private rule can be asked for explicitly, and is the rule without a DP claim
    strict = load_policy(require_mia=False, require_canary=False, private_utility_baseline="random")
    assert not certify(result(0.86, 0.87), strict, claimed_epsilon=8.0, adversarial=False).certified
    assert not certify(result(0.86, 0.87), pol, claimed_epsilon=math.inf, adversarial=False).certified
    with pytest.raises(ConfigError, match="private_utility_baseline"):
        load_policy(private_utility_baseline="nothing")


def test_utility_audit_trains_the_dp_baseline_of_the_same_budget(digits) -> None:
    from securedc.audits.utility import run_utility_audit

    x, y = dp_prototype_baseline(digits.train_images, digits.train_labels, ipc=2, num_classes=10,
                                 epsilon=8.0, delta=1e-5)
    common = dict(num_classes=10, mean=digits.mean, std=digits.std, architectures=("convnet",),
                  eval_config=EvalConfig(models=1, epochs=30, dsa="none"))
    res = run_utility_audit(x, y, digits.train_images, digits.train_labels, digits.test_images, digits.test_labels,
                            epsilon=8.0, delta=1e-5, **common)
    assert 0.5 < res.metrics[N.DP_BASELINE_ACC] <= 1.0  # prototypes of a generous budget are informative
    assert any("DP baseline" in n for n in res.notes)
    plain = run_utility_audit(x, y, digits.train_images, digits.train_labels, digits.test_images, digits.test_labels,
                              **common)
    assert N.DP_BASELINE_ACC not in plain.metrics


def test_dp_baseline_draws_one_per_model(digits) -> None:
    """Model k of the DP baseline trains on draw k: the gate sees the baseline's expected accuracy,
    and the trained models are handed on for the robustness audit."""
    from securedc.audits.utility import run_utility_audit
    from securedc.evaluate import random_subset

    good = random_subset(digits.train_images, digits.train_labels, 3, seed=0)
    blank = (torch.zeros_like(good[0]), good[1])  # an uninformative draw
    store: dict = {}
    res = run_utility_audit(good[0], good[1], digits.train_images, digits.train_labels, digits.test_images,
                            digits.test_labels, num_classes=10, mean=digits.mean, std=digits.std,
                            architectures=("convnet",), eval_config=EvalConfig(models=2, epochs=30, dsa="none"),
                            epsilon=8.0, delta=1e-5, dp_baseline=[good, blank], models_out=store)
    accs = res.details["per_architecture"]["convnet"]["dp_baseline"]["accuracies"]
    assert accs[1] < 0.25 and accs[0] > accs[1] + 0.2
    assert res.metrics[N.DP_BASELINE_ACC] == pytest.approx(sum(accs) / 2)
    assert len(store[("dp_baseline", "convnet")]) == 2 and len(store[("condensed", "convnet")]) == 2
    assert any("2 draws" in n for n in res.notes)
