"""Likelihood-ratio attack, LiRA (Carlini, Chien, Nasr, Song, Terzis & Tramèr,
"Membership Inference Attacks From First Principles", IEEE S&P 2022).

Shadow condensations run the release's configuration on random halves of the pooled
targets; one model is trained on each shadow set. For each target the logit-scaled
confidence φ = log p_y − log(1 − p_y) is modelled as Gaussian under IN and OUT shadows.
With few shadows we use the paper's *fixed (global) variance* variant.

* ``lira-online``: log N(φ_obs; μ_in, σ_in²) − log N(φ_obs; μ_out, σ_out²);
* ``lira-offline``: one-sided test against OUT only, log Φ((φ_obs − μ_out) / σ_out).

φ_obs is averaged over the models trained on the release S.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from securedc.audits.mia.base import AttackContext, MIAttack, logit_confidence, register_attack

__all__ = ["LiRAAttack", "lira_scores"]


def _masked_mean(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    count = mask.sum(0)
    mean = (values * mask).sum(0) / count.clamp_min(1)
    return mean, count


def lira_scores(phi_obs: Tensor, phi_shadow: Tensor, in_mask: Tensor) -> dict[str, Tensor]:
    """Online and offline LiRA scores with fixed variance.

    Args:
        phi_obs: ``[n]`` observed logit confidence under the target (release) models.
        phi_shadow: ``[K, n]`` logit confidence under each shadow model.
        in_mask: ``[K, n]`` bool, target in shadow k's training set.

    Targets that have no IN (or no OUT) shadow use the global IN (OUT) mean shifted by
    nothing — i.e. the population mean — so every target gets a finite score.
    """
    phi_shadow = phi_shadow.double()
    phi_obs = phi_obs.double()
    inm, outm = in_mask.double(), (~in_mask).double()
    mu_in, n_in = _masked_mean(phi_shadow, inm)
    mu_out, n_out = _masked_mean(phi_shadow, outm)
    glob_in = phi_shadow[in_mask].mean() if in_mask.any() else phi_shadow.mean()
    glob_out = phi_shadow[~in_mask].mean() if (~in_mask).any() else phi_shadow.mean()
    mu_in = torch.where(n_in > 0, mu_in, glob_in)
    mu_out = torch.where(n_out > 0, mu_out, glob_out)
    # fixed variance: pooled residual std over all (shadow, target) pairs of each kind
    res_in = (phi_shadow - mu_in)[in_mask]
    res_out = (phi_shadow - mu_out)[~in_mask]
    floor = 1e-3
    sd_in = max(float(res_in.std()) if res_in.numel() > 1 else 1.0, floor)
    sd_out = max(float(res_out.std()) if res_out.numel() > 1 else 1.0, floor)
    if res_in.numel() > 1 and res_out.numel() > 1 and (n_in.max() <= 1 or n_out.max() <= 1):
        # with one shadow per side the per-target residual is 0; use the spread across targets instead
        sd_in = max(float(phi_shadow[in_mask].std()), floor)
        sd_out = max(float(phi_shadow[~in_mask].std()), floor)
    log_in = -0.5 * ((phi_obs - mu_in) / sd_in) ** 2 - math.log(sd_in)
    log_out = -0.5 * ((phi_obs - mu_out) / sd_out) ** 2 - math.log(sd_out)
    offline = torch.special.log_ndtr((phi_obs - mu_out) / sd_out)
    return {"lira-online": (log_in - log_out).float(), "lira-offline": offline.float()}


@register_attack("lira")
class LiRAAttack(MIAttack):
    """LiRA, online and offline, fixed variance (scores ``lira-online``, ``lira-offline``)."""

    needs_shadows = True
    reference = "Carlini et al., IEEE S&P 2022"

    def scores(self, ctx: AttackContext) -> dict[str, Tensor]:
        stats = ctx.shadow_stats()
        labels = ctx.target_labels
        phi_obs = torch.stack([logit_confidence(lg, labels) for lg in ctx.target_logits()]).mean(0)
        phi_shadow = torch.stack([logit_confidence(lg, labels) for lg in stats.target_logits])
        return lira_scores(phi_obs, phi_shadow, stats.in_mask)
