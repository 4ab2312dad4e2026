"""The statistics bank: R real-data accesses whatever K, files round-trip, re-condensation reads no data."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from opacus.accountants import RDPAccountant

from securedc.bank import StatisticsBank
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import DataError
from securedc.privacy.centres import PROTOTYPE_ROUNDS


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 12, "releases": 3, "batch_real": 16, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


@pytest.mark.parametrize("iterations", [3, 12])
@pytest.mark.parametrize("share", [0.0, 0.3])
def test_real_data_accesses_equal_releases_whatever_the_steps(digits, iterations, share) -> None:
    c = _condenser(digits, iterations=iterations, privacy=PrivacyConfig(epsilon=8.0, prototype_share=share))
    mech = c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=5)
    res = c.fit(mech)
    kinds = [k for k, _, _ in mech.accesses]
    phase0 = ["prototypes"] * PROTOTYPE_ROUNDS if share else ["counts"]
    assert kinds == phase0 + ["statistics"] * 3, "the phase-0 release(s), then R = 3 statistic releases"
    p = res.privacy
    # each prototype round adds sigma_p * sqrt(L): together one release at sigma_p
    sigma0 = p["prototype_noise_multiplier"] * math.sqrt(PROTOTYPE_ROUNDS) if share else p["count_noise_multiplier"]
    assert sigma0 is not None and (p["count_noise_multiplier"] is None) == bool(share)
    # the accountant's history is exactly the instrumented accesses, and ε follows from it alone
    assert p["accountant_history"] == [[sigma0, 1.0, len(phase0)], [p["noise_multiplier"], p["sample_rate"], 3]]
    assert [(s, q) for _, s, q in mech.accesses] == ([(sigma0, 1.0)] * len(phase0)
                                                      + [(p["noise_multiplier"], p["sample_rate"])] * 3)
    acc = RDPAccountant()
    acc.history = [tuple(h) for h in p["accountant_history"]]
    assert float(acc.get_epsilon(delta=p["delta"])) == pytest.approx(p["epsilon"], rel=1e-9)
    assert p["epsilon"] <= 8.0 and p["optimisation_steps"] == iterations and len(res.losses) == iterations


def test_reuse_one_is_a_fresh_release_every_step(digits) -> None:
    c = _condenser(digits, iterations=5, releases=None, reuse=1)
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels))
    assert len(res.bank) == 5
    c2 = _condenser(digits, iterations=6, releases=None, reuse=3)
    assert len(c2.fit(c2.make_mechanism(digits.train_images, digits.train_labels)).bank) == 2


def test_saved_bank_recondenses_identically_without_real_data(digits, tmp_path) -> None:
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0))
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=3))
    path = tmp_path / "digits.bank.safetensors"
    c.save_bank(path, res, dataset="digits")
    loaded, meta = StatisticsBank.load(path)
    assert loaded.seeds == res.bank.seeds
    for r in range(3):
        assert all(torch.equal(a, b) for a, b in zip(loaded.statistics(r), res.bank.statistics(r)))
    assert meta["privacy"]["epsilon"] == res.privacy["epsilon"] and "estimated_counts" not in meta["privacy"]
    outs = []
    for bank in (res.bank, loaded):  # re-condense at another IPC: no mechanism, so no real data at all
        c2 = _condenser(digits, ipc=3, iterations=8, privacy=PrivacyConfig(epsilon=8.0))
        c2.check_bank(meta, source=path)
        out = c2.fit(None, bank=bank, bank_privacy=meta["privacy"])
        assert out.images.shape == (30, 1, 8, 8) and out.privacy["epsilon"] == res.privacy["epsilon"]
        assert "from_bank" in out.privacy
        outs.append(out.images)
    assert torch.equal(outs[0], outs[1])


def test_mismatched_or_corrupt_bank_is_refused(digits, tmp_path) -> None:
    c = _condenser(digits)
    res = c.fit(c.make_mechanism(digits.train_images, digits.train_labels))
    path = tmp_path / "b.safetensors"
    c.save_bank(path, res, dataset="digits")
    _, meta = StatisticsBank.load(path)
    other = _condenser(digits, discrepancy="mmd")
    with pytest.raises(DataError, match="does not match"):
        other.check_bank(meta, source=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a securedc statistics bank"):
        StatisticsBank.load(bad)


def test_bank_memory_is_bounded() -> None:
    bank = StatisticsBank(capacity=1000, num_classes=10, max_bytes=1000)
    with pytest.raises(Exception, match="GiB"):
        bank.add(0, [torch.zeros(10, 128)])


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "securedc", "condense", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_bad_bank_input_exits_2_with_one_line(tmp_path) -> None:
    r = _cli("--reuse", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--reuse" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    corrupt = tmp_path / "x.bank.safetensors"
    corrupt.write_bytes(b"not a bank")
    r = _cli("--from-bank", str(corrupt), "--no-audit", "--eval-models", "0", cwd=tmp_path)
    assert r.returncode == 2 and "bank" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_dp_public_centre_is_computed_once_per_release(digits, monkeypatch) -> None:
    """Phase 2 re-creates old releases; the distribution term's public centre (a mean over public noise
    images through the release's network) is computed once per release, and the run is bit-identical
    to one that recomputes it at every step."""
    import securedc.terms.distribution as dist

    calls = [0]
    original = dist._center_of

    def counting(*args, **kw):
        calls[0] += 1
        return original(*args, **kw)

    monkeypatch.setattr(dist, "_center_of", counting)
    privacy = PrivacyConfig(epsilon=8.0, prototype_share=0.0)
    c = _condenser(digits, iterations=12, privacy=privacy)
    cached = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=5))
    assert calls[0] == 3, "R = 3 releases, K = 12 steps: three centres"

    calls[0] = 0
    c = _condenser(digits, iterations=12, privacy=privacy)
    term = next(t for t in c.terms if t.name == "distribution")
    prepare = term.prepare

    def uncached(ctx) -> None:
        term._centers.clear()
        prepare(ctx)

    term.prepare = uncached
    fresh = c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=5))
    assert calls[0] == 12, "without the cache every step recomputes its release's centre"
    assert torch.equal(cached.images, fresh.images)


def test_batch_real_caps_the_rules_sample_rate_in_dp_mode(digits) -> None:
    """In DP mode --batch-real bounds the real images a release reads per class (in expectation), as in
    a non-private run: the rule's q is capped at batch_real / max released count; a user's q is kept."""
    from securedc.privacy.calibration import choose_sample_rate

    rule = choose_sample_rate(epsilon=8.0, delta=1e-5, releases=3)
    plans = {}
    for b, q_user in ((16, None), (256, None), (16, 0.9)):
        c = _condenser(digits, batch_real=b, privacy=PrivacyConfig(epsilon=8.0, prototype_share=0.0,
                                                                   sample_rate=q_user))
        c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=1)
        plans[(b, q_user)] = c.plan
    capped = plans[(16, None)]
    assert capped.sample_rate == pytest.approx(16 / max(capped.estimated_counts)) and capped.sample_rate < rule
    assert "capped" in capped.sample_rate_source
    assert plans[(256, None)].sample_rate == rule and "capped" not in plans[(256, None)].sample_rate_source
    assert plans[(16, 0.9)].sample_rate == 0.9 and plans[(16, 0.9)].sample_rate_source == "user"
    # the accountant composes the capped q: ε is spent in full all the same
    assert capped.noise_multiplier < plans[(256, None)].noise_multiplier


def test_release_writes_the_bank_with_the_file(tmp_path) -> None:
    """`--save-bank` writes NAME.bank.safetensors once the release is written (a refused one leaves none:
    tests/test_cli_audit.py)."""
    from securedc.release import release

    cfg = CondenseConfig.from_options(ipc=1, iterations=4, batch_real=8, epsilon=8.0)
    done = release(cfg, "digits", out=tmp_path, audit=None, evaluate=False, save_bank=True)
    assert done is not None and done.written
    bank, meta = StatisticsBank.load(tmp_path / "digits-ipc1.bank.safetensors")
    assert len(bank) >= 1 and meta["privacy"]["epsilon"] == pytest.approx(done.manifest["privacy"]["epsilon"])
