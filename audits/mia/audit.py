"""The registered membership-inference audit: :func:`~securedc.audits.mia.runner.run_mia` on a release.

LOSS, neighbour, LiRA and RMIA attacks on the members vs the reserved non-members; LiRA/RMIA
shadows re-run the release's configuration on random halves of the audit pool
(:attr:`AuditConfig.shadows`; 0 skips them).
"""

from __future__ import annotations

import dataclasses

from securedc.audits import names as N
from securedc.audits.base import Audit, AuditResult, register_audit
from securedc.audits.context import AuditContext

__all__ = ["MembershipAudit"]


@register_audit(N.MIA)
class MembershipAudit(Audit):
    """How well an attacker tells members from non-members given the release (lower is safer).

    Args:
        **options: further keyword arguments of :func:`~securedc.audits.mia.runner.run_mia`.

    Example:
        >>> from securedc.audits import create_audit
        >>> create_audit("mia").higher_is_better
        False
    """

    higher_is_better = False

    def describe(self, ctx: AuditContext) -> str:
        return f"membership inference: {ctx.settings.shadows} shadow condensation(s) of {ctx.steps} steps"

    def measure(self, ctx: AuditContext) -> AuditResult:
        from securedc.audits.mia.runner import DEFAULT_MIA_EVAL, run_mia

        settings = ctx.settings
        # at most half of the non-members are targets: the rest is the population LiRA/RMIA compare against
        targets = max(2, min(settings.max_targets, int(ctx.nonmembers[1].numel()) // 2))
        mia_eval = settings.mia_eval
        if mia_eval is None:  # DEFAULT_MIA_EVAL (2 models, 100 epochs, no DSA), never more than the evaluation protocol
            mia_eval = dataclasses.replace(DEFAULT_MIA_EVAL, models=min(DEFAULT_MIA_EVAL.models, ctx.eval_config.models),
                                           epochs=min(DEFAULT_MIA_EVAL.epochs, ctx.eval_config.epochs))
        result = run_mia(
            ctx.images, ctx.labels, members=ctx.members, nonmembers=ctx.nonmembers,
            shadow_fn=ctx.condense_fn() if settings.shadows else None, shadows=settings.shadows, eval_config=mia_eval,
            seed=ctx.config.seed, max_targets=targets, **ctx.meta, **self.options,
        )
        if ctx.soft_labels is not None:
            result.notes.append(
                "not attacked: the release's soft labels. Target and shadow models train on hard labels (shadow "
                "condensations make no teacher); a non-private run's teacher saw the members, so its soft labels "
                "may reveal more than these attacks measure")
        return result
