"""Nearest-synthetic-neighbour attack: is a real target (almost) copied into S?

Condensed sets initialised from real images, or over-fitted to few examples, can keep
near-copies of training images; Carlini et al. ("No Free Lunch in 'Privacy for Free:
How does Dataset Condensation Help Privacy'", arXiv:2209.14987, 2022) show such sets
leak membership. The score is minus the distance from a target to its nearest
synthetic image, in two spaces (reported as two attacks):

* ``neighbour-pixel``: Euclidean distance between images in [0, 1];
* ``neighbour-feature``: Euclidean distance between L2-normalised penultimate
  features of a model trained on S (robust to small pixel changes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from securedc.audits.mia.base import AttackContext, MIAttack, register_attack

__all__ = ["NeighbourAttack", "nearest_distance"]


def nearest_distance(queries: Tensor, references: Tensor, *, chunk: int = 1024) -> Tensor:
    """Euclidean distance from each query row to its nearest reference row.

    Example:
        >>> nearest_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])).tolist()
        [0.0, 5.0]
    """
    q = queries.reshape(queries.shape[0], -1).double()
    r = references.reshape(references.shape[0], -1).double()
    return torch.cat([torch.cdist(q[i : i + chunk], r).min(dim=1).values for i in range(0, q.shape[0], chunk)]).float()


@register_attack("neighbour")
class NeighbourAttack(MIAttack):
    """Scores ``neighbour-pixel`` and ``neighbour-feature`` (−distance to the nearest synthetic image)."""

    reference = "Carlini et al., No Free Lunch in 'Privacy for Free', 2022"

    def scores(self, ctx: AttackContext) -> dict[str, Tensor]:
        out = {"neighbour-pixel": -nearest_distance(ctx.target_images, ctx.release_images)}
        model = ctx.target_models()[0]
        device = next(model.parameters()).device

        @torch.no_grad()
        def feats(x: Tensor) -> Tensor:
            return torch.cat(
                [F.normalize(model.embed(x[i : i + 1000].to(device)).cpu().double(), dim=1) for i in range(0, x.shape[0], 1000)]
            )
        out["neighbour-feature"] = -nearest_distance(feats(ctx.target_images), feats(ctx.release_images))
        return out
