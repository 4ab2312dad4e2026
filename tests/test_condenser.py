"""The condensation loop: determinism, resume, interrupt, batching, class subsets."""

from __future__ import annotations

import pytest
import torch

from securedc.condenser import Condenser, ProgressEvent
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.errors import ConfigError, DataError, PrivacyError


def _condenser(bundle, **kw) -> Condenser:
    cfg = CondenseConfig(**{"ipc": 2, "iterations": 6, "batch_real": 16, **kw})
    return Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)


def _run(bundle, **kw):
    c = _condenser(bundle, **kw)
    return c.fit(c.make_mechanism(bundle.train_images, bundle.train_labels, noise_seed=7))


@pytest.mark.parametrize("discrepancy", ["mean-embedding", "mmd", "characteristic", "sliced-wasserstein"])
def test_same_seed_identical_and_images_move(digits, discrepancy) -> None:
    a = _run(digits, discrepancy=discrepancy)
    b = _run(digits, discrepancy=discrepancy)
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (20, 1, 8, 8) and a.labels.tolist() == sorted(list(range(10)) * 2)
    assert 0 <= float(a.images.min()) and float(a.images.max()) <= 1
    c = _run(digits, discrepancy=discrepancy, seed=1)
    assert not torch.equal(a.images, c.images)
    init = _run(digits, discrepancy=discrepancy, iterations=0)
    assert not torch.equal(a.images, init.images), "the optimiser must change the images"


@pytest.mark.parametrize("model", ["convnet", "mlp", "resnet"])
def test_every_model_can_drive_condensation(digits, model) -> None:
    r = _run(digits, model=model, iterations=2)
    assert torch.isfinite(torch.tensor(r.losses)).all()


@pytest.mark.parametrize("optimizer,learn_lr", [("sgd", True), ("adam", False)])
def test_resume_equals_uninterrupted(digits, tmp_path, optimizer, learn_lr) -> None:
    full = _run(digits, optimizer=optimizer, learn_lr=learn_lr, lr_img=0.1 if optimizer == "adam" else 1.0)
    ckpt = tmp_path / "run.ckpt.safetensors"
    c = _condenser(digits, optimizer=optimizer, learn_lr=learn_lr, lr_img=0.1 if optimizer == "adam" else 1.0,
                   checkpoint_every=3)

    def stop_at_4(ev: ProgressEvent) -> None:
        if ev.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        c.fit(c.make_mechanism(digits.train_images, digits.train_labels), checkpoint_path=ckpt, callback=stop_at_4)
    assert ckpt.exists(), "Ctrl-C must leave a checkpoint"
    c2 = _condenser(digits, optimizer=optimizer, learn_lr=learn_lr, lr_img=0.1 if optimizer == "adam" else 1.0,
                    checkpoint_every=3)
    resumed = c2.fit(c2.make_mechanism(digits.train_images, digits.train_labels), resume_from=ckpt)
    assert torch.equal(resumed.images, full.images)
    assert resumed.losses == full.losses


def test_resume_refuses_other_config(digits, tmp_path) -> None:
    ckpt = tmp_path / "c.safetensors"
    c = _condenser(digits, checkpoint_every=2)
    c.fit(c.make_mechanism(digits.train_images, digits.train_labels), checkpoint_path=ckpt)
    other = _condenser(digits, checkpoint_every=2, lr_img=0.5)
    with pytest.raises(ConfigError, match="different configuration"):
        other.fit(other.make_mechanism(digits.train_images, digits.train_labels), resume_from=ckpt)
    assert ckpt.stat().st_mode & 0o077 == 0, "checkpoints (DP ones hold the secret key) are owner-only"
    same = _condenser(digits, checkpoint_every=2)
    with pytest.raises(DataError, match="other training data"):  # same streams on other data would cancel noise
        same.fit(same.make_mechanism(digits.train_images[1:], digits.train_labels[1:]), resume_from=ckpt)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError):
        other.fit(other.make_mechanism(digits.train_images, digits.train_labels), resume_from=tmp_path / "bad.safetensors")


def test_step_batches_classes_and_keeps_real_side_out_of_autograd(digits) -> None:
    """One embedding forward pass for all real classes, no graph on the real side."""
    c = _condenser(digits, iterations=1)
    mech = c.make_mechanism(digits.train_images, digits.train_labels)
    calls = []
    orig_release = mech.release

    def spy_release(vector_fn, **kw):
        def wrapped(x, y):
            parts = vector_fn(x, y)
            calls.append((x.shape[0], torch.is_grad_enabled(), [p.requires_grad for p in parts], y.unique().numel()))
            return parts

        return orig_release(wrapped, **kw)

    mech.release = spy_release  # type: ignore[method-assign]
    c.fit(mech)
    assert len(calls) == 1
    n, grad_enabled, needs_grad, classes = calls[0]
    assert n == 16 * 10 and classes == 10 and not grad_enabled and not any(needs_grad)


def test_class_subsets_reassemble_to_the_full_run(digits) -> None:
    for eps in (float("inf"), 8.0):
        full = _run(digits, privacy=PrivacyConfig(epsilon=eps))
        parts = []
        for cls in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]):
            cfg = CondenseConfig(ipc=2, iterations=6, batch_real=16, privacy=PrivacyConfig(epsilon=eps))
            c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=digits.mean, std=digits.std, classes=cls)
            parts.append(c.fit(c.make_mechanism(digits.train_images, digits.train_labels, noise_seed=7)).images)
        assert torch.equal(torch.cat(parts), full.images)


def test_noise_init_and_dp_refusals(digits) -> None:
    r = _run(digits, init="noise", iterations=0)
    assert r.images.std() > 0.05  # not a copy of data: seeded noise
    with pytest.raises(PrivacyError, match="--init real"):
        _run(digits, init="real", privacy=PrivacyConfig(epsilon=8.0))
    with pytest.raises(DataError, match="ipc"):
        _run(digits, ipc=500)


def test_progress_callback_reports_every_step(digits) -> None:
    events: list[ProgressEvent] = []
    c = _condenser(digits, privacy=PrivacyConfig(epsilon=4.0))
    c.fit(c.make_mechanism(digits.train_images, digits.train_labels), callback=events.append)
    assert [e.step for e in events] == list(range(1, 7))
    assert events[-1].epsilon_spent is not None and 0 < events[-1].epsilon_spent <= 4.0 * 1.01
