"""Robustness audit: real torchattacks on real digits; a gradient-masking model must be caught."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from securedc.audits import create_audit, list_audits
from securedc.audits.robustness import AttackSettings, audit_model, autoattack_accuracy, run_robustness_audit
from securedc.config import EvalConfig
from securedc.evaluate import random_subset, train_model

TINY = AttackSettings(pgd_restarts=1, apgd_steps=10, target_classes=1, fab_steps=10, square_queries=200)
EVAL = EvalConfig(models=1, epochs=40, dsa="none", model="mlp")


class HardThreshold(nn.Module):
    """Gradient masking: a quantising input layer ``(x > 0.5).float()`` before a trained model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x > 0.5).float())


@pytest.fixture(scope="module")
def trained(digits):
    x, y = random_subset(digits.train_images, digits.train_labels, 30, seed=0)
    return train_model(x, y, num_classes=10, mean=digits.mean, std=digits.std, config=EVAL, seed=0)


def _checks(result) -> dict[str, bool]:
    return {c["name"]: c["passed"] for c in result.details["sanity_checks"]}


def test_registered():
    assert "robustness" in list_audits()
    assert create_audit("robustness", eps=0.1).eps == 0.1


def test_normal_model_passes_all_checks(digits, trained):
    state = torch.get_rng_state()
    r = audit_model(trained, digits.test_images[:150], digits.test_labels[:150], eps=0.1, num_classes=10,
                    settings=TINY, seed=0)
    assert torch.equal(state, torch.get_rng_state()), "global RNG must be untouched"
    assert r.passed, r.details["sanity_checks"]
    m = r.metrics
    assert m["clean_acc"] > 0.8
    assert m["pgd20_acc"] < m["clean_acc"] and m["autoattack_acc"] <= m["pgd20_acc"] + 0.02
    assert m["fgsm_acc"] >= m["pgd20_acc"] - 0.02
    assert r.details["acc_vs_eps"]["accuracy"][-1] <= 0.05
    json.dumps(r.to_dict())
    again = audit_model(trained, digits.test_images[:150], digits.test_labels[:150], eps=0.1, num_classes=10,
                        settings=TINY, seed=0)
    assert again.metrics == r.metrics, "same seed -> same numbers"
    # AutoAttack alone (no sanity suite) gives the suite's number, and leaves the global RNG alone
    acc, broken = autoattack_accuracy(trained, digits.test_images[:150], digits.test_labels[:150], eps=0.1,
                                      num_classes=10, settings=TINY, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert acc == m["autoattack_acc"] and broken == r.details["autoattack_broken"] and sum(broken.values()) > 0


def test_gradient_masking_model_fails(digits, trained):
    masked = HardThreshold(trained).eval()
    r = audit_model(masked, digits.test_images[:150], digits.test_labels[:150], eps=0.1, num_classes=10,
                    settings=TINY, seed=0)
    checks = _checks(r)
    assert r.passed is False
    assert checks["nonzero_input_gradients"] is False
    assert not all(checks.values())


def test_bad_eps(digits, trained):
    from securedc.errors import ConfigError

    with pytest.raises(ConfigError, match="eps"):
        audit_model(trained, digits.test_images[:10], digits.test_labels[:10], eps=0.0, num_classes=10)


@pytest.mark.slow
def test_run_robustness_audit_condensed_vs_baseline(digits):
    x, y = random_subset(digits.train_images, digits.train_labels, 10, seed=3)
    base = random_subset(digits.train_images, digits.train_labels, 10, seed=4)
    r = run_robustness_audit(x, y, digits.test_images, digits.test_labels, num_classes=10, mean=digits.mean,
                             std=digits.std, eps=0.1, eval_config=EvalConfig(models=2, epochs=40, dsa="none", model="mlp"),
                             baseline=base, max_test=200, quick=True)
    d = r.to_dict()
    json.dumps(d)
    # quick mode: headline attacks on every model, the full suite on the first model trained on S
    for key in ("clean_acc", "fgsm_acc", "pgd20_acc", "pgd100_acc"):
        assert key in r.metrics and "at_" + key in r.metrics
    for key in ("clean_acc", "fgsm_acc", "pgd20_acc"):
        assert "baseline_" + key in r.metrics and "baseline_at_" + key in r.metrics
    assert "baseline_pgd100_acc" not in r.metrics
    assert set(r.details["acc_vs_eps"]) == {"eps", "condensed", "condensed_at"}
    assert r.details["sanity_checks"] and not any(c["name"].startswith("baseline") for c in r.details["sanity_checks"])
    assert r.passed == all(c["passed"] for c in r.details["sanity_checks"])
    assert any("quick" in n for n in r.notes)
    assert len(r.details["per_model"]["condensed"]) == 2 and len(r.details["per_model"]["condensed_at"]) == 1
    # the quick audit's adversarial training is fast AT (FGSM-RS), stated in the details and notes
    assert r.details["protocols"]["adversarial"]["name"] == "fgsm-rs"
    assert any("fast AT" in n for n in r.notes)


def test_standard_protocol_attacks_given_models_and_the_dp_baseline(digits, trained):
    """Models trained by the utility audit are attacked, not retrained; a DP baseline gets its own metrics."""
    from securedc.evaluate import accuracy

    x, y = random_subset(digits.train_images, digits.train_labels, 5, seed=3)
    dpb = random_subset(digits.train_images, digits.train_labels, 5, seed=5)
    tx, ty = digits.test_images[:60], digits.test_labels[:60]
    r = run_robustness_audit(x, y, tx, ty, num_classes=10, mean=digits.mean, std=digits.std, eps=0.1,
                             eval_config=EvalConfig(models=1, epochs=5, dsa="none", model="mlp"), dp_baseline=[dpb],
                             protocols=("standard",), quick=True, trained={"condensed": [trained]})
    assert r.metrics["clean_acc"] == pytest.approx(accuracy(trained, tx, ty))  # the given model, not a new one
    assert any("not trained again" in n and "condensed" in n for n in r.notes)
    for key in ("clean_acc", "fgsm_acc", "pgd20_acc"):
        assert "dp_baseline_" + key in r.metrics and "dp_baseline_" + key.removesuffix("_acc") + "_ci95" in r.metrics
    assert r.details["baselines"] == ["dp_baseline"]
