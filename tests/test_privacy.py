"""Differential privacy: accounting, sensitivity, noise scale, sampling, isolation, resume, refusals, CLI.

Real opacus, real digits, no mocks. The heavier checks are marked slow.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant

from securedc.checkpoint import load_checkpoint
from securedc.condenser import NOT_COVERED, Condenser
from securedc.config import AdversarialConfig, CondenseConfig, PrivacyConfig
from securedc.errors import PrivacyError
from securedc.privacy import GaussianMechanism, calibrate_noise
from securedc.privacy.mechanism import noisy_class_means, poisson_sample
from securedc.terms import build_terms, list_terms
from securedc.terms.base import _REGISTRY

DIGITS_SHAPE = (1, 8, 8)


def _condenser(bundle, **kw) -> Condenser:
    # one release per step (reuse 1): these tests count releases against steps
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 4, "batch_real": 16, "reuse": 1, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


def _all_terms_config(**kw) -> CondenseConfig:
    """A DP configuration with EVERY registered privatisable term active."""
    cfg = CondenseConfig(
        **{
            "ipc": 2,
            "iterations": 1,
            "reuse": 1,
            "batch_real": 16,
            "dist_weight": 1.0,
            "grad_weight": 1.0,
            "adversarial": AdversarialConfig(eps=8 / 255, steps=2),
            "privacy": PrivacyConfig(epsilon=8.0, clip=1.0),
            **kw,
        }
    )
    active = {t.name for t in build_terms(cfg)}
    wanted = {name for name in list_terms() if _REGISTRY[name].private_ok}
    assert active == wanted, f"a registered term is not enabled by this test config: {wanted - active}"
    return cfg


# --------------------------------------------------------------------------- accounting
def _opacus_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    return float(acc.get_epsilon(delta=delta))


@pytest.mark.parametrize(("eps", "q", "steps"), [(1.0, 0.01, 200), (8.0, 0.1, 50), (0.5, 0.02, 100), (3.0, 1.0, 10)])
def test_calibrated_sigma_reaches_target_within_one_percent(eps, q, steps) -> None:
    sigma = calibrate_noise(target_epsilon=eps, target_delta=1e-5, sample_rate=q, steps=steps)
    spent = _opacus_epsilon(sigma, q, steps, 1e-5)
    assert spent <= eps, "calibration must never overshoot the target"
    assert spent >= 0.99 * eps, f"spent {spent} is more than 1% below the target {eps}"


@settings(max_examples=5, deadline=None)
@given(
    eps=st.floats(0.5, 16.0),
    q=st.floats(0.001, 0.2),
    steps=st.integers(1, 300),
)
def test_calibration_property(eps, q, steps) -> None:
    try:
        sigma = calibrate_noise(target_epsilon=eps, target_delta=1e-5, sample_rate=q, steps=steps)
    except PrivacyError:
        return  # unreachable target: refused, not silently changed
    spent = _opacus_epsilon(sigma, q, steps, 1e-5)
    assert 0.99 * eps <= spent <= eps


@pytest.mark.parametrize(("eps", "delta", "releases"), [(8.0, 1e-4, 75), (1.0, 1e-4, 75), (8.0, 1e-5, 50)])
def test_sample_rate_rule_picks_the_smallest_grid_q_within_tolerance_of_the_floor(eps, delta, releases) -> None:
    """The signal-to-noise rule, checked against its definition with full calibrations (opacus'
    accountant): η(q) = σ(q)/(q√R) of the chosen q is within 15 % of the q = 1 floor (up to the
    calibration's own 0.5 % tolerance on σ), and no smaller grid q is."""
    from securedc.privacy.calibration import SAMPLE_RATE_GRID, choose_sample_rate

    def eta(q: float) -> float:
        return calibrate_noise(target_epsilon=eps, target_delta=delta, sample_rate=q, steps=releases) / (q * releases ** 0.5)

    chosen = choose_sample_rate(epsilon=eps, delta=delta, releases=releases)
    floor = eta(1.0)
    assert chosen in SAMPLE_RATE_GRID and eta(chosen) <= 1.15 * floor * 1.005
    smaller = [q for q in SAMPLE_RATE_GRID if q < chosen]
    if smaller:
        assert eta(max(smaller)) > 1.15 * floor


def test_manifest_epsilon_is_recomputable_and_lists_not_covered(digits) -> None:
    c = _condenser(digits, iterations=2, batch_real=8, privacy=PrivacyConfig(epsilon=4.0), grad_weight=1.0)
    mech = c.make_mechanism(digits.train_images, digits.train_labels)
    res = c.fit(mech)
    p = res.privacy
    assert p["private"] and p["steps"] == 2 and p["accountant"] == "rdp" and p["counts"] == "released"
    # the composition is the prototype+count rounds (σ_p·sqrt(L), q = 1, L times) then R statistic releases (σ, q)
    assert p["count_noise_multiplier"] is None
    rounds, sigma_r = p["prototype_rounds"], p["prototype_noise_multiplier"] * math.sqrt(p["prototype_rounds"])
    assert p["accountant_history"] == [[sigma_r, 1.0, rounds], [p["noise_multiplier"], p["sample_rate"], 2]]
    acc = RDPAccountant()
    acc.history = [(sigma_r, 1.0, rounds), (p["noise_multiplier"], p["sample_rate"], p["steps"])]
    assert float(acc.get_epsilon(delta=p["delta"])) == pytest.approx(p["epsilon"], rel=1e-9)
    assert 0.99 * 4.0 <= p["epsilon"] <= 4.0
    assert p["delta"] < 1 / digits.train_labels.numel()
    assert p["clip_bounds"] == {"distribution": 1.0, "gradient": 1.0}
    assert p["sensitivity"] == pytest.approx(math.sqrt(2))
    assert p["not_covered"] == NOT_COVERED and "secret" in p["noise_seed"]
    assert "estimated_counts" not in p and "secret" not in p
    assert format(mech.streams.key, "032x") not in json.dumps(p) and str(mech.streams.key) not in json.dumps(p)


# --------------------------------------------------------------------------- sensitivity
class RecordingMechanism(GaussianMechanism):
    """Records the raw per-sample parts and labels of every release (pre-clipping, pre-noise)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[tuple[list[torch.Tensor], torch.Tensor]] = []

    def release(self, vector_fn, **kw):
        def wrapped(x, y):
            parts = list(vector_fn(x, y))
            self.records.append(([p.detach().clone() for p in parts], y.detach().clone()))
            return parts

        return super().release(wrapped, **kw)


def _clipped_sums(parts, labels, clip_bounds) -> torch.Tensor:
    sums = noisy_class_means(
        parts, labels, clip_bounds=clip_bounds, noise_multiplier=0.0, expected_counts=torch.ones(10),
        generator=torch.Generator().manual_seed(0),
    )
    return torch.cat(sums, dim=1)


@pytest.mark.parametrize("outlier", ["ones", "huge"])
def test_replacing_one_example_changes_class_sums_by_at_most_2C(digits, outlier) -> None:
    # phase 0 off: S after the prototype release is a DP output a statistic release is conditioned on
    # (the prototype release has its own neighbour test in test_prototypes.py)
    cfg = _all_terms_config(privacy=PrivacyConfig(epsilon=8.0, clip=1.0, prototype_share=0.0))
    x, y = digits.train_images[:300], digits.train_labels[:300]
    x2 = x.clone()
    victim = 5
    # an adversarial outlier: all-ones image, or a huge-norm image outside [0, 1]
    x2[victim] = 1.0 if outlier == "ones" else 1e4
    sums = []
    for imgs in (x, x2):
        c = Condenser(cfg, num_classes=10, image_shape=DIGITS_SHAPE, mean=digits.mean, std=digits.std)
        c.make_mechanism(imgs, y)  # calibrates σ (unused here)
        mech = RecordingMechanism(
            imgs, y, num_classes=10, sample_rate=1.0, noise_multiplier=1.0,
            clip_bounds=[t.clip for t in c.terms], noise_seed=7,
        )
        c.fit(mech)
        (parts, labels), = mech.records
        assert labels.numel() == y.numel()  # q = 1: the victim is in the batch
        assert len(parts) == len(c.terms) == len(list_terms())
        sums.append(_clipped_sums(parts, labels, mech.clip_bounds))
    diff = (sums[0] - sums[1]).norm()
    total_c = math.sqrt(sum(b * b for b in mech.clip_bounds))
    # replacing one example (old row out, outlier row in) moves its class sum by at most 2C; the
    # add/remove-one bound C of the DP definition is checked in test_privacy_leaks.py
    assert diff <= 2 * total_c * (1 + 1e-5)
    assert diff > 0.05 * total_c, "the outlier must actually change the statistic (test is not vacuous)"
    only_victim_class = (sums[0] - sums[1]).norm(dim=1)
    assert int((only_victim_class > 1e-4).sum()) == 1, "one example must touch only its own class"


# --------------------------------------------------------------------------- noise
def test_noise_std_matches_sigma_C_over_qNc(digits) -> None:
    """With the data fixed (q = 1), 300 releases; std per coordinate vs σ·C/(q·N_c).

    Tolerance: the std pooled over 300 draws × d coordinates per class has relative
    standard error ≈ 1/sqrt(2·300·d) < 1%; we allow 5% relative error.
    """
    x, y = digits.train_images[:200], digits.train_labels[:200]
    sigma, q, clips = 0.8, 1.0, [1.0, 2.0]
    mech = GaussianMechanism(x, y, num_classes=10, sample_rate=q, noise_multiplier=sigma, clip_bounds=clips, noise_seed=1)

    def vector_fn(xb, yb):
        flat = xb.flatten(1)
        return [flat[:, :16], flat[:, 16:48] * 10]

    draws = torch.stack([torch.cat(mech.release(vector_fn, seed=s), 1) for s in range(300)])
    counts = torch.bincount(y, minlength=10).double()
    expected = sigma * math.sqrt(sum(c * c for c in clips)) / (q * counts)
    empirical = draws.double().std(dim=0).pow(2).mean(dim=1).sqrt()  # pooled over coordinates, per class
    rel = (empirical - expected).abs() / expected
    assert float(rel.max()) < 0.05, (empirical, expected)
    # and the mean is the clipped class mean (noise is centred)
    clipped = _clipped_sums(vector_fn(x, y), y, clips) / counts[:, None]
    assert torch.allclose(draws.double().mean(0), clipped.double(), atol=float(4 * expected.max() / math.sqrt(300)))


# --------------------------------------------------------------------------- sampling
def test_poisson_inclusion_rate() -> None:
    n, q, reps = 2000, 0.05, 200
    g = torch.Generator().manual_seed(3)
    hits = torch.zeros(n)
    for _ in range(reps):
        hits[poisson_sample(n, q, generator=g)] += 1
    rate = float(hits.sum()) / (n * reps)
    # binomial: std of the rate = sqrt(q(1-q)/(n·reps)) ≈ 0.00034; allow 5 std
    assert abs(rate - q) < 5 * math.sqrt(q * (1 - q) / (n * reps))
    per_example = hits / reps
    assert abs(float(per_example.mean()) - q) < 0.002 and float(per_example.std()) < 0.03


def test_empty_batches_do_not_crash_and_are_accounted(digits) -> None:
    c = _condenser(digits, iterations=5, grad_weight=1.0, privacy=PrivacyConfig(epsilon=8.0))
    mech = c.make_mechanism(digits.train_images, digits.train_labels)
    tiny = GaussianMechanism(
        digits.train_images, digits.train_labels, num_classes=10, sample_rate=1e-9,
        noise_multiplier=mech.noise_multiplier, clip_bounds=mech.clip_bounds, noise_seed=0,
    )
    res = c.fit(tiny)
    assert tiny.last_batch_size == 0
    assert res.privacy["steps"] == 5
    assert sum(n for _, _, n in res.privacy["accountant_history"]) == 5 + res.privacy["prototype_rounds"]  # + phase 0
    assert torch.isfinite(res.images).all() and all(math.isfinite(v) for v in res.losses)


def test_sigma_zero_without_clipping_gives_exact_class_means(digits) -> None:
    x, y = digits.train_images, digits.train_labels
    mech = GaussianMechanism(x, y, num_classes=10, sample_rate=0.3, noise_multiplier=0.0, clip_bounds=[1e9], noise_seed=4)
    seen = {}

    def vector_fn(xb, yb):
        seen["x"], seen["y"] = xb, yb
        return [xb.flatten(1)]

    (out,) = mech.release(vector_fn, seed=11)
    xb, yb = seen["x"], seen["y"]
    assert 0 < yb.numel() < y.numel()
    sums = torch.zeros(10, 64).index_add(0, yb, xb.flatten(1))
    expected_counts = torch.bincount(y, minlength=10).double() * 0.3
    assert torch.allclose(out.double(), sums.double() / expected_counts[:, None], atol=1e-5)
    # dividing by the realised count instead gives the exact batch means
    realised = torch.bincount(yb, minlength=10).double()
    exact = sums.double() / realised[:, None]
    assert torch.allclose(out.double() * expected_counts[:, None] / realised[:, None], exact, atol=1e-5)


def test_noise_depends_on_a_secret_not_only_on_the_public_seed(digits) -> None:
    x, y = digits.train_images, digits.train_labels
    kw = dict(num_classes=10, sample_rate=0.1, noise_multiplier=1.0, clip_bounds=[1.0])
    fn = lambda xb, yb: [xb.flatten(1)]  # noqa: E731
    a = GaussianMechanism(x, y, **kw).release(fn, seed=5)[0]
    b = GaussianMechanism(x, y, **kw).release(fn, seed=5)[0]
    assert not torch.equal(a, b)
    c1 = GaussianMechanism(x, y, **kw, noise_seed=9).release(fn, seed=5)[0]
    c2 = GaussianMechanism(x, y, **kw, noise_seed=9).release(fn, seed=5)[0]
    assert torch.equal(c1, c2)


# --------------------------------------------------------------------------- isolation
class CountingMechanism(GaussianMechanism):
    """Counts reads of the real tensors; only ``release`` may read them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads_in_release = 0
        self.reads_elsewhere = 0
        self._in_release = False
        self.reads_in_release = self.reads_elsewhere = 0  # construction does not count

    @property
    def _images(self):  # type: ignore[override]
        if getattr(self, "_in_release", False):
            self.reads_in_release += 1
        else:
            self.reads_elsewhere = getattr(self, "reads_elsewhere", 0) + 1
        return self._real_images

    @_images.setter
    def _images(self, value) -> None:
        self._real_images = value

    def release(self, vector_fn, **kw):
        self._in_release = True
        try:
            return super().release(vector_fn, **kw)
        finally:
            self._in_release = False


def _tensors_in(obj, seen=None, depth=0):
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_in(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            yield from _tensors_in(v, seen, depth + 1)
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
        yield from _tensors_in(vars(obj), seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _tensors_in(vars(obj), seen, depth + 1)


def test_dp_mode_reads_real_images_only_through_the_mechanism(digits) -> None:
    x = digits.train_images.clone()
    y = digits.train_labels.clone()
    cfg = _all_terms_config(iterations=3)
    c = Condenser(cfg, num_classes=10, image_shape=DIGITS_SHAPE, mean=digits.mean, std=digits.std)
    proto = c.make_mechanism(x, y)
    mech = CountingMechanism(
        x, y, num_classes=10, sample_rate=proto.sample_rate, noise_multiplier=proto.noise_multiplier,
        clip_bounds=proto.clip_bounds,
    )
    res = c.fit(mech)
    assert mech.reads_in_release >= 3 and mech.reads_elsewhere == 0
    real_ptr = x.untyped_storage().data_ptr()
    held = [t for t in _tensors_in(c) if t.untyped_storage().data_ptr() == real_ptr]
    assert not held, "the Condenser must not keep a reference to the real images"
    assert not any(t.untyped_storage().data_ptr() == real_ptr for t in _tensors_in(res))


# --------------------------------------------------------------------------- resume
def test_resume_identical_images_and_full_accounting(digits, tmp_path, interrupt_at) -> None:
    kw = dict(iterations=6, grad_weight=1.0, privacy=PrivacyConfig(epsilon=4.0))
    full_c = _condenser(digits, **kw)
    full = full_c.fit(full_c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=123))

    ckpt = tmp_path / "run.ckpt.safetensors"
    first = _condenser(digits, **{**kw, "checkpoint_every": 3})
    interrupt_at(first, first.make_mechanism(digits.train_images, digits.train_labels, noise_seed=123), ckpt, 3)
    assert load_checkpoint(ckpt)[1]["secret"]["key"]  # the secret key lives only in the private checkpoint
    # the resumed process does not know the secret: it comes back from the (private) checkpoint
    second = _condenser(digits, **kw)
    resumed = second.fit(second.make_mechanism(digits.train_images, digits.train_labels), resume_from=ckpt)
    assert torch.equal(resumed.images, full.images)
    assert resumed.privacy["steps"] == 6 == full.privacy["steps"]
    assert resumed.privacy["epsilon"] == pytest.approx(full.privacy["epsilon"], rel=1e-12)
    # resuming under a configuration that would overshoot the target is refused
    longer = _condenser(digits, **{**kw, "iterations": 12})
    with pytest.raises(PrivacyError, match="resum"):
        longer.fit(longer.make_mechanism(digits.train_images, digits.train_labels), resume_from=ckpt)


# --------------------------------------------------------------------------- refusals
def test_library_refusals(digits) -> None:
    with pytest.raises(PrivacyError, match="--init real"):
        _condenser(digits, init="real", privacy=PrivacyConfig(epsilon=8.0))
    with pytest.raises(PrivacyError, match="sliced-wasserstein"):
        _condenser(digits, discrepancy="sliced-wasserstein", privacy=PrivacyConfig(epsilon=8.0))
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=8.0))
    mech = c.make_mechanism(digits.train_images, digits.train_labels)
    with pytest.raises(PrivacyError):
        mech.real_init(2, seed=0)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "securedc", "condense", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("flags", [["--epsilon", "0"], ["--epsilon", "-1"], ["--epsilon", "nan"], ["--epsilon", "8", "--delta", "1"]])
def test_cli_refuses_bad_privacy_flags(tmp_path, cli, flags) -> None:
    out = tmp_path / "out"
    res = cli("condense", *flags, "--iterations", "2", "--eval-models", "0", "--out", str(out))
    assert res.exit_code == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert ("epsilon" in lines[0] or "delta" in lines[0]) and "Traceback" not in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_cli_condense_with_epsilon_end_to_end(tmp_path) -> None:
    from securedc.export import load_condensed

    out = tmp_path / "out"
    proc = _cli(
        "--epsilon", "8", "--iterations", "20", "--eval-models", "0", "--ipc", "2", "--batch-real", "16",
        "--no-audit", "--out", str(out), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    files = [f for f in out.glob("*.safetensors") if "ckpt" not in f.name]
    assert len(files) == 1
    loaded = load_condensed(files[0])
    priv = loaded.manifest["privacy"]
    assert priv["private"] is True and 0 < priv["epsilon"] <= 8.0 * 1.0001
    assert priv["steps"] == 5 and priv["not_covered"]  # R = ceil(K / reuse) = ceil(20 / 4) releases
    assert "ε" in proc.stdout or "epsilon" in proc.stdout.lower()


# --------------------------------------------------------------------------- memoised RDP composition
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0.4, 20.0), st.sampled_from([0.01, 0.05, 0.3, 1.0]), st.integers(1, 500)),
                min_size=1, max_size=3),
       st.sampled_from([1e-4, 1e-5, 1e-6]))
def test_memoised_rdp_epsilon_equals_a_fresh_opacus_accountant(history, delta) -> None:
    from securedc.privacy import PrivacyAccountant
    from securedc.privacy.rdp import rdp_curve, rdp_epsilon

    fresh = RDPAccountant()
    fresh.history = list(history)
    expected = fresh.get_epsilon(delta=delta)
    assert rdp_epsilon(history, delta=delta) == expected  # bit-identical, also on a second (memoised) call
    assert rdp_epsilon(history, delta=delta) == expected
    assert rdp_epsilon(history, delta=delta, quiet=True) == expected  # the same conversion without the warning
    ours = PrivacyAccountant("rdp", delta=delta)
    for sigma, q, n in history:
        for _ in range(min(n, 3)):
            ours.step(noise_multiplier=sigma, sample_rate=q)
    check = RDPAccountant()
    check.history = list(ours.state_dict()["history"])
    assert ours.epsilon() == check.get_epsilon(delta=delta)
    with pytest.raises(ValueError):  # the memoised curves are read-only
        rdp_curve(sample_rate=history[0][1], noise_multiplier=history[0][0])[0] = 0.0
