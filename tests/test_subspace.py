"""The DP subspace: k-wide releases spanned by already released images, at no privacy cost."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

import securedc.terms.distribution as dist
from securedc.bank import StatisticsBank, config_for_bank
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.privacy.centres import PROTOTYPE_ROUNDS
from securedc.subspace import principal_basis, subspace_dim


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 12, "releases": 3, "batch_real": 16, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


def test_principal_basis_is_orthonormal_exact_and_sign_canonical() -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(12, generator=g), dim=0)
    rows = torch.randn(60, 1, generator=g) * 10 * direction + torch.randn(60, 12, generator=g)
    basis = principal_basis(rows, 4)
    assert basis.shape == (12, 4)
    assert torch.allclose(basis.T @ basis, torch.eye(4), atol=1e-5)
    assert abs(float(basis[:, 0] @ direction)) > 0.99, "the first direction is the dominant one"
    # a function of the rows alone: same basis for permuted or negated rows (SVD signs are arbitrary)
    perm = torch.randperm(60, generator=g)
    assert torch.allclose(principal_basis(rows[perm], 4), basis, atol=1e-5)
    assert torch.allclose(principal_basis(-rows, 4), basis, atol=1e-5)
    assert torch.equal(principal_basis(rows, 4), basis)


def test_subspace_dim_is_capped_by_the_images_and_the_features() -> None:
    assert subspace_dim(64, images=100, feature_dim=2048) == 64
    assert subspace_dim(64, images=10, feature_dim=2048) == 9
    assert subspace_dim(64, images=1000, feature_dim=32) == 32
    assert subspace_dim(0, images=100, feature_dim=32) == 0 and subspace_dim(8, images=1, feature_dim=32) == 0


def test_dp_subspace_is_spanned_by_released_images_only_and_costs_no_access(digits, monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    original = dist.release_basis

    def spy(network, images, k, **kw):
        seen.append(images.clone())
        return original(network, images, k, **kw)

    monkeypatch.setattr(dist, "release_basis", spy)
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, subspace=5))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=5)
    res = c.fit(mech)
    assert [k for k, _, _ in mech.accesses] == ["prototypes"] * PROTOTYPE_ROUNDS + ["statistics"] * 3
    released = res.bank.released_images()
    assert released is not None
    assert len(seen) == 3, "one basis per release, cached for the steps that reuse it"
    assert all(torch.equal(images, released) for images in seen), "only the DP phase-0 images span the subspace"
    assert res.bank.widths == [subspace_dim(5, images=len(released), feature_dim=c.make_network(0).feature_dim)]
    term = next(t for t in res.terms if t["name"] == "distribution")
    assert term["subspace"] == 5
    assert res.privacy["accountant_history"][-1][2] == 3, "R releases accounted, the subspace adds none"


def test_subspace_raises_the_signal_share_of_dp_releases(digits) -> None:
    """James–Stein signal shares (1 − d·τ²/‖m‖², post-processing of the releases) of the same run at
    ε = 1 with full features and with the subspace: the noise falls with the width, the signal stays."""
    shares = {}
    for k in (0, 8):
        c = _condenser(digits, iterations=3, privacy=PrivacyConfig(epsilon=1.0, subspace=k))
        res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=11))
        disc = next(t for t in c.terms if t.name == "distribution").discrepancy
        disc.noise_std = res.bank.noise_std
        shares[k] = float(torch.stack([disc.signal_weights(res.bank.statistics(r)[0]) for r in range(3)]).mean())
    assert shares[8] > shares[0] + 0.2, shares


def test_subspace_bank_recondenses_identically_and_is_adopted(digits, tmp_path) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0, subspace=6))
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=3))
    path = tmp_path / "digits.bank.safetensors"
    c.save_bank(path, res, dataset="digits")
    loaded, meta = StatisticsBank.load(path)
    plain = CondenseConfig(ipc=3, iterations=8, batch_real=16)  # the user does not repeat --subspace
    cfg = config_for_bank(plain, meta)
    assert cfg.privacy.subspace == 6 and cfg.privacy.private
    outs = []
    for bank in (res.bank, loaded):  # no mechanism: the bases come from the bank's stored prototypes
        c2 = Condenser(cfg, num_classes=digits.num_classes, image_shape=digits.image_shape, mean=digits.mean,
                       std=digits.std)
        c2.check_bank(meta, source=path)
        outs.append(c2.fit(None, bank=bank, bank_privacy=meta["privacy"]).images)
    assert torch.equal(outs[0], outs[1])
    # a bank written before the option (no "subspace" in its signature) still serves a full-feature run
    old = dict(meta, signature={k: v for k, v in meta["signature"].items() if k != "subspace"})
    full = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0))
    full.check_bank(old, source="old")
    with pytest.raises(Exception, match="subspace"):
        full.check_bank(meta, source=path)


def test_subspace_config_is_validated() -> None:
    with pytest.raises(Exception, match="private run"):
        CondenseConfig.from_options(subspace=8)
    with pytest.raises(Exception, match="prototype_share"):
        CondenseConfig.from_options(subspace=8, epsilon=8, prototype_share=0)
    with pytest.raises(Exception, match="integer >= 0"):
        CondenseConfig(privacy=dataclasses.replace(PrivacyConfig(epsilon=8.0), subspace=-1)).validate()


def test_cli_subspace_without_privacy_exits_2_with_one_line(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "securedc", "condense", "--subspace", "8", "--no-audit"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "subspace" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_subspace_run_resumes_identically(digits, tmp_path, interrupt_at) -> None:
    """The bases are recomputed, never stored: a resumed run regenerates them from the checkpoint's
    phase-0 images and ends bit-identical to the uninterrupted one."""
    kw = dict(privacy=PrivacyConfig(epsilon=8.0, subspace=6))
    full_c = _condenser(digits, **kw)
    full = full_c.fit(full_c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=7))
    ckpt = tmp_path / "run.ckpt.safetensors"
    first = _condenser(digits, checkpoint_every=6, **kw)
    interrupt_at(first, first.make_mechanism(digits.train_images, digits.train_labels, noise_seed=7), ckpt, 6)
    second = _condenser(digits, **kw)
    resumed = second.fit(second.make_mechanism(digits.train_images, digits.train_labels, resume_from=ckpt),
                         resume_from=ckpt)
    assert torch.equal(resumed.images, full.images)
