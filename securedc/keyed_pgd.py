"""Keyed L∞ PGD: torchattacks' PGD with a per-example random start and a per-example loss.

Every output row is a function of that row's input, its label, the model and a public seed
only, which the Gaussian mechanism's sensitivity bound needs when real examples are perturbed
(:mod:`securedc.terms.adversarial`), and which makes the robustness audit's attacks reproducible
whatever the batch. Importing this module imports torchattacks (whose package import pulls in
``scipy.stats``, ~1.6 s on a 2-core CPU); the rest of securedc imports it only when it attacks.

References:
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Kim, "Torchattacks: A PyTorch Repository for Adversarial Attacks", arXiv:2010.01950.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from securedc.terms.adversarial import keyed_uniform_start

__all__ = ["KeyedPGD"]


class KeyedPGD(torchattacks.PGD):
    """torchattacks' L∞ PGD whose every example is attacked independently of the batch.

    Two changes to :class:`torchattacks.PGD` (same step rule, projection and clamping):

    * the random start of example i is :func:`keyed_uniform_start` — a function of that
      example and the public ``seed`` only (torchattacks draws one uniform tensor for
      the whole batch from the global RNG, so an example's start depends on its position
      among the others);
    * the ascent loss is the *sum* of per-example cross-entropies, so the gradient with
      respect to ``x_i`` is exactly ``∇ CE(f(x_i), y_i)``. (torchattacks uses the mean, whose
      gradient is that times ``1/n`` — the batch size; ``sign()`` removes a positive scale,
      so the steps agree up to float underflow, but the sum has no ``n`` at all.)

    The model must treat examples independently (eval mode, no BatchNorm in train mode):
    securedc's networks use instance/group normalisation. Untargeted mode only.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        eps, alpha, steps: radius, step size, steps (torchattacks' meaning).
        seed: public key of the random starts.
        random_start: start from the keyed uniform point (``False``: from ``x``).
    """

    def __init__(self, model: nn.Module, *, eps: float, alpha: float, steps: int, seed: int,
                 random_start: bool = True) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.seed = int(seed)
        self.supported_mode = ["default"]

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:  # noqa: D102 (torchattacks template method)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images.clone()
        if self.random_start:
            adv = (adv + keyed_uniform_start(images, eps=self.eps, seed=self.seed)).clamp(0, 1).detach()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            cost = F.cross_entropy(self.get_logits(adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(cost, adv)
            adv = adv.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
            adv = torch.clamp(images + delta, min=0, max=1).detach()
        return adv
