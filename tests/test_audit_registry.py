"""Every registered audit: the contract the pipeline loops over (a new audit = one file + one registry line)."""

from __future__ import annotations

import pytest
import torch

from securedc.audits import Audit, AuditConfig, AuditContext, AuditResult, create_audit, registered_audits
from securedc.config import AdversarialConfig, CondenseConfig, EvalConfig


def test_registry_names_in_pipeline_order() -> None:
    assert registered_audits() == ["utility", "mia", "canary", "robustness"]


@pytest.fixture(scope="module")
def context(digits) -> AuditContext:
    """A tiny adversarial release of digits (one real image per class) so every audit applies."""
    gen = torch.Generator().manual_seed(0)
    idx = torch.cat([(digits.train_labels == c).nonzero().flatten()[:1] for c in range(10)])
    n = digits.train_labels.shape[0]
    perm = torch.randperm(n, generator=gen)
    mem, non = perm[: n // 2], perm[n // 2:]
    config = CondenseConfig(ipc=1, iterations=1, batch_real=8, device="cpu",
                            adversarial=AdversarialConfig(eps=0.1, steps=1))
    return AuditContext(
        images=digits.train_images[idx], labels=digits.train_labels[idx],
        members=(digits.train_images[mem], digits.train_labels[mem]),
        nonmembers=(digits.train_images[non], digits.train_labels[non]),
        test=(digits.test_images[:100], digits.test_labels[:100]), num_classes=10, mean=digits.mean, std=digits.std,
        config=config, eval_config=EvalConfig(models=1, epochs=1, dsa="none"),
        settings=AuditConfig(shadows=0, canaries=4, audit_iterations=1, architectures=("mlp",), max_targets=20),
    )


@pytest.mark.parametrize("name", registered_audits())
def test_every_audit_measures_a_release(name, context) -> None:
    audit = create_audit(name)
    assert isinstance(audit, Audit) and audit.name == name and isinstance(audit.higher_is_better, bool)
    assert audit.applies(context)
    assert isinstance(audit.describe(context), str) and audit.describe(context)
    result = audit.measure(context)
    assert isinstance(result, AuditResult) and result.name == name
    assert result.metrics and all(isinstance(v, float) for v in result.metrics.values())
    result.to_dict()  # JSON-ready
