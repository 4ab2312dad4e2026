"""LOSS attack (Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting", IEEE CSF 2018).

Train models on the released set S; a target's score is minus its cross-entropy loss,
averaged over the models (members of the data behind S tend to have lower loss).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from securedc.audits.mia.base import AttackContext, MIAttack, register_attack

__all__ = ["LossAttack"]


@register_attack("loss")
class LossAttack(MIAttack):
    """Score = −mean cross-entropy of the target under models trained on S."""

    reference = "Yeom et al., CSF 2018"

    def scores(self, ctx: AttackContext) -> dict[str, Tensor]:
        logits = ctx.target_logits()  # [M, n, C]
        labels = ctx.target_labels
        losses = [F.cross_entropy(lg.double(), labels, reduction="none") for lg in logits]
        return {"loss": -sum(losses).float() / len(losses)}
