"""The registered utility audit: :func:`~securedc.audits.utility.run_utility_audit` on a release.

Fresh models trained on S and on a random real subset of the members with as many images per
class, for each architecture of :attr:`AuditConfig.architectures`; also the owner's evaluation
(the models are trained once). A private release is also compared with the DP prototype
baseline of its (ε, δ) (:mod:`securedc.privacy.baseline`).
"""

from __future__ import annotations

from securedc.audits import names as N
from securedc.audits.base import Audit, AuditResult, register_audit
from securedc.audits.context import AuditContext

__all__ = ["UtilityAudit"]


@register_audit(N.UTILITY)
class UtilityAudit(Audit):
    """Accuracy of models trained on S vs on a random real subset (the utility gate's input).

    Args:
        **options: further keyword arguments of :func:`~securedc.audits.utility.run_utility_audit`,
            passed through unchanged.

    Example:
        >>> from securedc.audits import create_audit
        >>> create_audit("utility").name
        'utility'
    """

    higher_is_better = True

    def describe(self, ctx: AuditContext) -> str:
        return (f"utility: {ctx.eval_config.models} model(s) × {len(ctx.settings.architectures)} architecture(s) "
                "on S and on a random subset")

    def measure(self, ctx: AuditContext) -> AuditResult:
        from securedc.audits.utility import run_utility_audit

        draws = ctx.dp_baselines()  # made first: it decides the baseline's kind
        budget = {"epsilon": ctx.config.privacy.epsilon, "delta": ctx.config.privacy.delta,  # DP baseline
                  "dp_baseline": draws, "dp_baseline_kind": ctx.dp_baseline_kind or "independent",
                  "models_out": ctx.trained_models()}
        return run_utility_audit(
            images=ctx.images, labels=ctx.labels, train_images=ctx.members[0], train_labels=ctx.members[1],
            test_images=ctx.test[0], test_labels=ctx.test[1], eval_config=ctx.eval_config, seed=ctx.config.seed,
            architectures=ctx.settings.architectures, device=ctx.config.device, soft_labels=ctx.soft_labels, **ctx.meta,
            **{**budget, **self.options},
        )
