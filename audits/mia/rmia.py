"""Robust membership inference attack, RMIA (Zarifzadeh, Liu, Mittal & Shokri,
"Low-Cost High-Power Membership Inference Attacks", ICML 2024), offline variant.

For a target x and population samples z (real non-members that are never in any
shadow training set):

    Pr(x) ≈ ½ ((1 + a) · mean_OUT Pr(x | θ') + (1 − a))        (offline, a ≈ 0.3)
    LR(x, z) = [Pr(x | θ) / Pr(x)] / [Pr(z | θ) / Pr(z)]
    score(x) = fraction of z with LR(x, z) ≥ γ                   (γ = 2)

Pr(· | θ) is the softmax probability of the true label averaged over the models
trained on the release; θ' are the shadow models. Targets with no OUT shadow use all
shadows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from securedc.audits.mia.base import AttackContext, MIAttack, register_attack, true_class_probability

__all__ = ["RMIAAttack", "rmia_scores"]


def rmia_scores(
    p_target: Tensor,
    p_target_ref: Tensor,
    out_mask: Tensor,
    p_pop: Tensor,
    p_pop_ref: Tensor,
    *,
    a: float = 0.3,
    gamma: float = 2.0,
    pop_out_mask: Tensor | None = None,
) -> Tensor:
    """Offline RMIA score.

    Args:
        p_target: ``[n]`` Pr(x|θ) of the targets under the release models.
        p_target_ref: ``[K, n]`` Pr(x|θ') under the shadow (reference) models.
        out_mask: ``[K, n]`` target x was *not* in shadow k's training set.
        p_pop: ``[m]`` Pr(z|θ) of the population under the release models.
        p_pop_ref: ``[K, m]`` Pr(z|θ') (population is OUT for every shadow).
        a: offline interpolation coefficient.
        gamma: likelihood-ratio threshold.
        pop_out_mask: ``[K, m]`` z was not in shadow k's training set, when the population is drawn
            from the shadows' data (``None``: a population no shadow trained on).
    """

    def out_mean(ref: Tensor, mask: Tensor) -> Tensor:
        outm = mask.double()
        mean = (ref * outm).sum(0) / outm.sum(0).clamp_min(1)
        return torch.where(outm.sum(0) > 0, mean, ref.mean(0))

    pr_x = 0.5 * ((1 + a) * out_mean(p_target_ref.double(), out_mask) + (1 - a))
    pop_ref = p_pop_ref.double()
    pr_z = 0.5 * ((1 + a) * (pop_ref.mean(0) if pop_out_mask is None else out_mean(pop_ref, pop_out_mask)) + (1 - a))
    ratio_x = p_target.double() / pr_x  # [n]
    ratio_z = p_pop.double() / pr_z  # [m]
    lr = ratio_x[:, None] / ratio_z[None, :].clamp_min(1e-300)
    frac = (lr >= gamma).double().mean(1)
    # Tie-break (not in the paper): targets with the same fraction are ordered by their mean
    # log-ratio, scaled below one population step so the fraction's order is never changed.
    tie = torch.sigmoid(torch.log(lr.clamp_min(1e-300)).mean(1)) / (ratio_z.numel() + 1)
    return (frac + tie).float()


@register_attack("rmia")
class RMIAAttack(MIAttack):
    """RMIA offline (a = 0.3, γ = 2) with shadow condensations as reference models."""

    needs_shadows = True
    reference = "Zarifzadeh et al., ICML 2024"
    a: float = 0.3
    gamma: float = 2.0

    def scores(self, ctx: AttackContext) -> dict[str, Tensor]:
        stats = ctx.shadow_stats()
        y = ctx.target_labels
        p_t = torch.stack([true_class_probability(lg, y) for lg in ctx.target_logits()]).mean(0)
        p_t_ref = torch.stack([true_class_probability(lg, y) for lg in stats.target_logits])
        pop_out = None
        if ctx.population_images.shape[0] > 0:
            yz = ctx.population_labels
            p_z = torch.stack([true_class_probability(lg, yz) for lg in ctx.population_logits_on_release()]).mean(0)
            p_z_ref = torch.stack([true_class_probability(lg, yz) for lg in stats.population_logits])
        else:  # fall back to the pooled targets, each with its OUT shadows
            p_z, p_z_ref, pop_out = p_t, p_t_ref, ~stats.in_mask
        score = rmia_scores(p_t, p_t_ref, ~stats.in_mask, p_z, p_z_ref, a=self.a, gamma=self.gamma,
                            pop_out_mask=pop_out)
        return {"rmia": score}
