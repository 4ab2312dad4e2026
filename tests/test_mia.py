"""Membership-inference audit: metrics vs scikit-learn, attacks on real digits releases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from securedc.audits.base import AuditResult
from securedc.audits.mia import (
    attack_metrics,
    balanced_accuracy,
    bootstrap_ci,
    create_attack,
    downsample_roc,
    list_attacks,
    roc_auc,
    run_mia,
    tpr_at_fpr,
)
from securedc.audits.mia.lira import lira_scores
from securedc.audits.mia.rmia import rmia_scores
from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError
from securedc.evaluate import random_subset

FAST_EVAL = EvalConfig(models=1, epochs=30, dsa="none", model="mlp")


@pytest.fixture(autouse=True)
def _one_thread(_seed_and_threads: None) -> None:
    # the CI machine is shared; one thread avoids oversubscription stalls
    torch.set_num_threads(1)


def _scores(n: int = 400, shift: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = np.arange(n) < n // 2
    return rng.normal(size=n) + shift * m, m


# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0])
def test_auc_matches_sklearn(shift: float) -> None:
    s, m = _scores(shift=shift)
    assert roc_auc(s, m) == pytest.approx(roc_auc_score(m, s), abs=1e-12)


def test_tpr_at_fpr_on_constructed_scores() -> None:
    # 100 non-members with scores 0..99, members: 10 above all non-members, 90 below all.
    neg = np.arange(100, dtype=float)
    pos = np.concatenate([np.full(10, 1000.0), np.full(90, -1.0)])
    s, m = np.concatenate([pos, neg]), np.concatenate([np.ones(100, bool), np.zeros(100, bool)])
    assert tpr_at_fpr(s, m, 0.0) == pytest.approx(0.10)
    assert tpr_at_fpr(s, m, 0.001) == pytest.approx(0.10)  # below 1/100 resolution
    assert tpr_at_fpr(s, m, 0.01) == pytest.approx(0.10)
    assert tpr_at_fpr(s, m, 1.0) == pytest.approx(1.0)
    # versus a direct reading of sklearn's curve
    f, t, _ = roc_curve(m, s)
    for target in (0.05, 0.2, 0.5):
        assert tpr_at_fpr(s, m, target) == pytest.approx(t[f <= target].max())


def test_balanced_accuracy_brute_force() -> None:
    s, m = _scores(n=200, shift=1.0, seed=3)
    best = max(((s >= th)[m].mean() + (s < th)[~m].mean()) / 2 for th in np.concatenate([s, [np.inf]]))
    assert balanced_accuracy(s, m) == pytest.approx(best)
    assert balanced_accuracy([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0


def test_bootstrap_ci_contains_point_and_is_seeded() -> None:
    s, m = _scores(shift=0.7)
    ci = bootstrap_ci(s, m, resamples=200, seed=1)
    assert ci["auc"][0] <= roc_auc(s, m) <= ci["auc"][1]
    assert ci["auc"][1] - ci["auc"][0] < 0.2
    assert ci == bootstrap_ci(s, m, resamples=200, seed=1)
    full = attack_metrics(s, m, resamples=100, seed=0)
    for key in ("auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
        assert full[f"{key}_ci_low"] <= full[key] <= full[f"{key}_ci_high"]


def test_downsampled_roc_is_monotone_and_short() -> None:
    s, m = _scores(n=3000, shift=1.0)
    roc = downsample_roc(s, m, points=200)
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert len(fpr) <= 200 and fpr[0] == 0.0 and fpr[-1] == pytest.approx(1.0) and tpr[-1] == 1.0
    assert np.all(np.diff(fpr) > 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(s, m), abs=0.02)


def test_metrics_reject_one_class() -> None:
    with pytest.raises(ValueError):
        roc_auc([1.0, 2.0], [1, 1])


# ---------------------------------------------------------------- pure attack maths
def test_lira_scores_rank_members_first() -> None:
    g = torch.Generator().manual_seed(0)
    n, k = 200, 4
    member = torch.arange(n) < n // 2
    in_mask = torch.zeros(k, n, dtype=torch.bool)
    in_mask[0::2, : n // 2] = True
    in_mask[1::2, n // 2 :] = True
    base = torch.randn(n, generator=g)
    phi_shadow = base + 2.0 * in_mask.float() + 0.1 * torch.randn(k, n, generator=g)
    phi_obs = base + 2.0 * member.float()
    out = lira_scores(phi_obs, phi_shadow, in_mask)
    for name in ("lira-online", "lira-offline"):
        assert torch.isfinite(out[name]).all()
        assert roc_auc(out[name].numpy(), member.numpy()) > 0.95


def test_rmia_scores_rank_members_first() -> None:
    g = torch.Generator().manual_seed(0)
    n, k, pop = 100, 2, 300
    member = torch.arange(n) < n // 2
    ref = torch.rand(k, n, generator=g) * 0.5
    p_t = ref.mean(0) + 0.4 * member.float()
    p_z_ref = torch.rand(k, pop, generator=g) * 0.5
    p_z = p_z_ref.mean(0)
    score = rmia_scores(p_t, ref, torch.ones(k, n, dtype=torch.bool), p_z, p_z_ref)
    assert roc_auc(score.numpy(), member.numpy()) > 0.95
    assert ((score >= 0) & (score <= 1)).all()


def test_registry() -> None:
    assert {"loss", "neighbour", "lira", "rmia"} <= set(list_attacks())
    assert create_attack("LIRA").name == "lira"
    with pytest.raises(ConfigError, match="choose one of"):
        create_attack("nope")


# ---------------------------------------------------------------- real releases
def _split(digits, n_members: int = 200, n_non: int = 300):
    g = torch.Generator().manual_seed(123)
    perm = torch.randperm(digits.train_labels.numel(), generator=g)
    x, y = digits.train_images, digits.train_labels
    mi, ni = perm[:n_members], perm[n_members : n_members + n_non]
    return (x[mi], y[mi]), (x[ni], y[ni])


def test_leaky_release_is_caught(digits) -> None:
    members, nonmembers = _split(digits)
    # "condensed set" = the member images themselves (a copying condenser)
    res = run_mia(members[0], members[1], members=members, nonmembers=nonmembers, num_classes=10,
                  mean=digits.mean, std=digits.std, attacks=("loss", "neighbour"), eval_config=FAST_EVAL,
                  max_targets=200, bootstrap=100)
    assert isinstance(res, AuditResult) and res.name == "mia" and res.passed is None
    attacks = res.details["attacks"]
    assert set(attacks) == {"loss", "neighbour-pixel", "neighbour-feature"}
    assert attacks["neighbour-pixel"]["auc"] > 0.99
    assert attacks["neighbour-pixel"]["tpr_at_1pct_fpr"] > 0.9
    assert res.metrics["auc"] > 0.8 and res.metrics["tpr_at_1pct_fpr"] > 0.5
    assert res.details["worst_attack"] in attacks
    assert res.details["num_members"] == 200 and res.details["num_nonmembers"] == 200
    assert any("Threat model" in n for n in res.notes) and any("skipped" not in n for n in res.notes)
    assert len(attacks["loss"]["roc"]["fpr"]) <= 200
    assert res.to_dict()["metrics"]["auc"] == res.metrics["auc"]


def test_noise_release_is_at_chance(digits) -> None:
    members, nonmembers = _split(digits, n_members=500, n_non=500)
    g = torch.Generator().manual_seed(5)
    noise = torch.rand(100, 1, 8, 8, generator=g)
    labels = torch.arange(10).repeat_interleave(10)
    res = run_mia(noise, labels, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                  std=digits.std, attacks=("loss", "neighbour"), eval_config=FAST_EVAL, max_targets=500,
                  bootstrap=200, seed=1)
    for name, a in res.details["attacks"].items():
        assert abs(a["auc"] - 0.5) < 0.08, (name, a["auc"])
        assert a["tpr_at_1pct_fpr"] < 0.1, name
    worst = res.details["attacks"][res.details["worst_attack"]]
    assert worst["auc_ci_low"] <= 0.5 <= worst["auc_ci_high"]
    assert res.metrics["auc"] == worst["auc"]
    assert not res.details["skipped"]  # lira/rmia were not requested


def test_shadow_attacks_run_and_skip(digits) -> None:
    members, nonmembers = _split(digits, n_members=600, n_non=400)

    def shadow_fn(x: torch.Tensor, y: torch.Tensor, seed: int):  # a leaky "condenser": random real subset
        return random_subset(x, y, 10, seed=seed)

    release = random_subset(*members, 10, seed=99)
    res = run_mia(*release, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                  std=digits.std, shadow_fn=shadow_fn, shadows=2, eval_config=FAST_EVAL, max_targets=100,
                  bootstrap=50, attacks=("lira", "rmia"))
    assert set(res.details["attacks"]) == {"lira-online", "lira-offline", "rmia"}
    assert res.details["shadows"] == 2
    for a in res.details["attacks"].values():
        assert math.isfinite(a["auc"]) and 0.0 <= a["auc"] <= 1.0
    skipped = run_mia(*release, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                      std=digits.std, shadow_fn=None, eval_config=FAST_EVAL, max_targets=50, bootstrap=20,
                      attacks=("neighbour", "lira", "rmia"))
    assert set(skipped.details["attacks"]) == {"neighbour-pixel", "neighbour-feature"}
    assert skipped.details["skipped"] == ["lira", "rmia"] and any("skipped lira, rmia" in n for n in skipped.notes)


def test_run_mia_validates(digits) -> None:
    members, nonmembers = _split(digits)
    with pytest.raises(DataError):
        run_mia(members[0][0], members[1], members=members, nonmembers=nonmembers, num_classes=10,
                mean=digits.mean, std=digits.std)
    with pytest.raises(ConfigError):
        run_mia(*members, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                std=digits.std, shadows=-1)
    with pytest.raises(ConfigError):
        run_mia(*members, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                std=digits.std, attacks=("lira",), shadow_fn=None)


@pytest.mark.slow
def test_all_attacks_with_real_condensation_shadows(digits) -> None:
    """End to end: a real-init DM release and DM shadow condensations (heavier: ~1-2 min)."""
    from securedc.condenser import Condenser
    from securedc.config import CondenseConfig

    members, nonmembers = _split(digits, n_members=800, n_non=500)
    cfg = CondenseConfig(ipc=10, iterations=20, batch_real=32, init="real").validate()

    def condense_fn(x: torch.Tensor, y: torch.Tensor, seed: int):
        import dataclasses

        cond = Condenser(dataclasses.replace(cfg, seed=seed), num_classes=10, image_shape=(1, 8, 8),
                         mean=digits.mean, std=digits.std)
        res = cond.fit(cond.make_mechanism(x, y))
        return res.images, res.labels

    release = condense_fn(*members, 0)
    res = run_mia(*release, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                  std=digits.std, shadow_fn=condense_fn, shadows=4, eval_config=FAST_EVAL, max_targets=300,
                  bootstrap=100)
    names = {"loss", "neighbour-pixel", "neighbour-feature", "lira-online", "lira-offline", "rmia"}
    assert set(res.details["attacks"]) == names and res.details["shadows"] == 4
    for a in res.details["attacks"].values():
        assert math.isfinite(a["auc"]) and a["auc_ci_low"] <= a["auc"] <= a["auc_ci_high"]
    # real init keeps (modified) copies of 100 of the 800 members: the nearest-neighbour attack sees them
    assert res.details["attacks"]["neighbour-pixel"]["tpr_at_1pct_fpr"] > 0.03
    assert res.metrics["auc"] >= max(a["auc"] for a in res.details["attacks"].values())


def test_rmia_population_uses_out_shadows_when_drawn_from_the_targets() -> None:
    """Without a separate population the targets serve as z: Pr(z) must average the shadows z was OUT of,
    as for x (a shadow that trained on z would inflate Pr(z) and deflate every ratio against it)."""
    from securedc.audits.mia.rmia import rmia_scores

    p = torch.tensor([0.9, 0.5, 0.5, 0.5])
    ref = torch.tensor([[0.99, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])  # shadow 0 trained on target 0
    out = torch.tensor([[False, True, True, True], [True, True, True, True]])
    pooled = rmia_scores(p, ref, out, p, ref)
    masked = rmia_scores(p, ref, out, p, ref, pop_out_mask=out)
    assert not torch.equal(pooled, masked)
    # with the OUT mean, z = target 0 has Pr(z) from shadow 1 only, a larger ratio against which target 1 scores lower
    assert float(masked[1]) < float(pooled[1])
