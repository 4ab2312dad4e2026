"""DP sub-class prototypes: Lloyd rounds inside the prototype share (securedc.privacy.centres)."""

from __future__ import annotations

import math

import pytest
import torch

from securedc.bank import config_for_bank
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError
from securedc.privacy.baseline import combined_prototype_sigma
from securedc.privacy.calibration import epsilon_of, prototype_noise_multiplier
from securedc.privacy.centres import PROTOTYPE_ROUNDS, cluster_sums, pooled, round_sensitivity
from securedc.privacy.mechanism import GaussianMechanism
from securedc.privacy.run import new_accountant


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 4, "iterations": 4, "releases": 2, "batch_real": 32, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


def _qerr(centres: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared distance of each member to its nearest centre."""
    return float(torch.cdist(x.flatten(1).float(), centres.flatten(1).float()).min(1).values.square().mean())


def test_cluster_sums_of_neighbours_differ_in_one_row_by_at_most_the_sensitivity(fmnist_small) -> None:
    x = pooled(fmnist_small.train_images[:400], 2)
    centres = x[torch.randperm(400, generator=torch.Generator().manual_seed(0))[:5]]
    delta, weight = round_sensitivity(x.shape[1], with_counts=True)
    full = cluster_sums(x, centres, weight=weight)
    for victim in (0, 99, 321):
        keep = torch.arange(400) != victim
        diff = (full - cluster_sums(x[keep], centres, weight=weight)).norm(dim=1)
        assert int((diff > 0).sum()) == 1 and 0 < float(diff.max()) <= delta + 1e-9
    worst = cluster_sums(torch.full((1, x.shape[1]), 0.5, dtype=torch.float64), centres, weight=weight)
    assert float(worst.norm()) == pytest.approx(delta)


def test_rounds_are_accounted_and_spend_what_one_release_would(fmnist_small) -> None:
    c = _condenser(fmnist_small, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, sample_rate=0.1, prototype_share=0.1,
                                                       prototype_clusters=4, prototype_top_up=False))
    mech = c.make_mechanism(fmnist_small.train_images, fmnist_small.train_labels, noise_seed=3)
    plan = c.plan
    sigma_p = prototype_noise_multiplier(epsilon=8.0, share=0.1)
    sigma_r = sigma_p * math.sqrt(PROTOTYPE_ROUNDS)
    assert [k for k, _, _ in mech.accesses] == ["prototypes"] * PROTOTYPE_ROUNDS
    assert [s for _, s, _ in mech.accesses] == pytest.approx([sigma_r] * PROTOTYPE_ROUNDS)
    assert (plan.prototype_rounds, plan.prototype_clusters) == (PROTOTYPE_ROUNDS, 4)
    assert plan.centres.shape == (10, 4, 1, 28, 28)
    assert bool((plan.centres >= 0).all() and (plan.centres <= 1).all())
    # the rounds compose to exactly one release at sigma_p (RDP), and the run's accountant composes them
    one = epsilon_of([(sigma_p, 1.0, 1)], delta=1e-5, accountant="rdp")
    assert epsilon_of([(sigma_r, 1.0, PROTOTYPE_ROUNDS)], delta=1e-5, accountant="rdp") == pytest.approx(one, rel=1e-9)
    res = c.fit(mech)
    history = [(s, q, 1) for _, s, q in mech.accesses]
    assert res.privacy["epsilon"] == pytest.approx(epsilon_of(history, delta=plan.delta, accountant="rdp"), rel=1e-9)
    assert res.privacy["epsilon"] <= 8.0 + 1e-9
    assert res.privacy["prototype_clusters"] == 4 and "DP Lloyd rounds" in res.privacy["mechanism"]
    # the class means are the first round's: the paired baseline sees their larger noise
    assert combined_prototype_sigma(res.privacy) == pytest.approx(sigma_r)


def test_centres_quantise_a_class_better_than_its_dp_mean(fmnist_small) -> None:
    # 2000 images (~200 per class) at a generous budget: the Lloyd rounds must find sub-class structure
    mech = GaussianMechanism(fmnist_small.train_images, fmnist_small.train_labels, num_classes=10, clip_bounds=[1.0],
                             noise_seed=5)
    sigma = 0.5
    means, _ = mech.release_prototypes(noise_multiplier=sigma, with_counts=True)
    centres = mech.release_centres(noise_multiplier=sigma, clusters=4, rounds=2)
    ratios = []
    for k in range(10):
        x = fmnist_small.train_images[fmnist_small.train_labels == k]
        ratios.append(_qerr(centres[k], x) / _qerr(means[k : k + 1], x))
    assert max(ratios) < 1.0 and sum(ratios) / 10 < 0.85  # trousers, one tight mode, gain least


def test_auto_keeps_class_means_on_small_classes_with_the_same_noise(digits) -> None:
    c = _condenser(digits, ipc=10, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=1)
    plan = c.plan
    assert plan.prototype_clusters == 1 and plan.centres is None
    rounds = [k for k, _, _ in mech.accesses if k == "prototypes"]
    assert len(rounds) == PROTOTYPE_ROUNDS == plan.prototype_rounds
    # the re-released class means combine to one release at sigma_p
    assert combined_prototype_sigma(plan.to_dict()) == pytest.approx(plan.prototype_noise_multiplier)
    fresh = new_accountant(plan, mech)
    history = [(s, q, 1) for k, s, q in mech.accesses if k != "statistics"]
    assert fresh.epsilon() == pytest.approx(epsilon_of(history, delta=plan.delta, accountant="rdp"), rel=1e-9)


def test_clusters_one_is_a_single_class_mean_release(digits) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, prototype_clusters=1))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=1)
    assert [k for k, _, _ in mech.accesses if k == "prototypes"] == ["prototypes"]
    assert c.plan.prototype_rounds == 1


def test_s_starts_at_the_centres_and_a_bank_reuses_them_at_a_larger_ipc(fmnist_small, bank_roundtrip) -> None:
    c = _condenser(fmnist_small, iterations=2, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, sample_rate=0.1,
                                                                     prototype_share=0.1, prototype_clusters=4))
    mech = c.make_mechanism(fmnist_small.train_images, fmnist_small.train_labels, noise_seed=4)
    centres = c.plan.centres
    res = c.fit(mech)
    assert torch.equal(c._init_images(mech, res.bank, resuming=False).view(10, 4, 1, 28, 28), centres.float())
    bank, meta = bank_roundtrip(c, res, dataset="fashion-mnist")
    assert torch.equal(bank.centres, centres.float())
    cfg = config_for_bank(CondenseConfig(ipc=6, iterations=1, batch_real=32), meta)
    again = Condenser(cfg, num_classes=10, image_shape=fmnist_small.image_shape, mean=fmnist_small.mean,
                      std=fmnist_small.std)
    start = again._init_images(None, bank, resuming=False).view(10, 6, 1, 28, 28)
    assert torch.equal(start[:, :4], centres.float())  # the first K images of a class are its centres
    moved = (start[:, 4:] - centres[:, :2].float()).abs()
    assert 0 < float(moved.max()) <= 0.125 + 1e-6  # copies beyond K get the public prototype noise


@pytest.mark.parametrize("bad", [0, -2, "three", 2.5, True])
def test_bad_cluster_count_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="prototype_clusters"):
        CondenseConfig(privacy=PrivacyConfig(epsilon=8.0, prototype_clusters=bad)).validate()


def test_cli_option_parses_numbers_and_auto() -> None:
    assert CondenseConfig.from_options(epsilon="8", prototype_clusters="5").privacy.prototype_clusters == 5
    assert CondenseConfig.from_options(epsilon="8", prototype_clusters="auto").privacy.prototype_clusters == "auto"


def test_a_bank_with_malformed_centres_is_refused(fmnist_small, tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from securedc.bank import StatisticsBank
    from securedc.errors import DataError

    c = _condenser(fmnist_small, iterations=2, privacy=PrivacyConfig(epsilon=8.0, delta=1e-5, sample_rate=0.1,
                                                                     prototype_share=0.1, prototype_clusters=3))
    res = c.fit(c.make_mechanism(fmnist_small.train_images, fmnist_small.train_labels, noise_seed=6))
    good = tmp_path / "bank.safetensors"
    c.save_bank(good, res, dataset="fashion-mnist")
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert tensors["centres"].shape == (10, 3, 1, 28, 28)
    for bad in (tensors["centres"][:, 0], tensors["centres"][:4], tensors["centres"] * float("nan")):
        path = tmp_path / "bad.safetensors"
        save_file({**tensors, "centres": bad.contiguous()}, str(path), metadata=meta)
        with pytest.raises(DataError, match="corrupt"):
            StatisticsBank.load(path)
