"""Issue-12 guards: add/remove-one sensitivity, secret streams, non-finite rows, empty samples, DP resume."""

from __future__ import annotations

import math
import subprocess
import sys

import torch

from securedc.condenser import Condenser
from securedc.config import AdversarialConfig, CondenseConfig, PrivacyConfig
from securedc.privacy import GaussianMechanism, SecretStreams, clipped_class_sums
from securedc.terms import build_terms, list_terms
from securedc.terms.base import _REGISTRY
from test_privacy import RecordingMechanism  # records per-sample parts before clipping and noise


def test_add_remove_one_neighbours_differ_only_in_the_victims_class_by_at_most_C(digits) -> None:
    cfg = CondenseConfig(ipc=2, iterations=1, dist_weight=1.0, grad_weight=1.0,
                         adversarial=AdversarialConfig(eps=8 / 255, steps=2),
                         privacy=PrivacyConfig(epsilon=8.0, clip=1.0, counts="public", prototype_share=0.0))
    # phase 0 (prototypes) has its own neighbour test (test_prototypes.py); S after phase 0 is a DP output
    # that a statistic release is conditioned on, so here both neighbours start from the same public S
    active = {t.name for t in build_terms(cfg)}
    assert active == {n for n in list_terms() if _REGISTRY[n].private_ok}, "every privatisable term must be active"
    assert cfg.dsa not in ("", "none"), "DSA must be on"
    x, y = digits.train_images[:300], digits.train_labels[:300]
    victim = 17
    keep = torch.arange(300) != victim
    sums = []
    for xs, ys in ((x, y), (x[keep], y[keep])):
        c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
        mech = RecordingMechanism(xs, ys, num_classes=10, sample_rate=1.0, noise_multiplier=1.0,
                                  clip_bounds=[t.clip for t in c.terms], noise_seed=7)
        c.make_mechanism(xs, ys)  # calibrates the plan (its q is replaced by q = 1 below)
        c.fit(mech)
        (parts, labels), = mech.records
        assert labels.numel() == ys.numel()  # q = 1: everyone is sampled
        s, _ = clipped_class_sums(parts, labels, clip_bounds=mech.clip_bounds, num_classes=10)
        sums.append(torch.cat(s, dim=1))
    diff = (sums[0] - sums[1]).norm(dim=1)
    total_c = math.sqrt(len(active))  # every part clipped to C_k = 1
    v = int(y[victim])
    assert float(diff[v]) <= total_c * (1 + 1e-5) and float(diff[v]) > 0.05, "the victim's class moves, by <= C"
    others = torch.cat([diff[:v], diff[v + 1:]])
    assert float(others.max()) < 1e-4, f"other classes moved by {others.tolist()}: a vector depends on another example"


def test_secret_streams_never_repeat_within_a_run() -> None:
    streams = SecretStreams()
    assert streams.key.bit_length() > 64 or streams.key < 2**64  # 128-bit key space
    draws = {}
    for release in range(200):
        for cls in range(10):
            for kind, fn in (("u", streams.uniform), ("n", streams.normal)):
                key = tuple(fn(release, cls, 4).tolist())
                assert key not in draws, f"stream ({release}, {cls}) repeats {draws.get(key)}"
                draws[key] = (release, cls, kind)
    # a fresh run draws a fresh 128-bit key: its noise differs for the same public release ids
    assert not torch.equal(SecretStreams().normal(0, 0, 8), SecretStreams().normal(0, 0, 8))


def test_nonfinite_rows_are_zeroed_and_counted(digits) -> None:
    x, y = digits.train_images[:100], digits.train_labels[:100]
    mech = GaussianMechanism(x, y, num_classes=10, sample_rate=1.0, noise_multiplier=0.0, clip_bounds=[1e9], noise_seed=1)

    def vector_fn(xb, yb):  # rows are in the mechanism's order: find examples 0 and 1 by content
        v = xb.flatten(1).clone()
        v[(v == x[0].flatten()).all(1)] = float("nan")
        v[(xb.flatten(1) == x[1].flatten()).all(1), 3] = float("inf")
        return [v]

    (out,) = mech.release(vector_fn, seed=3)
    assert torch.isfinite(out).all() and mech.nonfinite_rows == 2
    clean = x.flatten(1).clone()
    clean[:2] = 0
    counts = torch.bincount(y, minlength=10).double()
    expected = torch.zeros(10, 64).index_add(0, y, clean) / counts[:, None]
    assert torch.allclose(out.double(), expected.double(), atol=1e-5)


def test_empty_poisson_sample_runs_on_a_zero_image(digits) -> None:
    mech = GaussianMechanism(digits.train_images, digits.train_labels, num_classes=10, sample_rate=1e-9,
                             noise_multiplier=1.0, clip_bounds=[1.0], noise_seed=2)
    seen = []

    def vector_fn(xb, yb):
        seen.append(xb.clone())
        return [xb.flatten(1)]

    (out,) = mech.release(vector_fn, seed=1)
    assert mech.last_batch_size == 0 and len(seen) == 1
    assert float(seen[0].abs().max()) == 0.0, "no real image may be touched when the sample is empty"
    assert torch.isfinite(out).all()


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "securedc", "condense", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_dp_resume_that_changes_the_mechanism_exits_2(tmp_path) -> None:
    common = ["--epsilon", "8", "--ipc", "1", "--checkpoint-every", "3", "--no-audit", "--eval-models", "0", "--out", "o"]
    first = _cli(*common, "--iterations", "6", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ckpt = tmp_path / "o" / "digits-ipc1.ckpt.safetensors"
    assert ckpt.exists()
    r = _cli(*common, "--iterations", "9", "--resume", str(ckpt), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "resum" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_nonfinite_count_reaches_the_owner_record_not_the_release(digits) -> None:
    from securedc.api import build_manifest, build_owner_record

    cfg = CondenseConfig(ipc=1, iterations=2, privacy=PrivacyConfig(epsilon=8.0, counts="public"))
    c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std)
    c.make_mechanism(digits.train_images, digits.train_labels)
    x = digits.train_images.clone()
    x[0] = float("nan")  # a corrupt real image: its per-sample vector is non-finite
    mech = GaussianMechanism(x, digits.train_labels, num_classes=10, sample_rate=1.0, noise_multiplier=1.0,
                             clip_bounds=[1.0], noise_seed=3)
    res = c.fit(mech)
    assert res.nonfinite_rows >= 1 and torch.isfinite(res.images).all()
    assert build_owner_record(digits, res)["condensation"]["nonfinite_rows_zeroed"] == res.nonfinite_rows
    assert "nonfinite" not in str(build_manifest(digits, cfg, res))
