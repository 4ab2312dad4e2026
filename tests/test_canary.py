"""One-run canary audit (Steinke, Nasr & Jagielski NeurIPS 2023) on real digits condensations."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from securedc.audits.canary import (
    CANARY_KINDS,
    audit_p_value,
    epsilon_lower_bound,
    make_canaries,
    run_canary_audit,
)
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError


@pytest.fixture(autouse=True)
def _one_thread(_seed_and_threads: None) -> None:
    torch.set_num_threads(1)  # shared CI machine: avoid oversubscription stalls


def _closed_form_perfect(r: int, confidence: float = 0.95) -> float:
    """δ = 0, all r guesses correct: P[Bin(r, q) = r] = q^r = 1 - confidence → ε = logit(q)."""
    q = (1 - confidence) ** (1 / r)
    return math.log(q / (1 - q))


# ---------------------------------------------------------------- the bound
def test_bound_is_zero_at_chance() -> None:
    for r in (10, 50, 100):
        assert epsilon_lower_bound(r, r // 2, num_canaries=100, delta=1e-5) == 0.0
        assert epsilon_lower_bound(r, 0, num_canaries=100, delta=0.0) == 0.0


def test_bound_increases_with_correct_guesses() -> None:
    values = [epsilon_lower_bound(100, v, num_canaries=200, delta=1e-5) for v in range(50, 101, 5)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] > 3.0


@pytest.mark.parametrize("r", [10, 20, 100, 500])
def test_perfect_guesses_match_closed_form_and_cap(r: int) -> None:
    cap = _closed_form_perfect(r)
    assert epsilon_lower_bound(r, r, num_canaries=r, delta=0.0) == pytest.approx(cap, abs=1e-4)
    # δ > 0 only loosens the bound; no count of correct guesses exceeds the perfect-guess cap
    assert epsilon_lower_bound(r, r, num_canaries=r, delta=1e-3) <= cap + 1e-6
    for v in range(0, r + 1, max(1, r // 10)):
        assert epsilon_lower_bound(r, v, num_canaries=r, delta=0.0) <= cap + 1e-6


def test_known_values_and_confidence() -> None:
    # 100/100 correct, δ = 0, 95 %: logit(0.05^(1/100)) = 3.4930 (derived by hand)
    assert epsilon_lower_bound(100, 100, num_canaries=100, delta=0.0) == pytest.approx(3.4930, abs=1e-3)
    # 20/20 at 95 %: logit(0.05^(1/20)) = 1.8227
    assert epsilon_lower_bound(20, 20, num_canaries=100, delta=0.0) == pytest.approx(1.8227, abs=1e-3)
    # higher confidence → smaller bound
    assert epsilon_lower_bound(100, 90, num_canaries=100, delta=1e-5, confidence=0.99) < epsilon_lower_bound(
        100, 90, num_canaries=100, delta=1e-5, confidence=0.95
    )
    # larger δ → smaller (or equal) bound
    assert epsilon_lower_bound(100, 90, num_canaries=1000, delta=1e-3) <= epsilon_lower_bound(
        100, 90, num_canaries=1000, delta=0.0
    )


def test_p_value_is_a_valid_probability_and_decreasing_in_epsilon() -> None:
    ps = [audit_p_value(100, 50, 40, eps, 1e-5) for eps in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b >= a for a, b in zip(ps, ps[1:]))  # more ε → more correct guesses are plausible
    with pytest.raises(ConfigError):
        audit_p_value(10, 20, 5, 1.0, 0.0)


def test_bound_validates() -> None:
    with pytest.raises(ConfigError):
        epsilon_lower_bound(10, 5, num_canaries=100, delta=0.0, confidence=1.5)
    with pytest.raises(ConfigError):
        epsilon_lower_bound(10, 5, num_canaries=100, delta=2.0)


# ---------------------------------------------------------------- canaries
@pytest.mark.parametrize("kind", CANARY_KINDS)
def test_make_canaries(digits, kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, y, src = make_canaries(digits.train_images, digits.train_labels, num_canaries=30, num_classes=10, kind=kind,
                              generator=g)
    assert x.shape == (30, 1, 8, 8) and y.shape == (30,) and x.min() >= 0 and x.max() <= 1
    if kind != "pattern":
        assert (y != digits.train_labels[src]).all()  # canary labels are always wrong
    with pytest.raises(ConfigError):
        make_canaries(digits.train_images, digits.train_labels, num_canaries=3, num_classes=10, kind="bogus",
                      generator=g)


def _condense_fn(digits, *, epsilon: float, delta: float):
    base = CondenseConfig(ipc=10, iterations=20, batch_real=16, init="noise" if math.isfinite(epsilon) else "real",
                          privacy=PrivacyConfig(epsilon=epsilon, delta=delta)).validate()

    def fn(x: torch.Tensor, y: torch.Tensor, seed: int):
        cfg = dataclasses.replace(base, seed=seed)
        cond = Condenser(cfg, num_classes=10, image_shape=tuple(x.shape[1:]), mean=digits.mean, std=digits.std)
        # a fixed noise seed keeps the DP test reproducible (never do this for a real release)
        mech = cond.make_mechanism(x, y, noise_seed=seed + 1) if cfg.privacy.private else cond.make_mechanism(x, y)
        res = cond.fit(mech)
        return res.images, res.labels

    return fn


def test_nonprivate_real_init_leaks(digits) -> None:
    # Real-init DM copies ipc images per class; on a 10-per-class training subset an included
    # canary is copied with probability ~2/3, so the audit must see leakage (ε̂ > 0).
    res = run_canary_audit(digits.train_images, digits.train_labels, condense_fn=_condense_fn(digits, epsilon=math.inf,
                           delta=1e-4), num_classes=10, mean=digits.mean, std=digits.std, claimed_epsilon=math.inf,
                           delta=1e-4, num_canaries=100, seed=0, max_train=100)
    assert res.name == "canary"
    assert res.metrics["epsilon_lower_bound"] > 0.5
    assert res.passed is True  # no claim (ε = ∞) to violate
    assert res.metrics["correct"] > res.metrics["guesses"] * 0.8
    assert res.to_dict()["metrics"]["claimed_epsilon"] == "inf"
    # the same evidence against a false claim of ε = 0.1 fails the audit
    false_claim = run_canary_audit(digits.train_images, digits.train_labels,
                                   condense_fn=_condense_fn(digits, epsilon=math.inf, delta=1e-4), num_classes=10,
                                   mean=digits.mean, std=digits.std, claimed_epsilon=0.1, delta=1e-4,
                                   num_canaries=100, seed=0, max_train=100)
    assert false_claim.metrics["epsilon_lower_bound"] == res.metrics["epsilon_lower_bound"]  # seeded
    assert false_claim.passed is False and any("FAILED" in n for n in false_claim.notes)


def test_dp_run_stays_below_claim(digits) -> None:
    eps, delta = 1.0, 1e-4
    res = run_canary_audit(digits.train_images, digits.train_labels, condense_fn=_condense_fn(digits, epsilon=eps,
                           delta=delta), num_classes=10, mean=digits.mean, std=digits.std, claimed_epsilon=eps,
                           delta=delta, num_canaries=100, seed=0, max_train=100)
    assert res.metrics["epsilon_lower_bound"] <= eps
    assert res.passed is True
    assert res.metrics["num_canaries"] == 100 and res.metrics["guesses"] == 20


def test_canary_audit_validates(digits) -> None:
    fn = _condense_fn(digits, epsilon=math.inf, delta=1e-4)
    kw = dict(condense_fn=fn, num_classes=10, mean=digits.mean, std=digits.std, claimed_epsilon=1.0, delta=1e-5)
    with pytest.raises(ConfigError):
        run_canary_audit(digits.train_images, digits.train_labels, canary_kind="weird", **kw)
    with pytest.raises(ConfigError):
        run_canary_audit(digits.train_images, digits.train_labels, num_canaries=10, guesses=11, **kw)


def test_bound_is_valid_for_randomized_response() -> None:
    """Guesses against an exactly ε-DP mechanism (randomized response, the worst case of the
    theorem) are correct with probability e^ε/(1+e^ε); ε̂ must exceed ε in at most ~5 % of runs."""
    import numpy as np

    eps, r, trials = 1.0, 200, 200
    rng = np.random.default_rng(0)
    correct = rng.binomial(r, math.exp(eps) / (1 + math.exp(eps)), size=trials)
    bounds = [epsilon_lower_bound(r, int(v), num_canaries=r, delta=0.0) for v in correct]
    assert sum(b > eps for b in bounds) <= 0.05 * trials + 5
    assert np.mean(bounds) > 0.4  # and the audit is not vacuous
