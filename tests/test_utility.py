"""Utility audit on real digits data: S vs random real subset, cross-architecture."""

from __future__ import annotations

import pytest
import torch

from securedc.audits.utility import evaluation_section, run_utility_audit
from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError
from securedc.evaluate import random_subset

FAST = EvalConfig(models=2, epochs=60, dsa="none")


def test_utility_audit_metrics_and_cross_architecture(digits) -> None:
    b = digits
    # a "condensed" set: 3 real images per class from the training data (a seed other than the baseline's)
    x, y = random_subset(b.train_images, b.train_labels, 3, seed=123)
    r = run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images[:200], b.test_labels[:200],
                          num_classes=10, mean=b.mean, std=b.std, eval_config=FAST, seed=0,
                          architectures=("mlp", "convnet"))
    assert r.name == "utility" and r.passed is None
    for arch in ("mlp", "convnet"):
        for key in ("condensed_acc", "random_acc", "condensed_std", "random_std"):
            assert 0.0 <= r.metrics[f"{key}_{arch}"] <= 1.0
        assert len(r.details["per_architecture"][arch]["condensed"]["accuracies"]) == 2
    assert r.metrics["condensed_acc"] == r.metrics["condensed_acc_mlp"]  # first architecture is the main one
    assert r.metrics["condensed_acc"] > 0.3 and r.metrics["random_acc"] > 0.3  # far above chance (0.1)
    ev = evaluation_section(r)
    assert ev["condensed"]["mean"] == r.metrics["condensed_acc"] and ev["protocol"]["model"] == "mlp"
    assert set(ev["cross_architecture"]) == {"mlp", "convnet"}
    # deterministic
    r2 = run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images[:200], b.test_labels[:200],
                           num_classes=10, mean=b.mean, std=b.std, eval_config=FAST, seed=0, architectures=("mlp",))
    assert r2.metrics["condensed_acc_mlp"] == r.metrics["condensed_acc_mlp"]


def test_garbage_set_loses_to_random_subset(digits) -> None:
    b = digits
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 8, 8, generator=gen)
    y = torch.arange(10).repeat_interleave(3)
    r = run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images[:200], b.test_labels[:200],
                          num_classes=10, mean=b.mean, std=b.std, eval_config=EvalConfig(models=1, epochs=15, dsa="none"),
                          architectures=("mlp",))
    assert r.metrics["condensed_acc"] < r.metrics["random_acc"] - 0.2


def test_utility_audit_errors(digits) -> None:
    b = digits
    x, y = random_subset(b.train_images, b.train_labels, 1, seed=0)
    kw = dict(num_classes=10, mean=b.mean, std=b.std, eval_config=FAST)
    with pytest.raises(ConfigError, match="architecture"):
        run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images, b.test_labels, architectures=(), **kw)
    with pytest.raises(DataError, match="same number of images per class"):
        run_utility_audit(x[:-1], y[:-1], b.train_images, b.train_labels, b.test_images, b.test_labels, **kw)


def test_models_on_s_train_on_its_soft_labels(digits) -> None:
    """A release's soft labels are what a user trains on: the audit's models on S use them (KD loss), the
    baselines keep hard labels. Soft labels naming the next class collapse S's accuracy, not the subset's."""
    import torch.nn.functional as F

    b = digits
    x, y = random_subset(b.train_images, b.train_labels, 5, seed=123)
    wrong = F.one_hot((y + 1) % 10, 10).float()
    kw = dict(num_classes=10, mean=b.mean, std=b.std, eval_config=FAST, seed=0, architectures=("convnet",))
    hard = run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images, b.test_labels, **kw)
    soft = run_utility_audit(x, y, b.train_images, b.train_labels, b.test_images, b.test_labels, soft_labels=wrong, **kw)
    assert hard.metrics["condensed_acc"] > 0.5 and soft.metrics["condensed_acc"] < 0.2
    assert soft.metrics["random_acc"] == hard.metrics["random_acc"]  # the baseline is untouched
    assert soft.details["protocol"]["soft_labels"] is True and hard.details["protocol"]["soft_labels"] is False
    assert any("soft labels" in n for n in soft.notes)
