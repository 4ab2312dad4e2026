"""The prototype top-up: low bank SNR moves privacy from the statistic releases to the prototypes at no extra ε."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp

from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import PrivacyError
from securedc.privacy.calibration import (
    TOP_UP_SNR,
    bank_snr,
    calibrate_noise,
    epsilon_of,
    prototype_noise_multiplier,
    top_up_split,
)
from securedc.privacy.centres import PROTOTYPE_ROUNDS
from securedc.privacy.mechanism import GaussianMechanism


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 20, "releases": 20, "batch_real": 16, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


@pytest.mark.parametrize(("eps", "q", "releases"), [(1.0, 0.05, 100), (1.0, 1.0, 10), (8.0, 0.3, 100), (4.0, 0.01, 300)])
def test_top_up_and_noisier_releases_fit_under_the_planned_curve(eps, q, releases) -> None:
    sigma_p = prototype_noise_multiplier(epsilon=eps, share=0.8)
    sigma = calibrate_noise(target_epsilon=eps, target_delta=1e-5, sample_rate=q, steps=releases,
                            prefix=[(sigma_p, 1.0, 1)])
    s_bank, s_top = top_up_split(noise_multiplier=sigma, sample_rate=q, releases=releases)
    assert s_bank > sigma and s_top > 0
    orders = RDPAccountant.DEFAULT_ALPHAS
    planned = compute_rdp(q=q, noise_multiplier=sigma, steps=releases, orders=orders)
    actual = (compute_rdp(q=q, noise_multiplier=s_bank, steps=releases, orders=orders)
              + compute_rdp(q=1.0, noise_multiplier=s_top, steps=1, orders=orders))
    assert all(a <= p * (1 + 1e-9) for a, p in zip(actual, planned)), "pointwise under the plan at every order"
    plan_eps = epsilon_of([(sigma_p, 1.0, 1), (sigma, q, releases)], delta=1e-5)
    assert epsilon_of([(sigma_p, 1.0, 1), (s_top, 1.0, 1), (s_bank, q, releases)], delta=1e-5) <= plan_eps + 1e-9
    # and it is not wasteful: the combined prototypes are within 5 % of spending the whole ε on them
    combined = (sigma_p ** -2 + s_top ** -2) ** -0.5
    whole = calibrate_noise(target_epsilon=eps, target_delta=1e-5, sample_rate=1.0, steps=1)
    if q == 1.0:
        assert combined <= whole * 1.05


def test_top_up_split_refuses_a_bad_fraction() -> None:
    with pytest.raises(PrivacyError, match="fraction"):
        top_up_split(noise_multiplier=2.0, sample_rate=0.1, releases=10, fraction=1.0)


def test_bank_snr_grows_with_data_and_releases() -> None:
    base = dict(sample_rate=0.1, noise_multiplier=4.0, releases=50, min_count=100, feature_dim=128)
    assert bank_snr(**{**base, "min_count": 400}) == pytest.approx(4 * bank_snr(**base))
    assert bank_snr(**{**base, "releases": 200}) == pytest.approx(2 * bank_snr(**base))
    assert bank_snr(**{**base, "feature_dim": 512}) == pytest.approx(bank_snr(**base) / 2)


def test_combined_prototypes_are_closer_to_the_class_means(digits) -> None:
    x, y = digits.train_images, digits.train_labels
    true = torch.stack([x[y == k].mean(0) for k in range(10)])
    errs = []
    for seed in range(4):
        mech = GaussianMechanism(x, y, num_classes=10, clip_bounds=[1.0], noise_seed=seed)
        with pytest.raises(PrivacyError, match="needs a prototype release first"):
            mech.top_up_prototypes(noise_multiplier=5.0)
        first, _ = mech.release_prototypes(noise_multiplier=5.0, with_counts=True)
        both, counts = mech.top_up_prototypes(noise_multiplier=5.0)
        assert [k for k, _, _ in mech.accesses] == ["prototypes", "prototypes-top-up"]
        assert counts is not None and counts.shape == (10,)
        errs.append((float((first - true).pow(2).mean()), float((both - true).pow(2).mean())))
    # two equal releases average their noise: about half the squared error (clamping aside)
    assert sum(b for _, b in errs) < 0.7 * sum(a for a, _ in errs)


def test_low_snr_private_run_tops_up_and_the_accountant_composes_the_plan(digits) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=1.0, delta=1e-5))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=4)
    plan = c.plan
    assert plan.bank_snr is not None and plan.bank_snr < TOP_UP_SNR
    assert [k for k, _, _ in mech.accesses] == ["prototypes"] * PROTOTYPE_ROUNDS + ["prototypes-top-up"]
    assert plan.top_up_noise_multiplier is not None and plan.release_sigma > plan.noise_multiplier
    assert mech.noise_multiplier == plan.release_sigma and mech.accounted_noise_multiplier == plan.noise_multiplier
    res = c.fit(mech)
    p = res.privacy
    stats = [(s, q) for k, s, q in mech.accesses if k == "statistics"]
    assert stats == [(plan.release_sigma, plan.sample_rate)] * 20, "the releases add the larger noise"
    # the accountant composes the plan (which bounds both options), never the actual smaller curve
    assert p["accountant_history"] == [[plan.prototype_round_sigma, 1.0, PROTOTYPE_ROUNDS],
                                       [plan.noise_multiplier, plan.sample_rate, 20]]
    assert epsilon_of([tuple(h) for h in p["accountant_history"]], delta=1e-5) == pytest.approx(p["epsilon"], rel=1e-9)
    assert p["epsilon"] <= 1.0
    assert p["top_up_noise_multiplier"] == plan.top_up_noise_multiplier and "second prototype release" in p["mechanism"]
    # the mostly-noise releases get a smaller step: SNR' / TOP_UP_SNR of the default
    scale = plan.bank_snr * plan.noise_multiplier / plan.release_sigma / TOP_UP_SNR
    assert 0 < scale < 1 and res.lr_img == pytest.approx(c.lr_img * scale, rel=1e-12)


def test_a_re_condensation_from_a_noisy_bank_takes_the_same_small_step(digits, bank_roundtrip) -> None:
    from securedc.bank import config_for_bank

    c = _condenser(digits, privacy=PrivacyConfig(epsilon=1.0, delta=1e-5))
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=4))
    bank, meta = bank_roundtrip(c, res)
    cfg = config_for_bank(CondenseConfig(ipc=2, iterations=5, releases=20, batch_real=16), meta)
    again = Condenser(cfg, num_classes=10, image_shape=digits.image_shape, mean=digits.mean, std=digits.std)
    assert again.fit(None, bank=bank, bank_privacy=meta["privacy"]).lr_img == res.lr_img < again.lr_img
    given = Condenser(dataclasses.replace(cfg, lr_img=0.7), num_classes=10, image_shape=digits.image_shape,
                      mean=digits.mean, std=digits.std)
    assert given.fit(None, bank=bank, bank_privacy=meta["privacy"]).lr_img == 0.7, "a given lr_img is kept"


def test_high_snr_or_disabled_runs_do_not_top_up(digits) -> None:
    for privacy in (PrivacyConfig(epsilon=8.0, delta=1e-5),
                    PrivacyConfig(epsilon=1.0, delta=1e-5, prototype_top_up=False)):
        c = _condenser(digits, releases=100, iterations=100, privacy=privacy)
        mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=4)
        assert [k for k, _, _ in mech.accesses] == ["prototypes"] * PROTOTYPE_ROUNDS
        assert c.plan.top_up_noise_multiplier is None and mech.noise_multiplier == c.plan.noise_multiplier
        if privacy.prototype_top_up:
            assert c.plan.bank_snr >= TOP_UP_SNR
            assert c.run_lr() == c.lr_img, "a bank that carries the signal keeps the default step"


def test_a_topped_up_run_resumes_identically(digits, tmp_path, interrupt_at) -> None:
    from securedc.checkpoint import load_checkpoint

    kw = dict(privacy=PrivacyConfig(epsilon=1.0, delta=1e-5))
    full_c = _condenser(digits, **kw)
    full = full_c.fit(full_c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=11))
    assert full.privacy["top_up_noise_multiplier"] is not None
    ckpt = tmp_path / "run.ckpt.safetensors"
    first = _condenser(digits, checkpoint_every=10, **kw)
    interrupt_at(first, first.make_mechanism(digits.train_images, digits.train_labels, noise_seed=11), ckpt, 10)
    plan = load_checkpoint(ckpt)[1]["privacy_plan"]
    assert plan["release_noise_multiplier"] > plan["noise_multiplier"] and plan["top_up_noise_multiplier"]
    second = _condenser(digits, **kw)
    mech = second.make_mechanism(digits.train_images, digits.train_labels, resume_from=ckpt)
    assert mech.noise_multiplier == plan["release_noise_multiplier"]
    assert mech.accounted_noise_multiplier == plan["noise_multiplier"]
    resumed = second.fit(mech, resume_from=ckpt)
    assert torch.equal(resumed.images, full.images)
    assert resumed.privacy["epsilon"] == pytest.approx(full.privacy["epsilon"], rel=1e-12)


def test_a_topped_up_release_is_judged_against_its_own_prototypes(digits) -> None:
    """Paired DP baseline: the release's prototypes carry (almost) the whole budget, so the utility gate
    compares with that very draw; a high-SNR release (prototypes with 80 % of ε) keeps independent draws."""
    from securedc.audits.certify import Policy, certify
    from securedc.audits.context import AuditContext, AuditConfig
    from securedc.audits.utility_audit import UtilityAudit
    from securedc.config import EvalConfig
    from securedc.privacy.baseline import PAIRED_SIGMA_TOLERANCE, combined_prototype_sigma, paired_prototype_baseline

    x, y = digits.train_images, digits.train_labels
    low = _condenser(digits, privacy=PrivacyConfig(epsilon=1.0, delta=1e-5))
    res = low.fit(low.make_mechanism(x, y, noise_seed=3))
    protos = res.bank.prototypes
    whole = calibrate_noise(target_epsilon=1.0, target_delta=1e-5, sample_rate=1.0, steps=1)
    assert combined_prototype_sigma(res.privacy) <= (1 + PAIRED_SIGMA_TOLERANCE) * whole
    paired = paired_prototype_baseline(protos, res.privacy, ipc=2, epsilon=1.0, delta=1e-5)
    assert paired is not None and torch.equal(paired[0][::2], protos) and paired[1].tolist() == [k // 2 for k in range(20)]
    # without prototypes (a re-audit of a file) or with a fifth of the budget elsewhere: independent draws
    assert paired_prototype_baseline(None, res.privacy, ipc=2, epsilon=1.0, delta=1e-5) is None
    assert paired_prototype_baseline(protos, {"prototype_noise_multiplier": whole * 1.3}, ipc=2, epsilon=1.0,
                                     delta=1e-5) is None

    ev = EvalConfig(models=2, epochs=3)
    common = dict(images=res.images, labels=res.labels, members=(x, y), nonmembers=(x[:10], y[:10]),
                  test=(digits.test_images, digits.test_labels), num_classes=10, mean=digits.mean, std=digits.std,
                  config=low.config, eval_config=ev, settings=AuditConfig(architectures=("convnet",)))
    ctx = AuditContext(**common, prototypes=protos, privacy=res.privacy)
    result = UtilityAudit().measure(ctx)
    assert ctx.dp_baseline_kind == "paired" and result.details["dp_baseline_kind"] == "paired"
    assert len(ctx.dp_baselines()) == 1 and torch.equal(ctx.dp_baselines()[0][0], paired[0])
    gate = certify({"utility": result}, Policy(require_mia=False, require_canary=False), claimed_epsilon=1.0,
                   adversarial=False).gates[0]
    assert "paired" in gate.reason and gate.threshold == pytest.approx(result.metrics["dp_baseline_acc"] - 0.02)
    plain = AuditContext(**common)  # no prototypes given: independent full-budget draws, one per model
    assert len(plain.dp_baselines()) == 2 and plain.dp_baseline_kind == "independent"
